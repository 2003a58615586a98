"""The root of headwater's exceptions; every subpackage raises a subclass of HeadwaterError."""


class HeadwaterError(Exception):
    """Base of every error headwater raises on purpose."""


class DefinitionError(HeadwaterError, ValueError):
    """A stream, entity or feature definition is invalid; the message says how to fix it."""


class StoreUnavailable(HeadwaterError):
    """A store the project runs on (Redis, PostgreSQL) cannot be reached; nothing was done,
    so the call can be retried once it is back."""
