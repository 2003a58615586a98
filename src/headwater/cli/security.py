"""``keys``, ``audit`` and ``alerts``: API keys of teams, the audit stream, monitoring alerts."""

from __future__ import annotations

import getpass
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from headwater.cli.common import (
    EnvOpt,
    ProjectOpt,
    app,
    console,
    err,
    iso,
    open_project,
    time_option,
)
from headwater.definitions.windows import parse_duration
from headwater.security.scopes import GRAMMAR

keys_app = typer.Typer(
    help="API keys of teams: create (the secret is shown once), list, revoke.",
    no_args_is_help=True,
)
app.add_typer(keys_app, name="keys")


@keys_app.command("create")
def keys_create(
    team: Annotated[str | None, typer.Option(help="The owning team (a definition's owner)")] = None,
    scope: Annotated[
        list[str] | None, typer.Option("--scope", "-s", help=f"Repeatable: {GRAMMAR}")
    ] = None,
    admin: Annotated[
        bool, typer.Option("--admin", help="An admin key (every scope); team defaults to admin")
    ] = False,
    expires: Annotated[
        str | None, typer.Option(help="Lifetime, e.g. 90d or 12h (default: no expiry)")
    ] = None,
    description: Annotated[str, typer.Option(help="What the key is for")] = "",
    project: ProjectOpt = Path("."),
    env: EnvOpt = None,
) -> None:
    """Create an API key; prints its secret once (only a SHA-256 digest is stored).

    Needs no server and no key: whoever can open the project's metadata store may create keys,
    which is how the first admin key is made."""
    scopes = list(scope or [])
    if admin:
        scopes = ["admin", *scopes]
        team = team or "admin"
    if team is None:
        raise typer.BadParameter("give --team (or --admin)", param_hint="--team")
    if not scopes:
        raise typer.BadParameter(f"give at least one --scope: {GRAMMAR}", param_hint="--scope")
    with open_project(project, env) as p:
        expires_us = None if expires is None else p.now() + parse_duration(expires)
        key, secret = p.create_key(
            team, scopes, expires_us=expires_us, by=getpass.getuser(), description=description
        )
    err.print(
        f"created key {key.id} of team {key.team!r}: {', '.join(map(str, key.scopes))}"
        + (f", expires {iso(key.expires_us)}" if key.expires_us else "")
    )
    err.print("the secret is shown only now; keep it (e.g. export HEADWATER_API_KEY=...):")
    typer.echo(secret)


@keys_app.command("list")
def keys_list(
    team: Annotated[str | None, typer.Option(help="Only this team's keys")] = None,
    project: ProjectOpt = Path("."),
    env: EnvOpt = None,
) -> None:
    """Every key: id, team, scopes, state and dates (never a secret)."""
    with open_project(project, env) as p:
        keys, now = p.access.keys.list(), p.now()
    if team is not None:
        keys = [k for k in keys if k.team == team]
    table = Table("id", "team", "scopes", "state", "created", "by", "expires", "description")
    for k in keys:
        table.add_row(
            k.id,
            k.team,
            " ".join(map(str, k.scopes)),
            k.state(now),
            iso(k.created_us),
            k.created_by,
            iso(k.expires_us),
            k.description,
        )
    console.print(table)


@keys_app.command("revoke")
def keys_revoke(
    key_id: Annotated[str, typer.Argument(help="The key's id (see `headwater keys list`)")],
    project: ProjectOpt = Path("."),
    env: EnvOpt = None,
) -> None:
    """Revoke a key: every server and replica refuses it within 5 seconds."""
    with open_project(project, env) as p:
        key = p.revoke_key(key_id, by=getpass.getuser())
    console.print(f"revoked key {key.id} of team {key.team!r} at {iso(key.revoked_us)}")


@app.command()
def audit(
    since: Annotated[str | None, typer.Option(help="ISO 8601 time or epoch seconds")] = None,
    team: Annotated[str | None, typer.Option(help="Only this team's records")] = None,
    project: ProjectOpt = Path("."),
    env: EnvOpt = None,
) -> None:
    """The audit stream: every write through the server and every key change."""
    since_us = None if since is None else time_option(since, "--since")
    with open_project(project, env) as p:
        records = list(p.audit_log.read(since_us, team))
    table = Table("time", "key", "team", "action", "target", "result", "counts")
    for r in records:
        counts = " ".join(f"{k}={v}" for k, v in r.counts.items())
        table.add_row(iso(r.at_us), r.key_id, r.team, r.action, r.target, r.result, counts)
    console.print(table)
    console.print(f"{len(records)} records")


alerts_app = typer.Typer(help="Monitoring alerts: list, acknowledge.", no_args_is_help=True)
app.add_typer(alerts_app, name="alerts")


@alerts_app.command("list")
def alerts_list(
    open_only: Annotated[bool, typer.Option("--open", help="Only unacknowledged alerts")] = False,
    project: ProjectOpt = Path("."),
    env: EnvOpt = None,
) -> None:
    """Alerts the monitor raised, newest last, with who acknowledged them."""
    with open_project(project, env) as p:
        alerts = p.alerts.list(open_only)
    table = Table("id", "time", "kind", "level", "service", "version", "column", "ack")
    for a in alerts:
        b = a.body
        ack = f"{a.ack['by']} {iso(a.ack['at_us'])}" if a.ack else "-"
        table.add_row(
            a.id,
            iso(a.at_us),
            str(b.get("kind", "")),
            str(b.get("level", "")),
            str(b.get("service", "")),
            str(b.get("model_version", "")),
            str(b.get("column", "")),
            ack,
        )
    console.print(table)


@alerts_app.command("ack")
def alerts_ack(
    alert_id: Annotated[str, typer.Argument(help="The alert's id (see `headwater alerts list`)")],
    reason: Annotated[str, typer.Option(help="What was done about it")] = "",
    project: ProjectOpt = Path("."),
    env: EnvOpt = None,
) -> None:
    """Acknowledge an alert."""
    user = getpass.getuser()
    with open_project(project, env) as p:
        p.alerts.ack(alert_id, user, "local", reason)
        p.audit_log.record("-", user, "alert.ack", alert_id)
    console.print(f"acknowledged alert {alert_id}")
