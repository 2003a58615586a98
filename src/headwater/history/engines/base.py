"""The query engine port: every question asked of the offline history, in one interface.

Training sets, labels, the monitor's ground truth and feedback, and ``describe`` all ask an
engine; nothing else reads the history with SQL. DuckDB (embedded) and Spark answer it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import numpy as np
import pyarrow as pa

from headwater.definitions import FeatureColumn, Label, Stream
from headwater.features.plan import FeatureSetPlan

# A snapshot: log end offsets by ``partition_name(stream, partition)``; only the rows below
# them are seen (so a training set built again from one is the same).
Snapshot = Mapping[str, int]


class QueryEngine(Protocol):
    """Point-in-time questions over the history of the offline store it was built on.

    Contract, for every engine (``tests/contracts/test_query_engine_contract.py`` holds it):

    - ``feature_values``: one row per spine row, in order, each column's value at the row's
      time under the time semantics of docs/concepts.md (events strictly before t, windows on hop
      boundaries), over the events below ``snapshot`` when one is given.
    - ``history``: the stream's archived rows (below ``snapshot``), every column of the
      history schema, in no particular order; an empty table with that schema where nothing
      is archived.
    - ``first_seen``: per entity key tuple found in any of ``streams`` (keys as strings), the
      time of its first event, sorted by key.
    - ``label_aggregates``: per (keys, t) row, the label's aggregation over the entity's events
      in ``[t, t + horizon)`` that its ``where`` keeps (before any ``transform``).
    - ``latest``: for the wanted ids (the string form of ``id_field``), the value of ``field``
      of the latest event by (event time, partition, offset) whose field is not null, and the
      time of the first such event; ids without one are absent.
    - ``field_stats``: per field of the stream, its count of rows, of non-null values, an
      exact distinct count, min, max and (numeric fields) mean.
    """

    name: str

    def feature_values(
        self,
        plan: FeatureSetPlan,
        columns: Sequence[FeatureColumn],
        spine_keys: pa.Table,
        times: np.ndarray,
        snapshot: Snapshot | None = None,
    ) -> pa.Table: ...

    def history(self, stream: Stream, snapshot: Snapshot | None = None) -> pa.Table: ...

    def first_seen(
        self, keys: Sequence[str], streams: Sequence[Stream], snapshot: Snapshot | None
    ) -> pa.Table: ...

    def label_aggregates(
        self,
        label: Label,
        keys: pa.Table,
        times: np.ndarray,
        snapshot: Snapshot | None = None,
    ) -> pa.Array: ...

    def latest(
        self, stream: Stream, id_field: str, field: str, wanted: Sequence[str]
    ) -> dict[str, tuple[Any, int]]: ...

    def field_stats(self, stream: Stream) -> list[dict[str, Any]]: ...

    def close(self) -> None: ...
