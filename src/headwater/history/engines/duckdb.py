"""The embedded query engine: DuckDB over the offline store's files, in this process.

Feature values come from ``sql.py``'s joins, or from binary searches in the stream's sorted
copy where that gives the same values (``sorted_view.py``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa

from headwater.definitions import FeatureColumn, Label, Stream
from headwater.definitions.expr import sql_name
from headwater.features.plan import FeatureSetPlan
from headwater.history.engines.base import Snapshot
from headwater.history.engines.sorted_view import SortedView
from headwater.history.engines.sql import (
    connect,
    events_cte,
    feature_set_values,
    history_source,
    typed_aggregate_sql,
)
from headwater.history.schema import history_schema
from headwater.stores.offline.base import OfflineStore


class DuckDBEngine:
    """Answers each question on a DuckDB connection of its own (opened and closed with it),
    so one engine serves any number of threads.

    ``threads`` caps DuckDB's threads per query (None: one per core); ``sorted_history``
    lets training sets read the streams' sorted copies.
    """

    name = "duckdb"

    def __init__(
        self, offline: OfflineStore, threads: int | None = None, sorted_history: bool = True
    ) -> None:
        self.offline, self.threads, self.sorted_history = offline, threads, sorted_history

    def feature_values(
        self,
        plan: FeatureSetPlan,
        columns: Sequence[FeatureColumn],
        spine_keys: pa.Table,
        times: np.ndarray,
        snapshot: Snapshot | None = None,
    ) -> pa.Table:
        files = self.offline.files(plan.stream.name)
        with connect(self.offline, self.threads) as con:
            view = None
            if self.sorted_history:
                view = SortedView.open(con, self.offline, plan.stream, snapshot, plan.entity.keys)
            return feature_set_values(con, plan, columns, spine_keys, times, files, snapshot, view)

    def history(self, stream: Stream, snapshot: Snapshot | None = None) -> pa.Table:
        files = self.offline.files(stream.name)
        if not files:
            return history_schema(stream).empty_table()
        with connect(self.offline, self.threads) as con:
            source, params = history_source(con, stream, files, snapshot)
            return con.sql(f"SELECT * FROM {source}", params=params or None).to_arrow_table()

    def first_seen(
        self, keys: Sequence[str], streams: Sequence[Stream], snapshot: Snapshot | None
    ) -> pa.Table:
        key_list = ", ".join(sql_name(k) for k in keys)
        with connect(self.offline, self.threads) as con:
            parts, params = [], {}
            for i, stream in enumerate(streams):
                source, p = history_source(con, stream, self.offline.files(stream.name), snapshot)
                if "files" in p:
                    source = source.replace("$files", f"$files{i}")
                    params[f"files{i}"] = p["files"]
                cols = ", ".join(f"CAST({sql_name(k)} AS VARCHAR) AS {sql_name(k)}" for k in keys)
                parts.append(f"SELECT {cols}, _event_time FROM {source}")
            sql = (
                f"SELECT {key_list}, min(_event_time) AS first_seen FROM "
                f"({' UNION ALL '.join(parts)}) GROUP BY {key_list} ORDER BY {key_list}"
            )
            return con.sql(sql, params=params or None).to_arrow_table()

    def label_aggregates(
        self,
        label: Label,
        keys: pa.Table,
        times: np.ndarray,
        snapshot: Snapshot | None = None,
    ) -> pa.Array:
        times = np.asarray(times, dtype=np.int64)
        spine = {"_row": np.arange(len(times), dtype=np.int64), "_t": times}
        spine["_end"] = times + label.horizon_us
        for k in label.entity.keys:
            spine[k] = keys[k]
        parts = ["e._ts >= s._t"]
        if label.where is not None:
            parts.append(label.where.to_sql("e"))
        value = typed_aggregate_sql(label.aggregation, label.stream, " AND ".join(parts))
        field = label.aggregation.field
        fields = sorted(
            {
                *label.entity.keys,
                *([field] if field else []),
                *(label.where.fields() if label.where else ()),
            }
        )
        join = " AND ".join(f"e.{sql_name(k)} = s.{sql_name(k)}" for k in label.entity.keys)
        with connect(self.offline, self.threads) as con:
            files = self.offline.files(label.stream.name)
            source, params = history_source(con, label.stream, files, snapshot)
            sql = f"""{events_cte(fields, source)}
SELECT s._row, {value} AS label
FROM _label_spine s LEFT JOIN e ON {join} AND e._ts >= s._t AND e._ts < s._end
GROUP BY s._row ORDER BY s._row
"""
            con.register("_label_spine", pa.table(spine))
            result = con.sql(sql, params=params or None).to_arrow_table()
        return result["label"].combine_chunks()

    def latest(
        self, stream: Stream, id_field: str, field: str, wanted: Sequence[str]
    ) -> dict[str, tuple[Any, int]]:
        ids = pa.table({"_id": pa.array([str(i) for i in wanted], pa.string())})
        key, value = sql_name(id_field), sql_name(field)
        with connect(self.offline, self.threads) as con:
            source, params = history_source(con, stream, self.offline.files(stream.name), None)
            con.register("_wanted", ids)
            rows = con.sql(
                f"""SELECT CAST(e.{key} AS VARCHAR) AS id,
                           arg_max(e.{value}, (e._event_time, e._partition, e._offset)),
                           min(e._event_time)
                    FROM {source} AS e
                    WHERE e.{value} IS NOT NULL
                      AND CAST(e.{key} AS VARCHAR) IN (SELECT _id FROM _wanted)
                    GROUP BY 1""",
                params=params or None,
            ).fetchall()
        return {str(i): (v, int(t)) for i, v, t in rows}

    def field_stats(self, stream: Stream) -> list[dict[str, Any]]:
        rows = []
        with connect(self.offline, self.threads) as con:
            source, params = history_source(con, stream, self.offline.files(stream.name), None)
            for name, field in stream.fields.items():
                col = sql_name(name)
                numeric = field.dtype.value in ("int", "float", "timestamp")
                sql = (
                    f"SELECT count(*), count({col}), count(DISTINCT {col}), "
                    f"min({col}), max({col}), "
                    f"{'avg(' + col + ')' if numeric else 'NULL'} FROM {source}"
                )
                total, present, distinct, low, high, mean = con.sql(
                    sql, params=params or None
                ).fetchall()[0]
                rows.append(
                    {
                        "field": name,
                        "count": total,
                        "present": present,
                        "distinct": distinct,
                        "min": low,
                        "max": high,
                        "mean": mean,
                    }
                )
        return rows

    def close(self) -> None:
        """Nothing to release: every question closes its own connection."""
