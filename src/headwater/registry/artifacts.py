"""Model artifacts: the fitted estimator (joblib), its input signature, LightGBM's own model."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pandas as pd

from headwater.errors import HeadwaterError


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


def save(folder: Path, estimator: Any, signature: Signature) -> dict[str, str]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = {"estimator": str(folder / "model.joblib"), "signature": str(folder / "signature.json")}
    joblib.dump(estimator, paths["estimator"])
    Path(paths["signature"]).write_text(json.dumps(vars(signature), indent=2))
    booster = getattr(estimator, "booster_", None)
    if booster is not None:  # LightGBM's own text format, readable without Python
        paths["lightgbm"] = str(folder / "model.txt")
        booster.save_model(paths["lightgbm"])
    return paths


def load(paths: dict[str, str], folder: Path | None = None) -> tuple[Any, Signature]:
    """The estimator and signature saved at ``paths``. ``folder`` is the project's artifacts
    folder: a path recorded under another folder's ``.headwater/artifacts`` (the project was
    moved or copied since) is read from the same place under ``folder``."""
    signature = Signature(**json.loads(_locate(paths["signature"], folder).read_text()))
    return joblib.load(_locate(paths["estimator"], folder)), signature


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
