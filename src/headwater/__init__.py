"""headwater: raw events in; features, training sets, models and predictions out."""

from headwater.client import Client
from headwater.definitions import (
    Aggregation,
    Bandit,
    ChangeSource,
    DefinitionError,
    Derived,
    Entity,
    Expectation,
    Feature,
    Feedback,
    FolderSource,
    HeadwaterError,
    Label,
    Model,
    PromotionPolicy,
    RetrainPolicy,
    Service,
    Stream,
    TableSource,
    Variant,
    col,
)
from headwater.definitions import aggregation as agg
from headwater.definitions.aggregation import (
    count,
    count_distinct,
    first,
    last,
    last_k,
    mean,
    stddev,
    variance,
)
from headwater.project.project import Project

__version__ = "0.1.0"

__all__ = [
    "Client",
    "Aggregation",
    "Bandit",
    "DefinitionError",
    "Derived",
    "Entity",
    "Expectation",
    "Feature",
    "Feedback",
    "ChangeSource",
    "FolderSource",
    "HeadwaterError",
    "Label",
    "Model",
    "PromotionPolicy",
    "RetrainPolicy",
    "Project",
    "Service",
    "Stream",
    "TableSource",
    "Variant",
    "agg",
    "col",
    "count",
    "count_distinct",
    "first",
    "last",
    "last_k",
    "mean",
    "stddev",
    "variance",
]
