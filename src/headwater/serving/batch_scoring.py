"""Batch scoring of a service's entities as of a time: the function behind ``headwater score``
and scheduled scoring (``Service(batch_schedule=...)`` with ``headwater scheduler``)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import pandas as pd

from headwater.serving.runtime import Serving

CHUNK = 50_000


def score_entities(
    serving: Serving,
    service: str,
    when: datetime,
    entities: pd.DataFrame | None = None,
    progress: Callable[[int], None] | None = None,
) -> pd.DataFrame:
    """Score ``entities`` (keys, optionally a ``timestamp`` each; default: every entity of the
    service, as of ``when``) in chunks through the batch path; every prediction is logged."""
    s = serving.service(service)
    table = serving.entities(s.entity) if entities is None else entities.copy()
    if "timestamp" not in table.columns:
        table["timestamp"] = pd.Timestamp(when)
    parts = []
    for i in range(0, len(table), CHUNK):
        parts.append(serving.score_batch(service, table.iloc[i : i + CHUNK]))
        if progress is not None:
            progress(len(parts[-1]))
    if not parts:
        return pd.DataFrame(columns=[*s.entity.keys, "timestamp", "prediction_id", "score"])
    return pd.concat(parts, ignore_index=True)


def write_scores(result: pd.DataFrame, out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    if out.suffix == ".csv":
        result.to_csv(tmp, index=False)
    else:
        result.to_parquet(tmp, index=False)
    tmp.replace(out)  # readers never see half a file
