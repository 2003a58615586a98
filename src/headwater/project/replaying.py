"""A replay between two opened projects (two environments of one project, or of two projects
with the same streams): every refusal is made here, before anything is written."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from urllib.parse import urlparse

from headwater.definitions import Stream
from headwater.environments.replay import BATCH, Replay, ReplayError, ReplayOptions
from headwater.log.base import Log
from headwater.privacy.policies import PiiSecret, load_secret, secret_variable
from headwater.project.config import Settings
from headwater.stores.metadata.base import MetadataStore
from headwater.stores.urls import local_path


@dataclass(frozen=True)
class Side:
    """What a replay uses of one opened project: its settings, streams, log, metadata and
    clock."""

    settings: Settings
    streams: Mapping[str, Stream]
    log: Log
    metadata: MetadataStore
    clock: Callable[[], int]


def _where(settings: Settings) -> str:
    """The log a project's environment writes to, comparable between two projects."""
    url = settings.stores.log
    if urlparse(url).scheme == "sqlite":
        return f"sqlite:{local_path(url, settings.root).resolve()}"
    return url


def _secret_of(settings: Settings) -> PiiSecret | None:
    """The target environment's PII secret as it is now (read when the replay opens)."""
    return load_secret(os.environ, settings.pii_secret_file, settings.environment.own)


def open_replay(
    source: Side,
    target: Side,
    *,
    streams: Sequence[str] | None = None,
    include_internal: bool = False,
    options: ReplayOptions | None = None,
    append: bool = False,
    batch: int = BATCH,
) -> Replay:
    """The replay of ``source``'s log into ``target``'s: the declared streams (or
    ``streams``), and with ``include_internal`` the platform's own (predictions, alerts, ...).
    Refused with what to do: a replay into its own log, streams the two define differently
    or one of them lacks, ``--rekey`` (or PII streams) without the target's PII secret, a
    target holding other events without ``append``, a resumed replay with other options."""
    options = options or ReplayOptions()
    if _where(source.settings) == _where(target.settings):
        raise ReplayError(
            f"the source and the target are the same log ({source.settings.stores.log}); "
            "replay into another environment (--to)"
        )
    declared = source.streams
    chosen = list(streams) if streams else list(declared)
    unknown = [s for s in chosen if s not in declared]
    if unknown:
        raise ReplayError(
            f"no stream {unknown[0]!r} in the source's definitions (it has {', '.join(declared)})"
        )
    theirs = target.streams
    for name in chosen:
        if name not in theirs:
            raise ReplayError(
                f"the target defines no stream {name!r}: replay between projects with the "
                "same definitions of the streams copied (or name the others with --streams)"
            )
        if theirs[name].version != declared[name].version:
            raise ReplayError(
                f"the stream {name!r} is defined differently in the source and the target "
                f"(versions {declared[name].version} and {theirs[name].version}): give both "
                "the same definitions first"
            )
    copied: dict[str, Stream | None] = {name: declared[name] for name in chosen}
    if include_internal:
        for name in source.log.streams():
            if name not in declared:
                copied[name] = None
    secret = _secret_of(target.settings)
    needing = sorted(n for n, s in copied.items() if s is not None and s.pii_policies)
    if secret is None and (options.rekey or needing):
        env = target.settings.environment
        variable = secret_variable(env.own)
        what = "--rekey" if options.rekey else f"the PII streams {', '.join(needing)}"
        raise ReplayError(
            f"{what} need the target's PII secret: set ${variable}, or create one with "
            f"`headwater pii init-secret --env {env.name}`"
        )
    replay = Replay(
        source.log,
        target.log,
        target.metadata,
        copied,
        origin=f"{source.settings.name}:{source.settings.environment.name}",
        options=options,
        target_secret=secret,
        clock=target.clock,
        batch=batch,
    )
    replay.check(append)
    return replay
