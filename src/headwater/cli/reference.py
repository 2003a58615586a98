"""The CLI reference, ``docs/cli.md``, generated from the commands themselves:
``python -m headwater.cli.reference > docs/cli.md`` (a test checks that it is current)."""

from __future__ import annotations

from typing import Any

import typer

from headwater.cli import app

WIDTH = 100


def render() -> str:
    """Every command's ``--help``, in the order ``headwater --help`` lists them."""
    root = typer.main.get_command(app)
    parts = [
        "# CLI reference\n\n",
        "Generated from the commands' own help by `python -m headwater.cli.reference > "
        "docs/cli.md`; `tests/unit/cli/test_reference.py` fails when it is out of date. "
        "The commands that work on a project take `--project/-p` (or `HEADWATER_PROJECT`) for "
        "its folder and `--env/-e` (or `HEADWATER_ENV`) for its environment "
        "([environments](environments.md)).\n",
    ]
    for path, chain in _walk((root,), ("headwater",)):
        name = " ".join(path)
        parts.append(f"\n## `{name}`\n\n```text\n{_help(chain, path)}```\n")
    return "".join(parts)


# typer carries its own copy of click: contexts are built with each command's own class.


def _walk(chain: tuple[Any, ...], path: tuple[str, ...]) -> list[tuple[tuple[str, ...], Any]]:
    """(path, the commands from the root to it) for a command and everything below it."""
    command = chain[-1]
    found = [(path, chain)]
    if hasattr(command, "list_commands"):  # a group
        ctx = command.context_class(command, info_name=path[-1])
        for name in command.list_commands(ctx):
            sub = command.get_command(ctx, name)
            if sub is not None and not sub.hidden:
                found += _walk((*chain, sub), (*path, name))
    return found


def _help(chain: tuple[Any, ...], path: tuple[str, ...]) -> str:
    ctx = None
    for command, name in zip(chain, path, strict=True):
        ctx = command.context_class(
            command, info_name=name, parent=ctx, terminal_width=WIDTH, max_content_width=WIDTH
        )
    assert ctx is not None
    command = chain[-1]
    text = command.get_help(ctx)
    return "\n".join(line.rstrip() for line in text.splitlines()) + "\n"


if __name__ == "__main__":
    print(render(), end="")
