"""Sources: feeding streams from database tables and landing folders, with checkpoints."""

from headwater.sources.base import PollResult, SourceError
from headwater.sources.runner import SourceRunner

__all__ = ["PollResult", "SourceError", "SourceRunner"]
