"""Core figures: ingest (SDK, HTTP), processing, online lookups, and a point-in-time training set.

    python benchmarks/core.py                       # the sizes of the closing notes
    python benchmarks/core.py --events 20000 ...    # a quick run

The training-set data is ingested and archived once (set-up, its times printed); every figure
is then measured ``--runs`` times (a fresh project for ingest and processing in each run) and
printed as min / median / max. Nothing is asserted on time.
"""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pyarrow as pa

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (  # noqa: E402
    END_US,
    Figures,
    add_runs_argument,
    archive_and_sort,
    events_table,
    fresh_dir,
    load,
    peak_rss_mb,
    percentiles,
    repeat,
    spine_table,
    write_project,
)

from headwater import Project  # noqa: E402
from headwater.definitions.types import from_micros  # noqa: E402
from headwater.security.audit import AuditLog  # noqa: E402
from headwater.training.sets import TrainingSets  # noqa: E402

DEFINITIONS = """
from headwater import Entity, Feature, Stream, agg, col

user = Entity("user", keys="user_id", owner="bench", description="A user")
purchases = Stream(
    "purchases",
    fields={"user_id": "string", "amount": "float", "status": "string", "ts": "timestamp"},
    key="user_id", time="ts", owner="bench", description="Purchases",
)
W = ["1h", "1d", "7d", "30d"]
paid = col("status") == "paid"
features = [
    Feature("orders", entity=user, stream=purchases, aggregation=agg.count(), windows=W,
            where=paid, owner="bench", description="Paid orders"),
    Feature("spend", entity=user, stream=purchases, aggregation=agg.sum("amount"), windows=W,
            where=paid, owner="bench", description="Spend"),
    Feature("order_value", entity=user, stream=purchases, aggregation=agg.mean("amount"),
            windows=W, where=paid, owner="bench", description="Mean order value"),
]
"""
# The same stream with an email field, stored as sent or pseudonymized at ingest.
WITH_EMAIL = DEFINITIONS.replace(
    '"status": "string", "ts": "timestamp"},',
    '"status": "string", "email": "string", "ts": "timestamp"},',
)
PSEUDONYMIZED = WITH_EMAIL.replace(
    'description="Purchases",', 'description="Purchases", pii=["email"],'
)
# The same project with data tests: two on the stream, two on features (all passing, as in a
# healthy project: the cost measured is the checking, not the alerting).
CHECKED = (
    DEFINITIONS.replace(
        'key="user_id", time="ts", owner="bench", description="Purchases",',
        'key="user_id", time="ts", owner="bench", description="Purchases", expectations=['
        'Expectation("amount", min_value=0), Expectation("status", one_of=["paid", "failed"])],',
    )
    .replace(
        'where=paid, owner="bench", description="Spend"),',
        'where=paid, owner="bench", description="Spend", expectations=['
        'Expectation("spend_30d", min_value=0), Expectation("spend_7d", max_null_rate=0.0)]),',
    )
    .replace("from headwater import Entity,", "from headwater import Expectation, Entity,")
)
FEATURES = [
    f"{n}_{w}" for n in ("orders", "spend", "order_value") for w in ("1h", "1d", "7d", "30d")
]


def _clock() -> int:
    return END_US


def sdk_ingest(project: Project, rows: list[dict], chunk: int) -> float:
    start = time.perf_counter()
    for i in range(0, len(rows), chunk):
        project.ingest("purchases", rows[i : i + chunk])
    return len(rows) / (time.perf_counter() - start)


def http_ingest(folder: Path, rows: list[dict], batch: int, clients: int) -> float:
    port = 8911
    server = subprocess.Popen(
        [sys.executable, "-m", "headwater", "serve", "-p", str(folder), "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        for _ in range(300):
            try:
                httpx.get(url + "/healthz", timeout=1)
                break
            except httpx.HTTPError:
                time.sleep(0.1)
        payloads = [rows[i : i + batch] for i in range(0, len(rows), batch)]
        result = load(url + "/v1/events/purchases", payloads, clients)
        if result["errors"]:
            raise RuntimeError(f"{result['errors']:.0f} ingest requests failed")
        return result["rps"] * len(rows) / len(payloads)
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=30)


def rows_of(table: pa.Table, prefix: str) -> list[dict]:
    ts = (table["ts"].cast(pa.int64()).to_numpy() / 1e6).tolist()
    return [
        {"event_id": f"{prefix}{i}", "user_id": u, "amount": a, "status": s, "ts": t}
        for i, (u, a, s, t) in enumerate(
            zip(
                table["user_id"].to_pylist(),
                table["amount"].to_pylist(),
                table["status"].to_pylist(),
                ts,
                strict=True,
            )
        )
    ]


def prepare_training_set(args: argparse.Namespace) -> tuple[Path, pa.Table, list[str]]:
    """Set-up, once: the training-set events ingested through the log and archived."""
    print(
        f"training set: {args.ts_spine:,} spine rows over {args.ts_events:,} events, "
        f"{args.ts_users:,} users",
        flush=True,
    )
    folder = write_project(fresh_dir("core-ts"), DEFINITIONS)
    with Project(folder, clock=_clock) as p:
        table = events_table(args.ts_events, args.ts_users, 90, seed=7)
        start = time.perf_counter()
        for i in range(0, table.num_rows, 500_000):
            p.ingest("purchases", rows_of(table.slice(i, 500_000), f"t{i}-"))
        ingest_s = time.perf_counter() - start
        archive_s, sort_s = archive_and_sort(p, "purchases")
    notes = [
        f"training-set data (set-up, once): ingest through the log {ingest_s:.1f}s, "
        f"archive log to Parquet {archive_s:.1f}s, sort into the sorted copy {sort_s:.1f}s"
    ]
    return folder, spine_table(args.ts_spine, args.ts_users, 90), notes


def measure_local(args: argparse.Namespace, rows: list[dict], figures: Figures) -> None:
    """SDK ingest and processing into a fresh project, then online lookups from it."""
    folder = write_project(fresh_dir("core"), DEFINITIONS)
    with Project(folder, clock=_clock) as p:
        figures.add("SDK ingest, batches of 10,000", sdk_ingest(p, rows, 10_000), "events/s")
        start = time.perf_counter()
        stats = p.process()
        rate = stats.events / (time.perf_counter() - start)
        figures.add("processing (12 windowed features)", rate, "events/s")
        users = [f"{i}" for i in range(args.users)]
        rng = np.random.default_rng(3)
        at = from_micros(END_US)
        one = repeat(
            lambda: p.online_features(
                {"user_id": users[rng.integers(len(users))]}, FEATURES, at=at
            ),
            args.lookups,
        )
        hundred = repeat(
            lambda: p.online_features(
                [{"user_id": u} for u in rng.choice(users, 100)], FEATURES, at=at
            ),
            max(args.lookups // 10, 10),
        )
    for label, samples in (("1 entity", one), ("100 entities", hundred)):
        p50, p99 = percentiles(samples)
        figures.add(f"online lookup, {label} x 12 features, p50", p50, "ms")
        figures.add(f"online lookup, {label} x 12 features, p99", p99, "ms")


def measure_data_tests(rows: list[dict], figures: Figures) -> None:
    """Processing the same events into two fresh projects, without and with data tests
    (expectations checked on every batch), in one run."""
    rates = {}
    for label, definitions in (("no data tests", DEFINITIONS), ("4 data tests", CHECKED)):
        folder = write_project(fresh_dir("core-checks"), definitions)
        with Project(folder, clock=_clock) as p:
            sdk_ingest(p, rows, 10_000)
            start = time.perf_counter()
            stats = p.process()
            rates[label] = stats.events / (time.perf_counter() - start)
            if label != "no data tests":
                assert p.log.end_offset("alerts") == 0, "the data tests should all pass"
        figures.add(f"processing, {label}", rates[label], "events/s")
    figures.add(
        "data tests on every batch: processing rate vs none",
        rates["4 data tests"] / rates["no data tests"],
        "x",
    )


def measure_pii(rows: list[dict], figures: Figures) -> None:
    """SDK ingest of the same events with and without one pseudonymized field (an email),
    each into a fresh project, interleaved in one run."""
    with_email = [{**r, "email": f"{r['user_id']}@mail.example"} for r in rows]
    rates = {}
    for label, definitions in (
        ("email stored as sent", WITH_EMAIL),
        ("email pseudonymized", PSEUDONYMIZED),
    ):
        folder = write_project(fresh_dir("core-pii"), definitions)
        with Project(folder, clock=_clock) as p:
            rates[label] = sdk_ingest(p, with_email, 10_000)
        figures.add(f"SDK ingest, batches of 10,000, {label}", rates[label], "events/s")
    figures.add(
        "pseudonymizing one field: ingest rate vs none",
        rates["email pseudonymized"] / rates["email stored as sent"],
        "x",
    )


def measure_http(http_rows: list[dict], figures: Figures) -> None:
    """HTTP ingest into a fresh project; each level sends events not sent before."""
    folder = write_project(fresh_dir("core-http"), DEFINITIONS)
    for batch, clients in ((1, 1), (1, 16), (100, 4), (1000, 4)):
        part = http_rows[: min(len(http_rows), 5_000 * batch)]
        rate = http_ingest(folder, part, batch, clients)
        figures.add(f"HTTP ingest, batches of {batch}, {clients} clients", rate, "events/s")
        http_rows = http_rows[len(part) :] or http_rows
        if (batch, clients) == (1, 1):
            measure_audit(figures, rate)


def measure_audit(figures: Figures, one_event_rate: float, records: int = 2000) -> None:
    """The cost of auditing a write: one ``_audit`` record appended durably (what every
    ingest request adds), against a 1-event HTTP ingest of the same run."""
    folder = write_project(fresh_dir("core-audit"), DEFINITIONS)
    with Project(folder, clock=_clock) as project:
        audit = AuditLog(project.log, _clock)
        start = time.perf_counter()
        for _ in range(records):
            audit.record("0123456789abcdef", "bench", "ingest", "purchases", counts={"events": 1})
        per_record_ms = (time.perf_counter() - start) / records * 1000
    figures.add("audit record appended (durable), per write", per_record_ms, "ms")
    figures.add(
        "audit share of a 1-event HTTP ingest, 1 client",
        100 * per_record_ms / (1000 / one_event_rate),
        "%",
    )


def measure_training_set(
    args: argparse.Namespace, folder: Path, spine: pa.Table, figures: Figures
) -> None:
    """The training set with the sorted copy, then with the join alone; values compared."""
    name = (
        f"training set {args.ts_spine:,} x {len(FEATURES)} features over {args.ts_events:,} events"
    )
    results = []
    for how in ("", ", join only"):
        with Project(folder, clock=_clock) as p:
            if how:
                p.training = TrainingSets.over(
                    p.catalog, p.offline_store, p.archiver, p.definitions.streams,
                    sorted_history=False,
                )  # fmt: skip
            start = time.perf_counter()
            result = p.training_set(spine, FEATURES, output="arrow")
            figures.add(f"{name}{how}", time.perf_counter() - start, "s")
        if result.num_rows != spine.num_rows:
            raise RuntimeError(f"the training set has {result.num_rows:,} of {spine.num_rows:,}")
        results.append(result)
    differing = 0
    for feature in FEATURES:
        a = results[0][feature].to_numpy(zero_copy_only=False).astype(float)
        b = results[1][feature].to_numpy(zero_copy_only=False).astype(float)
        same = np.isclose(a, b, rtol=1e-9, atol=1e-9) | (np.isnan(a) & np.isnan(b))
        differing += int((~same).sum())
    figures.add("training set: values differing from the join's", differing, "values")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--events", type=int, default=200_000, help="events for ingest/processing")
    ap.add_argument("--http-events", type=int, default=100_000)
    ap.add_argument("--users", type=int, default=10_000)
    ap.add_argument("--lookups", type=int, default=2_000)
    ap.add_argument("--ts-events", type=int, default=10_000_000, help="training-set events")
    ap.add_argument("--ts-spine", type=int, default=1_000_000, help="training-set spine rows")
    ap.add_argument("--ts-users", type=int, default=100_000)
    add_runs_argument(ap)
    args = ap.parse_args()
    figures = Figures(args.runs)

    ts_folder, spine, notes = prepare_training_set(args)
    print(f"ingest and processing: {args.events:,} events, {args.users:,} users", flush=True)
    rows = rows_of(events_table(args.events, args.users, 30), "e")
    http_rows = rows_of(events_table(args.http_events, args.users, 30, seed=5), "h")
    for _ in figures.runs():
        measure_local(args, rows, figures)
        measure_pii(rows, figures)
        measure_data_tests(rows, figures)
        measure_http(http_rows, figures)
        measure_training_set(args, ts_folder, spine, figures)

    print(figures.report())
    for note in notes:
        print(note)
    print(f"peak RSS of this process (set-up and every run): {peak_rss_mb():,.0f} MB")


if __name__ == "__main__":
    main()
