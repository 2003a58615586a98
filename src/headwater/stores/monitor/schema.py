"""The monitor ledger's tables, created and upgraded by ordered migrations (both backends).

``outcomes``: one row per reported (non-shadow) prediction: where it is in the log, its score,
the label's entity keys while a model label is pending, and the label once known (``known_us``:
when). ``feedback``: per feedback source and prediction id, the outcome that wins so far (the
latest by event time, then log position) and the first event's time. ``log_index``: the offsets
each day's predictions span per partition, so a window's predictions are read without a scan.
``days`` and ``calibration``: per (service, variant, model, version, day), the sums the
performance metrics need; ``stale``: the days to recompute. ``skew``: per (service, feature,
day), served feature values recomputed offline and how many differed. ``meta``: what the ledger was
built from (the log, each service's ground truth); ``checkpoints``: the log offsets consumed.
"""

from __future__ import annotations

# Step ``i`` (from 1) is version ``i``: append new steps, never edit one that has shipped.
# Each step is a list of statements; ``POSTGRES_ONLY`` steps add what only PostgreSQL needs
# (DuckDB scans its columns; an index there would be twice the size of the rows).
MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        "CREATE TABLE IF NOT EXISTS meta (name VARCHAR PRIMARY KEY, value VARCHAR NOT NULL)",
        "CREATE TABLE IF NOT EXISTS checkpoints "
        "(name VARCHAR PRIMARY KEY, next_offset BIGINT NOT NULL)",
        """CREATE TABLE IF NOT EXISTS log_index (
            part INTEGER, day INTEGER, first_offset BIGINT NOT NULL, last_offset BIGINT NOT NULL,
            PRIMARY KEY (part, day))""",
        """CREATE TABLE IF NOT EXISTS outcomes (
            prediction_id VARCHAR NOT NULL,
            service VARCHAR NOT NULL, variant VARCHAR NOT NULL, model VARCHAR NOT NULL,
            version INTEGER NOT NULL, day INTEGER NOT NULL, ts_us BIGINT NOT NULL,
            part INTEGER NOT NULL, pos BIGINT NOT NULL, score float8,
            source VARCHAR, entity VARCHAR, pending BOOLEAN NOT NULL,
            label float8, known_us BIGINT)""",
        """CREATE TABLE IF NOT EXISTS feedback (
            source VARCHAR, prediction_id VARCHAR, outcome float8 NOT NULL,
            event_us BIGINT NOT NULL, part INTEGER NOT NULL, pos BIGINT NOT NULL,
            first_us BIGINT NOT NULL, PRIMARY KEY (source, prediction_id))""",
        """CREATE TABLE IF NOT EXISTS days (
            service VARCHAR, variant VARCHAR, model VARCHAR, version INTEGER, day INTEGER,
            predictions BIGINT NOT NULL, labelled BIGINT NOT NULL, first_us BIGINT,
            last_us BIGINT, delay_median_us float8, delay_sum_us float8, positives BIGINT,
            negatives BIGINT, auc float8, log_loss_sum float8, brier_sum float8,
            correct BIGINT, squared_error_sum float8, absolute_error_sum float8,
            PRIMARY KEY (service, variant, model, version, day))""",
        """CREATE TABLE IF NOT EXISTS calibration (
            service VARCHAR, variant VARCHAR, model VARCHAR, version INTEGER, day INTEGER,
            bin INTEGER, n BIGINT NOT NULL, score_sum float8 NOT NULL,
            label_sum float8 NOT NULL,
            PRIMARY KEY (service, variant, model, version, day, bin))""",
        """CREATE TABLE IF NOT EXISTS stale (
            service VARCHAR, variant VARCHAR, model VARCHAR, version INTEGER, day INTEGER,
            PRIMARY KEY (service, variant, model, version, day))""",
    ),
    (
        # per service, feature and day of prediction: served values recomputed offline and
        # how many differed (the continuous skew check; ``checkpoints`` "skew@SERVICE" holds
        # the prediction time checked up to)
        """CREATE TABLE IF NOT EXISTS skew (
            service VARCHAR, feature VARCHAR, day INTEGER, compared BIGINT NOT NULL,
            mismatched BIGINT NOT NULL, PRIMARY KEY (service, feature, day))""",
    ),
)
POSTGRES_ONLY: dict[int, tuple[str, ...]] = {
    1: (
        "CREATE INDEX IF NOT EXISTS outcomes_by_day ON outcomes (day, prediction_id)",
        "CREATE INDEX IF NOT EXISTS outcomes_pending ON outcomes (model, ts_us) WHERE pending",
    ),
}
TABLES = (
    *("meta", "checkpoints", "log_index", "outcomes", "feedback"),
    *("days", "calibration", "stale", "skew"),
)
