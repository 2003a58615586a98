"""The monitor's ledger: every logged prediction with its ground truth once known, and per-day
aggregates, kept up to date by consuming the log from checkpoints.

The ledger lives in the monitor state port (``[stores] monitor``: a DuckDB file beside the
embedded stores by default, PostgreSQL to share one ledger between servers). Each batch
commits the state it changed with the log offsets that produced it in one transaction, so a
process killed at any point resumes at its last commit and counts nothing twice. Like every
store but the log, it is derived: deleting it rebuilds it from the log.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any

import orjson
import pandas as pd
import pyarrow as pa

from headwater.definitions import Feedback, HeadwaterError
from headwater.history.labels import label_values
from headwater.log.base import Record, partition_name
from headwater.monitoring import ledger_tables as tables
from headwater.monitoring import rollup
from headwater.monitoring.context import MonitorContext
from headwater.stores.monitor.base import MonitorSession, MonitorStateError, MonitorStore
from headwater.stores.monitor.schema import TABLES

PREDICTIONS = "predictions"
DAY_US = 86_400_000_000
SCHEMA_VERSION = "1"


class LedgerError(HeadwaterError):
    """The monitor's ledger could not be opened or advanced."""


@dataclass(frozen=True)
class Progress:
    """What one ``advance`` consumed: prediction and feedback records read from the log, and
    labels that matured (model labels whose horizon passed)."""

    predictions: int = 0
    feedback: int = 0
    matured: int = 0
    seconds: float = 0.0

    @property
    def consumed(self) -> int:
        return self.predictions + self.feedback + self.matured

    @property
    def per_second(self) -> float:
        return self.consumed / self.seconds if self.seconds > 0 else 0.0


def feedback_source(feedback: Feedback) -> str:
    """The id of a feedback source: its stream, outcome field and prediction id field.

    >>> from headwater import Stream
    >>> s = Stream("outcomes", fields={"prediction_id": "string", "ok": "int"},
    ...            key="prediction_id", time="ts", owner="o", description="d")
    >>> feedback_source(Feedback(s, field="ok"))
    'outcomes:ok:prediction_id'
    """
    return f"{feedback.stream.name}:{feedback.field}:{feedback.prediction_id}"


class Ledger:
    """The monitor's incremental state for one project (see the module docstring).

    ``advance`` consumes what the log holds past the checkpoints and matures labels whose
    horizon passed by ``now``; the other methods read the committed state. ``state`` is
    where it lives (by default the project's monitor state).
    """

    def __init__(
        self, ctx: MonitorContext, state: MonitorStore | None = None, batch: int = 5000
    ) -> None:
        self.ctx = ctx
        self.state = state or ctx.state
        self.batch = batch

    # -- opening ---------------------------------------------------------------------------

    @contextmanager
    def connect(self, wait: float = 120.0) -> Iterator[MonitorSession]:
        """The ledger, held alone (by one thread of one process, wherever it runs) until
        the block ends; started over first if what it was built from changed."""
        try:
            with self.state.session(wait) as con:
                self._check_sources(con)
                yield con
        except MonitorStateError as exc:
            raise LedgerError(str(exc)) from None

    def _sources(self) -> dict[str, str]:
        """What gives each service's ground truth: a feedback source or a model's label."""
        out = {}
        for name, service in self.ctx.definitions.services.items():
            if service.feedback is not None:
                out[name] = "feedback " + feedback_source(service.feedback)
            else:
                labels = sorted(
                    {f"{v.model.name}={v.model.label.version}" for v in service.variants}
                )
                out[name] = "label " + ",".join(labels)
        return out

    def _check_sources(self, con: MonitorSession) -> None:
        """Start over when the schema, the log or an existing service's ground truth changed:
        every label settled so far may be wrong then."""
        wanted = {
            "schema": SCHEMA_VERSION,
            "log": self.ctx.log_url,
            **{f"service {k}": v for k, v in self._sources().items()},
        }
        held = dict(con.rows("SELECT name, value FROM meta"))
        if any(held.get(k, v) != v for k, v in wanted.items()):
            con.reset()
            held = {}
        if any(held.get(k) != v for k, v in wanted.items()):
            with con.transaction():
                con.executemany(
                    "INSERT INTO meta VALUES (?, ?) "
                    "ON CONFLICT (name) DO UPDATE SET value = excluded.value",
                    list(wanted.items()),
                )

    # -- advancing -------------------------------------------------------------------------

    def advance(
        self, now: int | None = None, progress: Callable[[Progress], None] | None = None
    ) -> Progress:
        """Consume the predictions and feedback the log holds past the checkpoints, then
        settle the model labels whose horizon has passed by ``now`` (the project's clock)."""
        started = time.perf_counter()
        now = self.ctx.clock() if now is None else now
        self.ctx.flush_predictions()  # predictions logged in this process count
        done = Progress()

        def tick(**counts: int) -> None:
            nonlocal done
            done = replace(
                done,
                **{k: getattr(done, k) + v for k, v in counts.items()},
                seconds=time.perf_counter() - started,
            )
            if progress is not None:
                progress(done)

        with self.connect() as con:
            self._consume_predictions(con, tick)
            for source, feedback in self._feedback_sources().items():
                self._consume_feedback(con, source, feedback, tick)
            self._mature(con, now, tick)
            rollup.flush(con)
        return replace(done, seconds=time.perf_counter() - started)

    def _feedback_sources(self) -> dict[str, Feedback]:
        services = self.ctx.definitions.services.values()
        return {feedback_source(s.feedback): s.feedback for s in services if s.feedback}

    def _consume_predictions(self, con: MonitorSession, tick: Callable[..., None]) -> None:
        log = self.ctx.log
        for partition in range(log.partitions(PREDICTIONS)):
            name = partition_name(PREDICTIONS, partition)
            start = tables.checkpoint(con, name)
            while records := log.read(PREDICTIONS, start, self.batch, partition):
                start = records[-1].offset + 1
                rows, index = self._prediction_rows(records, partition)
                with con.transaction():
                    if rows.num_rows:
                        tables.insert_predictions(con, rows)
                    tables.extend_index(con, index)
                    tables.set_checkpoint(con, name, start)
                tick(predictions=len(records))

    def _prediction_rows(
        self, records: Sequence[Record], partition: int
    ) -> tuple[pa.Table, list[tuple[int, int, int, int]]]:
        """The ledger rows of a batch of prediction records (shadows are not reported, so not
        kept) and the offsets each day's records span in the partition."""
        plans: dict[tuple[str, str], tuple[str | None, tuple[str, ...] | None]] = {}
        rows: list[tuple[Any, ...]] = []
        seen: set[str] = set()
        spans: dict[int, list[int]] = {}
        for r in records:
            day = r.event_time // DAY_US
            span = spans.setdefault(day, [r.offset, r.offset])
            span[1] = r.offset
            doc = orjson.loads(r.payload)
            pid = str(doc["prediction_id"])
            if doc.get("shadow") or doc.get("model_version") is None or pid in seen:
                continue
            seen.add(pid)
            how = (doc["service"], doc["model"])
            if how not in plans:
                plans[how] = self._truth_plan(*how)
            source, keys = plans[how]
            entity = None
            if keys is not None:
                entity = orjson.dumps({k: doc["entity"].get(k) for k in keys}).decode()
            ts = doc["ts_us"]
            rows.append(
                (
                    pid,
                    doc["service"],
                    doc["variant"],
                    doc["model"],
                    int(doc["model_version"]),
                    ts // DAY_US,
                    ts,
                    partition,
                    r.offset,
                    doc.get("output"),
                    source,
                    entity,
                    entity is not None,
                )
            )
        index = [(partition, day, lo, hi) for day, (lo, hi) in spans.items()]
        columns = zip(*rows, strict=True) if rows else ([] for _ in tables.OUTCOME_COLUMNS)
        return pa.table(list(columns), schema=tables.OUTCOME_SCHEMA), index

    def _truth_plan(self, service: str, model: str) -> tuple[str | None, tuple[str, ...] | None]:
        """Where a prediction's ground truth will come from: a feedback source, or the label
        of its model evaluated at the entity's keys (neither: an unknown service or model)."""
        found = self.ctx.definitions.services.get(service)
        if found is not None and found.feedback is not None:
            return feedback_source(found.feedback), None
        models = self.ctx.definitions.models
        return None, (tuple(models[model].label.entity.keys) if model in models else None)

    def _consume_feedback(
        self,
        con: MonitorSession,
        source: str,
        feedback: Feedback,
        tick: Callable[..., None],
    ) -> None:
        log, stream = self.ctx.log, feedback.stream.name
        for partition in range(log.partitions(stream)):
            name = partition_name(f"feedback:{source}", partition)
            start = tables.checkpoint(con, name)
            while records := log.read(stream, start, self.batch, partition):
                start = records[-1].offset + 1
                events = _feedback_events(records, partition, source, feedback)
                with con.transaction():
                    if events.num_rows:
                        tables.merge_feedback(con, events)
                    tables.set_checkpoint(con, name, start)
                tick(feedback=len(records))

    def _mature(self, con: MonitorSession, now: int, tick: Callable[..., None]) -> None:
        """Settle, a batch at a time, the model labels whose horizon has passed by ``now``."""
        models = self.ctx.definitions.models
        for name in sorted(models):
            label = models[name].label
            stream = self.ctx.definitions.streams[label.stream.name]
            caught_up = False
            while True:
                due: pa.Table = con.arrow(
                    "SELECT prediction_id, ts_us, entity FROM outcomes WHERE pending AND model = ?"
                    " AND ts_us + ? <= ? ORDER BY ts_us, prediction_id LIMIT ?",
                    [name, label.horizon_us, now, self.batch],
                )
                if not due.num_rows:
                    break
                if not caught_up:
                    self.ctx.archiver.catch_up(stream)
                    caught_up = True
                settled = self._label(label, stream, due)
                with con.transaction():
                    tables.settle(con, settled)
                tick(matured=due.num_rows)

    def _label(self, label: Any, stream: Any, due: pa.Table) -> pa.Table:
        times = due["ts_us"].to_numpy()
        keys = pd.DataFrame([orjson.loads(e) for e in due["entity"].to_pylist()])
        values = label_values(self.ctx.engine, label, keys, times, None)
        numbers = pd.to_numeric(pd.Series(values, dtype=object), errors="coerce")
        return pa.table(
            {
                "prediction_id": due["prediction_id"],
                "label": pa.array(numbers.astype(float).to_numpy(), pa.float64(), from_pandas=True),
                "known_us": pa.array(times + label.horizon_us, pa.int64()),
                "day": pa.array(times // DAY_US, pa.int32()),
            }
        )

    # -- reading ---------------------------------------------------------------------------

    def outcomes(self, prediction_ids: Sequence[str]) -> pd.DataFrame:
        """The ground truth known for those of these predictions that have one: ``label``
        and ``known_us`` (when it became known), indexed by prediction id."""
        wanted = pa.table({"prediction_id": pa.array([str(p) for p in prediction_ids])})
        with self.connect() as con:
            con.load("_wanted", wanted)
            frame = con.arrow(
                "SELECT o.prediction_id, o.label, o.known_us FROM outcomes o "
                "WHERE o.label IS NOT NULL AND EXISTS "
                "(SELECT 1 FROM _wanted w WHERE o.prediction_id = w.prediction_id)"
            ).to_pandas()
        if frame.empty:
            frame = pd.DataFrame({"prediction_id": [], "label": [], "known_us": []})
        return frame.set_index("prediction_id")

    def read_ranges(self, since_us: int, until_us: int) -> dict[int, list[tuple[int, int | None]]]:
        """Per partition of the predictions stream, the offset ranges (end inclusive; None:
        to the end) that hold every prediction made in ``[since_us, until_us)``: the span the
        index records for those days, then whatever lies past the checkpoint."""
        first_day, last_day = since_us // DAY_US, (until_us - 1) // DAY_US
        with self.connect() as con:
            spans = dict(
                (p, (lo, hi))
                for p, lo, hi in con.rows(
                    "SELECT part, min(first_offset), max(last_offset) FROM log_index "
                    "WHERE day BETWEEN ? AND ? GROUP BY part",
                    [first_day, last_day],
                )
            )
            out: dict[int, list[tuple[int, int | None]]] = {}
            for p in range(self.ctx.log.partitions(PREDICTIONS)):
                tail = tables.checkpoint(con, partition_name(PREDICTIONS, p))
                lo, hi = spans.get(p, (tail, tail - 1))
                out[p] = [(lo, hi), (tail, None)] if hi + 1 < tail else [(lo, None)]
        return out

    def performance(
        self, since_us: int, until_us: int, service: str | None = None
    ) -> list[rollup.Performance]:
        """Per (service, variant, model version): one row per day of ``[since_us, until_us)``
        (whole days, UTC) with predictions, then one row for the whole range (``day`` None)."""
        tasks = {n: m.task for n, m in self.ctx.definitions.models.items()}
        with self.connect() as con:
            rollup.flush(con)
            return rollup.performance(
                con, since_us // DAY_US, -(-until_us // DAY_US), service, tasks
            )

    # -- skew -----------------------------------------------------------------------------

    def skew_checked_until(self, service: str) -> int:
        """The prediction time (microseconds) up to which the service's skew was checked."""
        with self.connect() as con:
            return tables.checkpoint(con, f"skew@{service}")

    def record_skew(
        self, service: str, counts: dict[tuple[str, int], tuple[int, int]], until_us: int
    ) -> None:
        """Add a check's (feature, day) -> (compared, mismatched) and move the service's
        skew checkpoint to ``until_us``, in one transaction."""
        with self.connect() as con:
            con.executemany(
                "INSERT INTO skew VALUES (?, ?, ?, ?, ?) ON CONFLICT (service, feature, day) "
                "DO UPDATE SET compared = skew.compared + excluded.compared, "
                "mismatched = skew.mismatched + excluded.mismatched",
                [(service, f, day, c, m) for (f, day), (c, m) in sorted(counts.items())],
            )
            tables.set_checkpoint(con, f"skew@{service}", until_us)

    def skew(
        self, since_us: int, until_us: int, service: str | None = None
    ) -> list[tuple[str, str, int, int, int]]:
        """(service, feature, day, compared, mismatched) for the days of the range."""
        sql = (
            "SELECT service, feature, day, compared, mismatched FROM skew "
            "WHERE day >= ? AND day < ?"
        )
        params: list[Any] = [since_us // DAY_US, -(-until_us // DAY_US)]
        if service is not None:
            sql += " AND service = ?"
            params.append(service)
        with self.connect() as con:
            rows = con.rows(sql + " ORDER BY service, feature, day", params)
        return [(str(a), str(b), int(c), int(d), int(e)) for a, b, c, d, e in rows]

    def checkpoints(self) -> dict[str, int]:
        with self.connect() as con:
            return dict(con.rows("SELECT name, next_offset FROM checkpoints"))

    def snapshot(self) -> dict[str, list[tuple[Any, ...]]]:
        """Every table of the ledger, sorted: for comparing two ledgers in tests."""
        with self.connect() as con:
            rollup.flush(con)
            return {
                table: sorted(con.rows(f"SELECT * FROM {table}"), key=repr) for table in TABLES[1:]
            }


def _feedback_events(
    records: Sequence[Record], partition: int, source: str, feedback: Feedback
) -> pa.Table:
    """The usable events of a batch of feedback records: those naming a prediction and
    carrying a numeric outcome (the monitor scores numbers)."""
    columns: dict[str, list[Any]] = {c: [] for c in tables.FEEDBACK_SCHEMA.names}
    for r in records:
        doc = orjson.loads(r.payload)
        pid, value = doc.get(feedback.prediction_id), doc.get(feedback.field)
        if pid is None or value is None:
            continue
        try:
            outcome = float(value)
        except (TypeError, ValueError):
            continue
        for column, v in zip(
            tables.FEEDBACK_SCHEMA.names,
            (source, str(pid), outcome, r.event_time, partition, r.offset, r.event_time),
            strict=True,
        ):
            columns[column].append(v)
    return pa.table(columns, schema=tables.FEEDBACK_SCHEMA)
