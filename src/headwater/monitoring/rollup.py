"""Per-day performance aggregates of the monitor's ledger, and the rolling reports built on them.

Each (service, variant, model version, day) keeps counts and the sums its metrics need (log
loss, Brier, accuracy, squared and absolute errors, calibration bins), so any range of days
sums up in O(days). The two statistics that do not sum, AUC and the median label delay, are
exact per day and, over a range, computed from the ledger's stored (score, label, delay) rows
of that range in one query.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from headwater.stores.monitor.base import MonitorSession

KEY = "service, variant, model, version"
TABLES = ("days", "calibration", "stale")
# evaluation.calibration's bins, compared as the same doubles numpy compares them with
EDGES = tuple(float(e) for e in np.linspace(0, 1, 11)[1:-1])
EPSILON = 1e-7  # evaluation.score_metrics clips scores so for log loss and Brier

_BIN = " + ".join(f"CAST(score >= CAST('{e!r}' AS float8) AS INTEGER)" for e in EDGES)
_SAME_DAY = " AND ".join(f"o.{c} = t.{c}" for c in (*KEY.split(", "), "day"))
_ROWS = f"""SELECT o.*, trunc(o.label) AS y,
       least(greatest(o.score, {EPSILON}), 1 - {EPSILON}) AS p,
       CAST(greatest(o.known_us - o.ts_us, 0) AS float8) AS delay_us
FROM outcomes o WHERE EXISTS (SELECT 1 FROM _touched t WHERE {_SAME_DAY})"""


def median(x: str) -> str:
    """The median of ``x`` (interpolated between the two middle values, as pandas')."""
    return f"percentile_cont(0.5) WITHIN GROUP (ORDER BY {x})"


@dataclass(frozen=True)
class Performance:
    """Live performance of one (service, variant, model version) over one day (``day``:
    days since the epoch, UTC) or, with ``day`` None, over a whole range of days."""

    service: str
    variant: str
    model: str
    version: int
    day: int | None
    predictions: int
    labelled: int
    first_us: int
    last_us: int
    label_delay_s: float | None = None
    metrics: dict[str, float] = field(default_factory=dict)

    @property
    def label_coverage(self) -> float:
        return self.labelled / self.predictions if self.predictions else 0.0


def auc_sql(rows: str, group: str) -> str:
    """Exact ROC AUC per group of labelled (score, y) rows, ties counted as half: the
    Mann-Whitney rank sum of the positives with mid-ranks. Groups without both classes (or
    with labels other than 0 and 1) get none."""
    pos, neg = "count(*) FILTER (WHERE y = 1)", "count(*) FILTER (WHERE y = 0)"
    return f"""SELECT {group}, CAST(
        (sum(r) FILTER (WHERE y = 1) - {pos} * ({pos} + 1) / 2.0) / ({pos} * {neg})
        AS float8) AS auc
    FROM (SELECT {group}, y, CAST(rank() OVER (PARTITION BY {group} ORDER BY score)
                 + (count(*) OVER (PARTITION BY {group}, score) - 1) / 2.0 AS float8) AS r
          FROM ({rows}) AS labelled_rows WHERE label IS NOT NULL) AS ranked
    GROUP BY {group}
    HAVING {pos} > 0 AND {neg} > 0 AND count(*) FILTER (WHERE y NOT IN (0, 1)) = 0"""


def touch(con: MonitorSession, touched: str) -> None:
    """Mark the (service, variant, model, version, day)s the query ``touched`` names stale,
    in the caller's transaction: ``flush`` recomputes them once, however many batches of an
    advance touched them."""
    con.execute(f"INSERT INTO stale {touched} ON CONFLICT DO NOTHING")


def flush(con: MonitorSession) -> None:
    """Recompute the aggregates of the stale days, in one transaction."""
    if not con.rows("SELECT count(*) FROM stale")[0][0]:
        return
    with con.transaction():
        refresh(con, "SELECT * FROM stale")
        con.execute("DELETE FROM stale")


def refresh(con: MonitorSession, touched: str) -> None:
    """Recompute the aggregates of the (service, variant, model, version, day)s the query
    ``touched`` names from their ledger rows (run inside the caller's transaction)."""
    con.execute("DROP TABLE IF EXISTS _touched")
    con.execute(f"CREATE TEMP TABLE _touched AS {touched}")
    for table in TABLES[:2]:
        con.execute(f"DELETE FROM {table} o USING _touched t WHERE {_SAME_DAY}")
    labelled = "FILTER (WHERE label IS NOT NULL)"
    # summed in one order, so a ledger holds the same bits however its batches fell
    ordered = "ORDER BY prediction_id"
    con.execute(
        f"""INSERT INTO days
        WITH rows AS ({_ROWS}),
        sums AS (
            SELECT {KEY}, day, count(*) AS predictions, count(label) AS labelled,
                   min(ts_us) AS first_us, max(ts_us) AS last_us,
                   {median("delay_us")} {labelled} AS delay_median_us,
                   sum(delay_us {ordered}) {labelled} AS delay_sum_us,
                   count(*) FILTER (WHERE y = 1) AS positives,
                   count(*) FILTER (WHERE y = 0) AS negatives,
                   sum(-(y * ln(p) + (1 - y) * ln(1 - p)) {ordered}) {labelled}
                       AS log_loss_sum,
                   sum(pow(p - y, 2) {ordered}) {labelled} AS brier_sum,
                   count(*) FILTER (WHERE label IS NOT NULL AND (score >= 0.5) = (y = 1))
                       AS correct,
                   sum(pow(score - label, 2) {ordered}) {labelled} AS squared_error_sum,
                   sum(abs(score - label) {ordered}) {labelled} AS absolute_error_sum
            FROM rows GROUP BY {KEY}, day),
        auc AS ({auc_sql("SELECT * FROM rows", KEY + ", day")})
        SELECT s.service, s.variant, s.model, s.version, s.day, predictions, labelled,
               first_us, last_us, delay_median_us, delay_sum_us, positives, negatives, a.auc,
               log_loss_sum, brier_sum, correct, squared_error_sum, absolute_error_sum
        FROM sums s LEFT JOIN auc a USING ({KEY}, day)"""
    )
    con.execute(
        f"""INSERT INTO calibration
        SELECT {KEY}, day, bin, count(*), sum(score {ordered}), sum(y)
        FROM (SELECT *, least(greatest({_BIN}, 0), 9) AS bin FROM ({_ROWS}) AS r
              WHERE label IS NOT NULL) AS binned
        GROUP BY {KEY}, day, bin"""
    )


def performance(
    con: MonitorSession,
    first_day: int,
    end_day: int,
    service: str | None,
    tasks: dict[str, str],
) -> list[Performance]:
    """Per key: a row per day of ``[first_day, end_day)`` that has predictions, then the
    range's total (see the module docstring for how each figure is obtained)."""
    where = "day >= ? AND day < ?" + (" AND service = ?" if service else "")
    params: list[Any] = [first_day, end_day, *([service] if service else [])]
    days = _frame(con, f"SELECT * FROM days WHERE {where} ORDER BY {KEY}, day", params)
    bins = _frame(con, f"SELECT * FROM calibration WHERE {where}", params)
    rows = f"SELECT *, trunc(label) AS y FROM outcomes WHERE {where}"
    delay = "CAST(greatest(known_us - ts_us, 0) AS float8)"
    exact = con.rows(
        f"""SELECT {KEY}, m.delay_median_us, a.auc FROM
            (SELECT {KEY}, {median(delay)} FILTER (WHERE label IS NOT NULL) AS delay_median_us
             FROM outcomes WHERE {where} GROUP BY {KEY}) m
            LEFT JOIN ({auc_sql(rows, KEY)}) a USING ({KEY})""",
        params * 2,
    )
    totals = {tuple(r[:4]): (r[4], r[5]) for r in exact}
    out: list[Performance] = []
    for key, group in days.groupby(["service", "variant", "model", "version"], sort=True):
        task = tasks.get(str(key[2]), "classification")
        for _, day in group.iterrows():
            mine = bins[_same(bins, key) & (bins["day"] == day["day"])]
            out.append(_performance(key, int(day["day"]), day, mine, task, day["auc"]))
        whole = group.drop(columns=["day", "auc", "delay_median_us"]).sum(numeric_only=True)
        whole["first_us"], whole["last_us"] = group["first_us"].min(), group["last_us"].max()
        delay_us, auc = totals.get(tuple(key), (None, None))
        whole["delay_median_us"] = delay_us
        out.append(_performance(key, None, whole, bins[_same(bins, key)], task, auc))
    return out


def _frame(con: MonitorSession, sql: str, params: list[Any]) -> pd.DataFrame:
    """A query's rows as a pandas frame (nulls of number columns as NaN)."""
    return con.arrow(sql, params).to_pandas()


def _same(frame: pd.DataFrame, key: tuple[Any, ...]) -> pd.Series:
    return (
        (frame["service"] == key[0])
        & (frame["variant"] == key[1])
        & (frame["model"] == key[2])
        & (frame["version"] == key[3])
    )


def _performance(
    key: tuple[Any, ...],
    day: int | None,
    sums: pd.Series,
    bins: pd.DataFrame,
    task: str,
    auc: Any,
) -> Performance:
    labelled = int(sums["labelled"])
    delay = _number(sums["delay_median_us"])
    return Performance(
        str(key[0]),
        str(key[1]),
        str(key[2]),
        int(key[3]),
        day,
        int(sums["predictions"]),
        labelled,
        int(sums["first_us"]),
        int(sums["last_us"]),
        None if delay is None or not labelled else delay / 1e6,
        metrics(task, labelled, sums, bins, _number(auc)) if labelled else {},
    )


def metrics(
    task: str, labelled: int, sums: pd.Series, bins: pd.DataFrame, auc: float | None
) -> dict[str, float]:
    """The metrics of summed aggregates: AUC (given), log loss, Brier, accuracy (at 0.5) and
    expected calibration error for classifiers; RMSE and MAE for regressors.

    >>> sums = pd.Series({"log_loss_sum": 2.0, "brier_sum": 0.5, "correct": 3})
    >>> bins = pd.DataFrame({"n": [4], "score_sum": [2.2], "label_sum": [2.0]})
    >>> {k: round(v, 3) for k, v in metrics("classification", 4, sums, bins, 0.75).items()}
    {'auc': 0.75, 'log_loss': 0.5, 'brier': 0.125, 'accuracy': 0.75, 'ece': 0.05}
    """
    if task != "classification":
        return {
            "rmse": math.sqrt(float(sums["squared_error_sum"]) / labelled),
            "mae": float(sums["absolute_error_sum"]) / labelled,
        }
    # per bin, count * |mean score - mean label| is |score sum - label sum|
    ece = float((bins["score_sum"] - bins["label_sum"]).abs().sum()) / max(int(bins["n"].sum()), 1)
    return {
        "auc": math.nan if auc is None else auc,
        "log_loss": float(sums["log_loss_sum"]) / labelled,
        "brier": float(sums["brier_sum"]) / labelled,
        "accuracy": float(sums["correct"]) / labelled,
        "ece": ece,
    }


def _number(value: Any) -> float | None:
    if value is None or value is pd.NA:
        return None
    number = float(value)
    return None if math.isnan(number) else number
