"""Loading a project's definitions: import its modules, collect the definitions they hold."""

from __future__ import annotations

import hashlib
import importlib.util
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from headwater.definitions import Definition, DefinitionError, Feature, Label
from headwater.definitions.collection import Definitions


def _walk(value: Any) -> Iterable[Definition]:
    if isinstance(value, Definition):
        yield value
    elif isinstance(value, list | tuple):
        for item in value:
            yield from _walk(item)
    elif isinstance(value, dict):
        for item in value.values():
            yield from _walk(item)


def collect(values: Iterable[Any]) -> Definitions:
    """Collect definitions from values (definitions, or lists and dicts of them)."""
    defs = Definitions()
    for value in values:
        for d in _walk(value):
            defs.add(d)
    for service in list(defs.services.values()):
        for variant in service.variants:
            defs.add(variant.model)
        for stream in (
            service.trigger,
            service.bandit.rewards if service.bandit else None,
            service.feedback.stream if service.feedback else None,
        ):
            if stream is not None:
                defs.add(stream)
        if service.candidates is not None:
            defs.add(service.candidates)
    for model in list(defs.models.values()):
        defs.add(model.label)
    for source in defs.sources.values():
        defs.add(source.stream)
    holders: list[Feature | Label] = [*defs.features.values(), *defs.labels.values()]
    for item in holders:
        # Features and labels hold their stream and entity; those count as declared too.
        defs.add(item.stream)
        defs.add(item.entity)
    _check_segments(defs)
    if "_dead_letter" in defs.streams:
        raise DefinitionError("stream name '_dead_letter' is reserved for headwater's own use")
    logged = defs.streams.get("predictions")
    if logged is not None and logged.unknown_fields == "reject":
        raise DefinitionError(
            "stream 'predictions' is written by serving; declare it (to compute features such "
            'as exposures from it) with unknown_fields="drop" and the fields you need'
        )
    return defs


def _check_segments(defs: Definitions) -> None:
    """Segments group people by a value that reports print: never a PII field's value, an
    entity key, or a feature that keeps a PII value."""
    pii = {f for s in defs.streams.values() for f in s.pii_fields}
    keys = {k for e in defs.entities.values() for k in e.keys}
    outputs = {c.name: f for f in defs.features.values() for c in f.columns}
    for m in defs.models.values():
        served = [s for s in defs.services.values() if any(v.model is m for v in s.variants)]
        if m.promotion.max_segment_gap is not None and not (
            m.segments or any(s.segments for s in served)
        ):
            raise DefinitionError(
                f"model {m.name!r}: the promotion policy limits the gap between segments, but "
                "neither the model nor a service of it declares segments"
            )
    owners = [(f"model {m.name!r}", m.segments) for m in defs.models.values()]
    owners += [(f"service {s.name!r}", s.segments) for s in defs.services.values()]
    for owner, segments in owners:
        for seg in segments:
            feature = outputs.get(seg.name)
            field = None if feature is None else feature.aggregation.field
            if (
                seg.name in pii
                or seg.name in keys
                or (feature is not None and field is not None and feature.stream.field(field).pii)
            ):
                raise DefinitionError(
                    f"{owner}: segment {seg.name!r} would print PII or an entity key in "
                    "reports; segment by a coarser field (a region, a plan, an age band)"
                )


def import_file(path: Path) -> Any:
    """Import a Python file under a name unique to its path."""
    digest = hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:10]
    name = f"headwater_project_{path.stem}_{digest}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise DefinitionError(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except DefinitionError:
        raise
    except Exception as exc:
        raise DefinitionError(f"importing {path} failed: {exc!r}") from exc
    return module


def load_definitions(root: Path, files: Iterable[str]) -> Definitions:
    """Import each listed definitions file of the project and collect what it declares."""
    values: list[Any] = []
    for name in files:
        path = root / name
        if path.is_dir():
            path = path / "__init__.py"
        if not path.is_file():
            raise DefinitionError(
                f"definitions file {name!r} listed in headwater.toml does not exist in {root}"
            )
        module = import_file(path)
        values += [v for k, v in vars(module).items() if not k.startswith("_")]
    return collect(values)
