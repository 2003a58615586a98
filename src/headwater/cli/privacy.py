"""``pii``: the PII secret of a project (its policies are declared on streams)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from headwater.cli.common import EnvOpt, ProjectOpt, app, console, iso, open_project
from headwater.project.config import (
    CONFIG_FILE,
    DEFAULT_PII_SECRET_FILE,
    ConfigError,
    add_pii_secret,
)

pii_app = typer.Typer(
    help="PII: the secret its policies use, encrypted values revealed, entities erased.",
    no_args_is_help=True,
)
app.add_typer(pii_app, name="pii")


@pii_app.command("init-secret")
def init_secret(
    file: Annotated[
        str | None,
        typer.Option(
            help=f"Where, relative to the project folder (or absolute); default "
            f"{DEFAULT_PII_SECRET_FILE}, or .headwater/ENV.pii.secret in an environment"
        ),
    ] = None,
    project: ProjectOpt = Path("."),
    env: EnvOpt = None,
) -> None:
    """Create a random PII secret in a file only you can read (mode 600) and name it in
    headwater.toml ([pii] secret_file, or [environments.ENV.pii] secret_file: each environment
    its own). An existing secret is never replaced: pseudonyms made with it would no longer
    match."""
    try:
        target = add_pii_secret(project, file, env)
    except ConfigError as exc:  # one already: a usage error
        raise typer.BadParameter(str(exc), param_hint="--file") from None
    console.print(f"created {target} (mode 600) and named it in {CONFIG_FILE}")
    console.print("keep it out of version control, and back it up: pseudonyms depend on it")


@pii_app.command("reveal")
def reveal(
    stream: Annotated[str, typer.Argument(help="A stream with encrypted fields")],
    key: Annotated[str, typer.Argument(help="The entity's key value (the stream's first key)")],
    n: Annotated[int, typer.Option("-n", min=1, help="Its latest events, at most")] = 20,
    project: ProjectOpt = Path("."),
    env: EnvOpt = None,
) -> None:
    """The latest events of one entity with their encrypted fields decrypted (needs the PII
    secret; recorded in the audit stream). Erased values read as (erased)."""
    with open_project(project, env) as p:
        events = p.reveal(stream, key, n)
        policies = p.definitions.streams[stream].pii_policies
        encrypted = [f for f, policy in policies.items() if policy == "encrypt"]
    if not events:
        console.print(f"no events of {key!r} in {stream}")
        return
    table = Table("event id", "time", *encrypted)
    for event in events:
        shown = ["(erased)" if event.get(f) is None else str(event[f]) for f in encrypted]
        table.add_row(event["_event_id"], iso(event["_event_time"]), *shown)
    console.print(table)


@pii_app.command("erase")
def erase(
    entity: Annotated[str, typer.Argument(help="The entity, e.g. user")],
    key: Annotated[str, typer.Argument(help="Its key value, e.g. u42")],
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation")] = False,
    project: ProjectOpt = Path("."),
    env: EnvOpt = None,
) -> None:
    """Erase one entity for good: delete its data keys (its encrypted fields become
    unreadable everywhere) and its online state; says what the log keeps."""
    if not yes:
        typer.confirm(f"erase {entity} {key!r}? This cannot be undone", abort=True)
    with open_project(project, env) as p:
        done = p.erase(entity, key)
    if done.streams:
        state = "deleted" if done.data_keys else "none found (nothing was encrypted for it)"
        console.print(
            f"data key of {entity} {key!r}: {state}; its encrypted fields in "
            f"{', '.join(done.streams)} are unreadable now"
        )
    else:
        console.print(f"no stream encrypts fields of {entity}: no data key to delete")
    console.print(f"online state: {done.states} feature set state(s) deleted")
    if done.composite:
        console.print(
            f"not erased: the states of {len(done.composite)} feature set(s) of entities with "
            f"composite keys including {done.field} (they are not found by {done.field} alone)"
        )
    console.print(done.retained())
