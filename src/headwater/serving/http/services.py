"""What the HTTP routes serve from: the services of one project, kept in the app's state."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from headwater.ingestion.service import Ingestor, IngestResult
from headwater.log.base import Log
from headwater.serving.runtime import Serving
from headwater.streaming.online import OnlineFeatures
from headwater.streaming.processor import Processor


@dataclass(frozen=True)
class HttpServices:
    """The routes' dependencies (``app.state.services``), built by ``project/wiring.py``.

    ``ingest`` validates and appends a batch (chunked, as the SDK does); ``ingestor`` names
    the streams (a 404 before any work); ``serving_of`` gives the serving runtime, built at
    the first prediction (its logger thread and loaded models cost nothing until then).
    """

    name: str
    max_request_bytes: int
    max_events_per_request: int
    ingestor: Ingestor
    ingest: Callable[[str, list[Any]], IngestResult]
    online: OnlineFeatures
    serving_of: Callable[[], Serving]
    processor: Processor
    log: Log
    clock: Callable[[], int]

    @property
    def serving(self) -> Serving:
        return self.serving_of()
