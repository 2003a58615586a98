"""Every definition of a project, by kind and name (what a project's modules declare)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, TypeVar

from headwater.definitions.base import Definition
from headwater.definitions.entity import Entity
from headwater.definitions.feature import Derived, Feature
from headwater.definitions.model import Label, Model
from headwater.definitions.service import Service
from headwater.definitions.source import ChangeSource, FolderSource, Source, TableSource
from headwater.definitions.stream import Stream
from headwater.errors import DefinitionError, did_you_mean

T = TypeVar("T")


@dataclass
class Definitions:
    """Every definition of a project, by kind and name."""

    streams: dict[str, Stream] = field(default_factory=dict)
    entities: dict[str, Entity] = field(default_factory=dict)
    features: dict[str, Feature] = field(default_factory=dict)
    derived: dict[str, Derived] = field(default_factory=dict)
    labels: dict[str, Label] = field(default_factory=dict)
    models: dict[str, Model] = field(default_factory=dict)
    services: dict[str, Service] = field(default_factory=dict)
    sources: dict[str, Source] = field(default_factory=dict)

    def model(self, name: str) -> Model:
        """The model named ``name``; a clear error naming the closest one otherwise."""
        return _named("model", self.models, name)

    def service(self, name: str) -> Service:
        """The service named ``name``; a clear error naming the closest one otherwise."""
        return _named("service", self.services, name)

    def all(self) -> list[Definition]:
        return [
            *self.streams.values(),
            *self.entities.values(),
            *self.features.values(),
            *self.derived.values(),
            *self.labels.values(),
            *self.models.values(),
            *self.services.values(),
            *self.sources.values(),
        ]

    def add(self, definition: Definition) -> None:
        tables: dict[type, dict[str, Any]] = {
            Stream: self.streams,
            Entity: self.entities,
            Feature: self.features,
            Derived: self.derived,
            Label: self.labels,
            Model: self.models,
            Service: self.services,
            TableSource: self.sources,
            FolderSource: self.sources,
            ChangeSource: self.sources,
        }
        table = tables[type(definition)]
        existing = table.get(definition.name)
        if existing is definition:
            return
        if existing is not None:
            raise DefinitionError(f"two {definition.kind}s are named {definition.name!r}")
        table[definition.name] = definition


def _named(kind: str, table: dict[str, T], name: str) -> T:
    try:
        return table[name]
    except KeyError:
        raise DefinitionError(
            f"unknown {kind} {name!r}" + did_you_mean(name, list(table))
        ) from None
