"""Model artifacts: the fitted estimator (joblib), its input signature, LightGBM's own model."""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pandas as pd

from headwater.errors import HeadwaterError
from headwater.stores.artifacts.base import ArtifactError, ArtifactStore


class FeatureTypeError(HeadwaterError, TypeError):
    """A model feature has a type no estimator can take (e.g. a list)."""


@dataclass
class Signature:
    """The inputs a model expects, in order, and how raw feature values become a matrix."""

    features: list[str]
    task: str
    categories: dict[str, list[str]] = field(default_factory=dict)

    def matrix(self, frame: pd.DataFrame) -> pd.DataFrame:
        """The model's input matrix: numbers as float, strings as fixed categories."""
        out = {}
        for name in self.features:
            column = frame[name]
            if name in self.categories:
                known = self.categories[name]
                values = column.astype(object)
                out[name] = pd.Categorical(
                    # a value never seen in training is missing, as LightGBM would treat it
                    values.where(values.isin(known), None),
                    categories=known,
                )
            else:
                out[name] = pd.to_numeric(column, errors="raise").astype(float)
        return pd.DataFrame(out, index=frame.index)

    @classmethod
    def infer(cls, frame: pd.DataFrame, features: list[str], task: str) -> Signature:
        categories = {}
        for name in features:
            column = frame[name]
            sample = column.dropna()
            if len(sample) and isinstance(sample.iloc[0], list | np.ndarray):
                raise FeatureTypeError(
                    f"feature {name!r} holds lists; models take numbers, booleans or strings"
                )
            if column.dtype == object or pd.api.types.is_string_dtype(column):
                categories[name] = sorted(str(v) for v in sample.unique())
        return cls(list(features), task, categories)


def save(store: ArtifactStore, prefix: str, estimator: Any, signature: Signature) -> dict[str, str]:
    """Put a fitted estimator (joblib), its signature and LightGBM's own text model (readable
    without Python) under ``prefix``; the names of what was put, by kind. Each file appears
    whole; the version that names them is registered only after the last one."""
    names = {"estimator": f"{prefix}/model.joblib", "signature": f"{prefix}/signature.json"}
    buffer = io.BytesIO()
    joblib.dump(estimator, buffer)
    store.put(names["estimator"], buffer.getvalue())
    store.put(names["signature"], json.dumps(vars(signature), indent=2).encode())
    booster = getattr(estimator, "booster_", None)
    if booster is not None:
        names["lightgbm"] = f"{prefix}/model.txt"
        store.put(names["lightgbm"], booster.model_to_string().encode())
    return names


def read(
    names: dict[str, str], kind: str, store: ArtifactStore | None, legacy: Path | None = None
) -> bytes:
    """The bytes of one artifact of a version (``kind``: estimator, signature, lightgbm).

    Versions registered by headwater 0.1.0 recorded absolute paths; one under another
    folder's ``.headwater/artifacts`` (the project was moved or copied since) is read from
    the same place under ``legacy``, the project's own artifacts folder."""
    recorded = names[kind]
    if Path(recorded).is_absolute():
        return _locate(recorded, legacy).read_bytes()
    if store is None:
        raise ArtifactError(f"artifact {recorded!r} needs the project's artifacts store")
    return store.get(recorded)


def load(
    names: dict[str, str], store: ArtifactStore | None = None, legacy: Path | None = None
) -> tuple[Any, Signature]:
    """The estimator and signature of a version's artifacts."""
    signature = Signature(**json.loads(read(names, "signature", store, legacy)))
    return joblib.load(io.BytesIO(read(names, "estimator", store, legacy))), signature


def _locate(recorded: str, folder: Path | None) -> Path:
    path = Path(recorded)
    if folder is None or path.exists():
        return path
    parts = path.parts
    for i in range(len(parts) - 1, 0, -1):
        if parts[i - 1 : i + 1] == (".headwater", "artifacts"):
            moved = folder.joinpath(*parts[i + 1 :])
            return moved if moved.exists() else path
    return path
