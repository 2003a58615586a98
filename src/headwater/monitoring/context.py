"""What the monitor reads and writes: the ports and services of one project it is built with."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from headwater.definitions.collection import Definitions
from headwater.history.archiver import Archiver
from headwater.history.engines.base import QueryEngine
from headwater.log.base import Log
from headwater.registry.registry import Registry
from headwater.stores.monitor.base import MonitorStore
from headwater.training.sets import TrainingSets


@dataclass(frozen=True)
class MonitorContext:
    """The monitor's dependencies, built by ``project/wiring.py``.

    ``flush_predictions`` writes the predictions this process logged but has not appended
    yet (so a monitor run counts them); ``train`` trains a model and returns the new version
    (the closed loop retrains with it); ``log_url`` identifies the log the ledger consumed;
    ``engine`` answers the labels and feedback asked of the history; ``state`` holds the
    ledger; ``min_sample`` is the fewest rows a window needs for drift to warn or alert.
    """

    definitions: Definitions
    log: Log
    log_url: str
    engine: QueryEngine
    archiver: Archiver
    training: TrainingSets
    registry: Registry
    clock: Callable[[], int]
    state: MonitorStore
    flush_predictions: Callable[[], None]
    train: Callable[[str], int]
    min_sample: int = 100
