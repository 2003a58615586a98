"""``pii``: the PII secret of a project (its policies are declared on streams)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from headwater.cli.common import EnvOpt, ProjectOpt, app, console
from headwater.project.config import (
    CONFIG_FILE,
    DEFAULT_PII_SECRET_FILE,
    ConfigError,
    add_pii_secret,
)

pii_app = typer.Typer(help="PII: the secret its policies use.", no_args_is_help=True)
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
