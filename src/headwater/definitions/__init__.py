"""Declarative definitions: streams, entities, features. Imports nothing else of headwater."""

from headwater.definitions import aggregation
from headwater.definitions.aggregation import Aggregation
from headwater.definitions.base import Definition
from headwater.definitions.entity import Entity
from headwater.definitions.expr import Expr, col
from headwater.definitions.feature import Derived, Feature, FeatureColumn
from headwater.definitions.model import Expectation, Label, Model, PromotionPolicy, RetrainPolicy
from headwater.definitions.service import Bandit, Feedback, Service, Variant
from headwater.definitions.source import ChangeSource, FolderSource, Source, TableSource
from headwater.definitions.stream import Stream
from headwater.definitions.training import Choice, Float, Int, Search, Segment, Step, step
from headwater.definitions.types import DType, Field
from headwater.errors import DefinitionError, HeadwaterError

__all__ = [
    "Choice",
    "Float",
    "Int",
    "Search",
    "Segment",
    "Step",
    "step",
    "Aggregation",
    "Bandit",
    "DType",
    "Definition",
    "DefinitionError",
    "Derived",
    "Entity",
    "Expectation",
    "Expr",
    "Feature",
    "Feedback",
    "FeatureColumn",
    "Field",
    "ChangeSource",
    "FolderSource",
    "HeadwaterError",
    "Label",
    "Model",
    "PromotionPolicy",
    "RetrainPolicy",
    "Service",
    "Source",
    "Stream",
    "TableSource",
    "Variant",
    "aggregation",
    "col",
]
