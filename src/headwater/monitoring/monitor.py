"""The monitor: logged predictions joined with their ground truth, drift against each model
version's reference profile, and alerts.

Ground truth is the model's own ``Label``, evaluated at each prediction's time once its horizon
has passed — or, for a service that declares ``Feedback``, the outcome events that name the
prediction's id. The ledger (``monitoring/ledger.py``) joins it incrementally, as a
checkpointed consumer of the log; a run advances the ledger, then reports a window of
prediction times from it, reading only that window's predictions (for drift) from the log.
``run(..., recompute=True)`` recomputes every label from the log instead (the oracle the
ledger is tested against).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import orjson
import pandas as pd

from headwater.definitions import Feedback, Service
from headwater.definitions.types import from_micros
from headwater.history.labels import label_values
from headwater.log.base import NewRecord, Record
from headwater.monitoring.alerts import ALERTS
from headwater.monitoring.context import MonitorContext
from headwater.monitoring.drift import ColumnDrift, Thresholds, profile_drift
from headwater.monitoring.ledger import DAY_US, Ledger
from headwater.training import evaluation

PREDICTIONS = "predictions"


@dataclass
class VersionReport:
    """What the monitor found for one (service, variant, model version)."""

    service: str
    variant: str
    model: str
    version: int
    owner: str
    predictions: int
    first_us: int
    last_us: int
    labelled: int = 0
    label_delay_s: float | None = None  # median wait from prediction to its ground truth
    metrics: dict[str, float] = field(default_factory=dict)
    drift: list[ColumnDrift] = field(default_factory=list)
    # per segment (the service's and the model's): each group's labelled rows, metric,
    # positive rates and calibration, and the largest gap (evaluation.by_segment)
    segments: dict[str, Any] = field(default_factory=dict)

    @property
    def label_coverage(self) -> float:
        return self.labelled / self.predictions if self.predictions else 0.0


def experiment_outcomes(
    ctx: MonitorContext, service: str, since_us: int, until_us: int
) -> pd.DataFrame:
    """Each answered prediction of a service with its matured outcome: the service's
    feedback, else (a bandit) its reward stream, else the model's label. Columns: variant,
    outcome, propensity (None before propensities were logged), entity (its keys as one
    string: the cluster of sticky routing), prediction_id, and one column per segment of the
    service and its models (the logged context field or feature)."""
    columns = ["variant", "outcome", "propensity", "entity", "prediction_id"]
    frame = logged_predictions(ctx, service, since_us, until_us)
    if frame.empty:
        return pd.DataFrame(columns=columns)
    frame = frame[~frame["shadow"].astype(bool)].reset_index(drop=True)
    monitor = Monitor(ctx)
    definition = ctx.definitions.services[service]
    segments = list(
        dict.fromkeys(
            [s.name for s in definition.segments]
            + [s.name for v in definition.variants for s in v.model.segments]
        )
    )
    parts = []
    for model, group in frame.groupby("model"):
        group = group.reset_index(drop=True)
        if definition.feedback is None and definition.bandit is not None:
            rewards = Feedback(definition.bandit.rewards, field=definition.bandit.reward_field)
            found = feedback_labels(ctx, rewards, group["prediction_id"])
            labels = pd.Series(
                [found[i][0] if i in found else None for i in group["prediction_id"]],
                dtype=object,
            )
        else:
            labels, _ = monitor.labels_for(
                definition, ctx.definitions.model(model), group, ctx.clock()
            )
        parts.append(
            pd.DataFrame(
                {
                    "variant": group["variant"],
                    "outcome": labels,
                    "propensity": group["propensity"]
                    if "propensity" in group
                    else pd.Series([None] * len(group), dtype=object),
                    "entity": [
                        orjson.dumps(e, option=orjson.OPT_SORT_KEYS).decode()
                        for e in group["entity"]
                    ],  # fmt: skip
                    "prediction_id": group["prediction_id"],
                    **{name: logged_values(group, name) for name in segments},
                }
            )
        )
    out = pd.concat(parts, ignore_index=True)
    out = out[out["outcome"].notna()]
    out["outcome"] = out["outcome"].astype(float)
    return out.reset_index(drop=True)


def logged_predictions(
    ctx: MonitorContext,
    service: str | None,
    since_us: int,
    until_us: int,
    ranges: Mapping[int, Sequence[tuple[int, int | None]]] | None = None,
) -> pd.DataFrame:
    """The logged (non-shadow and shadow) predictions of a time window, one row each.

    ``ranges``: per partition, the offset ranges (end inclusive; None: to the end) to read
    instead of the whole partition (``Ledger.read_ranges`` gives those of a window)."""
    ctx.flush_predictions()
    rows = []
    for partition in range(ctx.log.partitions(PREDICTIONS)):
        spans = (ranges or {}).get(partition, [(0, None)])
        for start, last in spans:
            for r in _read(ctx.log, partition, start, last):
                if since_us <= r.event_time < until_us:
                    doc = orjson.loads(r.payload)
                    if service is None or doc["service"] == service:
                        rows.append(doc)
    return pd.DataFrame(rows)


def _read(log: Any, partition: int, start: int, last: int | None) -> Iterator[Record]:
    while last is None or start <= last:
        limit = 50_000 if last is None else min(50_000, last - start + 1)
        records = log.read(PREDICTIONS, start, limit, partition)
        if not records:
            return
        yield from (r for r in records if last is None or r.offset <= last)
        start = records[-1].offset + 1


def feedback_labels(
    ctx: MonitorContext, feedback: Feedback, prediction_ids: Iterable[str]
) -> dict[str, tuple[Any, int]]:
    """For each prediction id with feedback: (its outcome, when the first feedback arrived).

    The latest event by event time (then log order) gives the outcome, so a correction
    replaces an earlier label; ids with no feedback are absent."""
    stream = ctx.definitions.streams[feedback.stream.name]
    ctx.archiver.catch_up(stream)
    found = ctx.engine.latest(
        stream, feedback.prediction_id, feedback.field, [str(i) for i in prediction_ids]
    )
    return {pid: (_python(value), at) for pid, (value, at) in found.items()}


class Monitor:
    def __init__(
        self,
        ctx: MonitorContext,
        thresholds: Thresholds | None = None,
        alert: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        self.ctx = ctx
        self.thresholds = thresholds or Thresholds(min_sample=ctx.min_sample)
        self._alert_hook = alert

    def run(
        self,
        service: str | None = None,
        since_us: int | None = None,
        until_us: int | None = None,
        *,
        logged: pd.DataFrame | None = None,
        alert: bool = True,
        recompute: bool = False,
    ) -> list[VersionReport]:
        """Report every (service, variant, version) seen in the window; raise alerts.

        The ledger is advanced first, and gives each prediction's ground truth; with
        ``recompute`` every label is recomputed from the log instead (slower; the same
        answer). ``logged``: predictions already read from the log (a wider window is fine),
        so that callers looking at several windows read the stream once.
        """
        now = self.ctx.clock()
        until = now + 1 if until_us is None else until_us  # predictions made "now" count
        since = until - 86_400_000_000 * 7 if since_us is None else since_us
        ledger = None if recompute else Ledger(self.ctx)
        if ledger is not None:
            ledger.advance(now)
        if logged is None:
            ranges = None if ledger is None else ledger.read_ranges(since, until)
            frame = logged_predictions(self.ctx, service, since, until, ranges)
        elif logged.empty:
            frame = logged
        else:
            keep = (logged["ts_us"] >= since) & (logged["ts_us"] < until)
            if service is not None:
                keep &= logged["service"] == service
            frame = logged[keep]
        reports: list[VersionReport] = []
        if frame.empty:
            return reports
        frame = frame[~frame["shadow"].astype(bool)] if "shadow" in frame else frame
        known = None if ledger is None else ledger.outcomes(frame["prediction_id"].tolist())
        services = self.ctx.definitions.services
        for (name, variant, model, version), group in frame.groupby(
            ["service", "variant", "model", "model_version"], sort=True
        ):
            definition = services[name]
            labels, delays = (
                self.labels_for(definition, self.ctx.definitions.model(model), group, now)
                if known is None
                else _known_truth(definition, self.ctx.definitions.model(model), group, known, now)
            )
            reports.append(
                self._report(definition, variant, model, int(version), group, labels, delays)
            )
        if alert:
            self._raise_alerts(reports, now)
        return reports

    def _report(
        self,
        service: Service,
        variant: str,
        model: str,
        version: int,
        group: pd.DataFrame,
        labels: pd.Series,
        delays: np.ndarray,
    ) -> VersionReport:
        definition = self.ctx.definitions.model(model)
        doc = self.ctx.registry.version(model, version)
        report = VersionReport(
            service.name,
            variant,
            model,
            version,
            definition.owner,
            len(group),
            int(group["ts_us"].min()),
            int(group["ts_us"].max()),
        )
        features = pd.DataFrame(list(group["features"]))
        report.drift = profile_drift(
            doc["profile"], features, group["output"].to_numpy(dtype=float), self.thresholds
        )
        matured = labels.notna()
        report.labelled = int(matured.sum())
        if report.labelled:
            report.label_delay_s = float(np.median(delays[matured.to_numpy()])) / 1e6
            y = labels[matured].astype(float).to_numpy()
            scores = group["output"].to_numpy(dtype=float)[matured.to_numpy()]
            try:
                report.metrics = evaluation.score_metrics(
                    definition.metrics, y, scores, definition.task, definition.k
                )
            except ValueError:
                report.metrics = {}
            segments = {s.name: s for s in (*service.segments, *definition.segments)}
            if segments:
                rows = group[matured.to_numpy()]
                report.segments = evaluation.by_segment(
                    list(segments.values()),
                    {name: logged_values(rows, name) for name in segments},
                    y,
                    scores,
                    definition.task,
                    definition.promotion.metric,
                    definition.k,
                )
        return report

    def labels_for(
        self, service: Service, model: Any, group: pd.DataFrame, now: int
    ) -> tuple[pd.Series, np.ndarray]:
        """Each prediction's ground truth (None: not known yet) and how long after the
        prediction it became known (microseconds): from the service's feedback stream when it
        declares one, else the model's label once its horizon has passed."""
        if service.feedback is not None:
            found = feedback_labels(self.ctx, service.feedback, group["prediction_id"])
            times = group["ts_us"].to_numpy(dtype=np.int64)
            ids = group["prediction_id"].tolist()
            labels = pd.Series([found[i][0] if i in found else None for i in ids], dtype=object)
            first = np.array(
                [found[i][1] if i in found else t for i, t in zip(ids, times, strict=True)]
            )
            return labels, np.maximum(first - times, 0)
        labels = self.ground_truth(model, group, now)
        return labels, np.full(len(group), model.label.horizon_us, dtype=np.int64)

    def ground_truth(self, model: Any, group: pd.DataFrame, now: int) -> pd.Series:
        """The label of each prediction, None where its horizon has not passed yet."""
        label = model.label
        times = group["ts_us"].to_numpy(dtype=np.int64)
        mature = times + label.horizon_us <= now
        out = pd.Series([None] * len(group), dtype=object)
        if not mature.any():
            return out
        keys = pd.DataFrame(list(group["entity"]))[list(label.entity.keys)][mature]
        stream = self.ctx.definitions.streams[label.stream.name]
        self.ctx.archiver.catch_up(stream)
        values = label_values(
            self.ctx.engine, label, keys.reset_index(drop=True), times[mature], None
        )
        out[np.flatnonzero(mature)] = values.to_numpy()
        return out

    # -- skew ------------------------------------------------------------------------------

    def skew(
        self,
        service: str,
        since_us: int,
        until_us: int,
        sample: int = 500,
        seed: int = 0,
        record: bool = False,
    ) -> dict[str, Any]:
        """Recompute the features of sampled logged predictions offline, at the time they were
        evaluated, and compare: per feature, the share that differs (expected: zero).

        Each mismatch is reported with the entity (as logged: a PII key is its pseudonym),
        the time and both values, and raised as an alert naming the service's owner (one
        alert per prediction and feature, however often it is checked). Predictions for
        unknown entities (served with defaults) are not sampled.

        ``record``: the continuous check the monitor runs: only predictions past the
        service's skew checkpoint in the ledger are sampled, the (feature, day) counts are
        added to the ledger, and ``compared``/``mismatched``/``rates`` are the ledger's
        totals over the window.
        """
        ledger = Ledger(self.ctx) if record else None
        start = since_us if ledger is None else max(since_us, ledger.skew_checked_until(service))
        frame = logged_predictions(self.ctx, service, start, until_us)
        empty: dict[str, Any] = {"checked": 0, "rates": {}, "mismatches": []}
        if not frame.empty:
            frame = frame[~frame["shadow"].astype(bool)] if "shadow" in frame else frame
            frame = frame[~frame["unknown_entity"].astype(bool) & frame["features_at_us"].notna()]
        if frame.empty:  # nothing, or only unknown entities (served with defaults)
            if ledger is not None:
                ledger.record_skew(service, {}, until_us)
                return {**empty, **self._skew_totals(ledger, service, since_us, until_us)}
            return empty
        frame = frame.sample(min(sample, len(frame)), random_state=seed).reset_index(drop=True)
        definition = self.ctx.definitions.services[service]
        entity = definition.entity
        spine = pd.DataFrame(list(frame["entity"]))[list(entity.keys)]
        spine["timestamp"] = pd.to_datetime(
            frame["features_at_us"].astype("int64"), unit="us", utc=True
        )
        names = sorted({n for f in frame["features"] for n in f})
        offline = self.ctx.training.build(spine, names).to_pandas()
        rates: dict[str, float] = {}
        mismatches: list[dict[str, Any]] = []
        counts: dict[tuple[str, int], list[int]] = {}
        days = (frame["ts_us"].astype("int64") // DAY_US).tolist()
        for name in names:
            bad = 0
            for i, logged in enumerate(frame["features"]):
                if name not in logged:
                    continue
                tally = counts.setdefault((name, days[i]), [0, 0])
                tally[0] += 1
                recomputed = _python(offline[name].iloc[i])
                if not _same(logged.get(name), recomputed):
                    bad += 1
                    tally[1] += 1
                    mismatches.append(
                        {
                            "feature": name,
                            "entity": frame["entity"][i],
                            "at_us": int(frame["features_at_us"][i]),
                            "prediction_id": frame["prediction_id"][i],
                            "online": logged.get(name),
                            "offline": recomputed,
                        }
                    )
            rates[name] = bad / len(frame) if len(frame) else 0.0
        now = self.ctx.clock()
        alerts = [
            {"kind": "skew", "service": service, "owner": definition.owner, **m}
            for m in mismatches[:1000]
        ]
        if alerts:
            self.ctx.log.append(
                ALERTS,
                [
                    NewRecord(  # one alert per prediction and feature: a re-check adds none
                        hashlib.sha1(
                            f"skew|{service}|{a['prediction_id']}|{a['feature']}".encode()
                        ).hexdigest()[:24],
                        now,
                        orjson.dumps(a, default=str),
                    )
                    for a in alerts
                ],
                now,
            )
            for a in alerts:
                if self._alert_hook is not None:
                    self._alert_hook(a)
        out: dict[str, Any] = {"checked": len(frame), "rates": rates, "mismatches": mismatches}
        if ledger is not None:
            ledger.record_skew(service, {k: (c, m) for k, (c, m) in counts.items()}, until_us)
            out.update(self._skew_totals(ledger, service, since_us, until_us))
        return out

    @staticmethod
    def _skew_totals(ledger: Ledger, service: str, since_us: int, until_us: int) -> dict[str, Any]:
        compared: dict[str, int] = {}
        mismatched: dict[str, int] = {}
        for _, feature, _, c, m in ledger.skew(since_us, until_us, service):
            compared[feature] = compared.get(feature, 0) + c
            mismatched[feature] = mismatched.get(feature, 0) + m
        return {
            "compared": compared,
            "mismatched": mismatched,
            "rates": {f: mismatched[f] / c for f, c in compared.items() if c},
        }

    # -- alerts ----------------------------------------------------------------------------

    def _raise_alerts(self, reports: list[VersionReport], now: int) -> None:
        records = []
        for r in reports:
            for d in r.drift:
                if d.level in ("ok", "insufficient"):
                    continue
                alert = {
                    "kind": "drift",
                    "level": d.level,
                    "service": r.service,
                    "variant": r.variant,
                    "model": r.model,
                    "model_version": r.version,
                    "owner": r.owner,
                    "column": d.name,
                    "reasons": list(d.reasons),
                    "since": from_micros(r.first_us).isoformat(),
                    "predictions": r.predictions,
                    "statistics": _plain(asdict(d)),
                }
                # One alert per (version, column, level, window start): re-runs add nothing.
                ident = hashlib.sha1(
                    f"{r.service}|{r.variant}|{r.version}|{d.name}|{d.level}|{r.first_us}".encode()
                ).hexdigest()[:24]
                records.append(NewRecord(ident, now, orjson.dumps(alert)))
                if self._alert_hook is not None:
                    self._alert_hook(alert)
        if records:
            self.ctx.log.append(ALERTS, records, now)


def logged_values(rows: pd.DataFrame, name: str) -> list[Any]:
    """A segment's value in each logged prediction: a context field of the request, else a
    feature the model was served."""
    contexts = rows["context"] if "context" in rows else [None] * len(rows)
    features = rows["features"] if "features" in rows else [None] * len(rows)
    out = []
    for context, served in zip(contexts, features, strict=True):
        if isinstance(context, dict) and name in context:
            out.append(context[name])
        else:
            out.append(served.get(name) if isinstance(served, dict) else None)
    return out


def _known_truth(
    service: Service, model: Any, group: pd.DataFrame, known: pd.DataFrame, now: int
) -> tuple[pd.Series, np.ndarray]:
    """``Monitor.labels_for`` answered from the ledger's outcomes (indexed by prediction id):
    a model's label counts once its horizon has passed by ``now`` (the ledger settled it at
    the clock of an earlier advance), feedback as soon as it is in the ledger."""
    ids = group["prediction_id"].astype(str)
    times = group["ts_us"].to_numpy(dtype=np.int64)
    values = ids.map(known["label"]).to_numpy(dtype=float, copy=True)
    first = ids.map(known["known_us"]).to_numpy(dtype=float)
    if service.feedback is None:
        values[times + model.label.horizon_us > now] = np.nan
    labels = pd.Series([None if v != v else v for v in values.tolist()], dtype=object)
    delays = np.maximum(np.where(np.isnan(first), times, first).astype(np.int64) - times, 0)
    return labels, delays


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, float) and value != value:
        return None
    return value


def _python(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return [_python(v) for v in value.tolist()]
    if isinstance(value, np.generic):
        value = value.item()
    if value is None or (isinstance(value, float) and value != value) or value is pd.NA:
        return None
    return value


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if a is None or b is None:
        return a is None and b is None
    if isinstance(a, int | float) and isinstance(b, int | float):
        return abs(a - b) <= 1e-9 * max(1.0, abs(a), abs(b))
    return bool(a == b)
