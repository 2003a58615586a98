"""The UI's pages, one module per page family; each page is a list of panels."""

from headwater.ui.page import NotFound
from headwater.ui.pages.features import feature, features
from headwater.ui.pages.lineage import lineage
from headwater.ui.pages.models import compare, model, models
from headwater.ui.pages.monitoring import monitored, monitoring
from headwater.ui.pages.overview import overview
from headwater.ui.pages.services import service, services
from headwater.ui.pages.streams import stream, streams

__all__ = [
    "NotFound",
    "compare",
    "feature",
    "features",
    "lineage",
    "model",
    "models",
    "monitored",
    "monitoring",
    "overview",
    "service",
    "services",
    "stream",
    "streams",
]
