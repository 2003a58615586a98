"""``pii``: the PII secret of a project (its policies are declared on streams)."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Annotated

import typer

from headwater.cli.common import ProjectOpt, app, console
from headwater.privacy.policies import create_secret_file
from headwater.project.config import CONFIG_FILE, load_settings

pii_app = typer.Typer(help="PII: the secret its policies use.", no_args_is_help=True)
app.add_typer(pii_app, name="pii")

DEFAULT_FILE = ".headwater/pii.secret"


@pii_app.command("init-secret")
def init_secret(
    file: Annotated[
        str, typer.Option(help="Where, relative to the project folder (or absolute)")
    ] = DEFAULT_FILE,
    project: ProjectOpt = Path("."),
) -> None:
    """Create a random PII secret in a file only you can read (mode 600) and name it in
    headwater.toml ([pii] secret_file). An existing secret is never replaced: pseudonyms made
    with it would no longer match."""
    settings = load_settings(project)
    if settings.pii_secret_file is not None:
        raise typer.BadParameter(
            f"{CONFIG_FILE} already names {settings.pii_secret_file}", param_hint="--file"
        )
    path = Path(file).expanduser()
    target = path if path.is_absolute() else settings.root / path
    if target.exists():
        raise typer.BadParameter(f"{target} exists; it is never replaced", param_hint="--file")
    create_secret_file(target)
    config = settings.root / CONFIG_FILE
    text = config.read_text()
    addition = f"\n[pii]\nsecret_file = {tomllib_string(str(path))}\n"
    config.write_text(text + ("" if text.endswith("\n") else "\n") + addition)
    console.print(f"created {target} (mode 600) and named it in {config}")
    console.print("keep it out of version control, and back it up: pseudonyms depend on it")


def tomllib_string(value: str) -> str:
    """A TOML basic string (JSON's quoting is TOML's).

    >>> tomllib_string('.headwater/pii.secret')
    '".headwater/pii.secret"'
    """
    import json

    quoted = json.dumps(value)
    tomllib.loads(f"x = {quoted}")
    return quoted
