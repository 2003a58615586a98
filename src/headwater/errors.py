"""The root of headwater's exceptions; every subpackage raises a subclass of HeadwaterError."""

from __future__ import annotations

import difflib
from collections.abc import Sequence


class HeadwaterError(Exception):
    """Base of every error headwater raises on purpose."""


class DefinitionError(HeadwaterError, ValueError):
    """A stream, entity or feature definition is invalid; the message says how to fix it."""


class NotFoundError(HeadwaterError, LookupError):
    """What a request names does not exist (an alert, a key); HTTP answers 404."""


class StoreUnavailable(HeadwaterError):
    """A store the project runs on (Redis, PostgreSQL) cannot be reached; nothing was done,
    so the call can be retried once it is back."""


def did_you_mean(name: str, choices: Sequence[str]) -> str:
    """The end of a message naming the closest of ``choices`` to a misspelt ``name``.

    >>> "unknown field 'amout'" + did_you_mean("amout", ["amount", "status"])
    "unknown field 'amout'; did you mean 'amount'?"
    """
    close = difflib.get_close_matches(name, list(choices), n=1)
    return f"; did you mean {close[0]!r}?" if close else ""
