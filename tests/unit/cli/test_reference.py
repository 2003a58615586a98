"""The CLI's help and its generated reference, docs/cli.md."""

from __future__ import annotations

from pathlib import Path

import typer
from typer.testing import CliRunner

from headwater.cli import app
from headwater.cli.reference import _walk, render

DOCS = Path(__file__).parents[3] / "docs" / "cli.md"


def test_docs_cli_md_is_the_cli_s_own_help():
    assert DOCS.read_text() == render(), (
        "docs/cli.md is out of date: python -m headwater.cli.reference > docs/cli.md"
    )


def test_every_command_is_in_the_reference_and_no_help_shows_bool_metavars():
    text = render()
    commands = _walk((typer.main.get_command(app),), ("headwater",))
    assert len(commands) > 30
    for path, _ in commands:
        assert f"## `{' '.join(path)}`" in text
    assert "<bool>" not in text
    assert "--help" in text


def test_version():
    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.output.startswith("headwater 0.")


def test_a_malformed_entity_key_is_a_usage_error(tmp_path):
    result = CliRunner().invoke(app, ["features", "user_id", "-f", "x", "-p", str(tmp_path)])
    assert result.exit_code == 2
    assert "is not KEY=VALUE" in result.output


def test_serve_on_a_port_in_use_says_so_and_what_to_do(tmp_path):
    import socket

    from tests.conftest import write_project

    folder = write_project(tmp_path / "p", "")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = CliRunner().invoke(
            app, ["serve", "--port", str(port), "-p", str(folder)], standalone_mode=False
        )
    # a HeadwaterError: the entry point prints it as "error: ..." and exits with 1
    assert result.exception is not None
    assert f"127.0.0.1:{port} is in use" in str(result.exception)
    assert "--port" in str(result.exception)


def test_list_shows_what_the_project_defines_by_kind_and_team(tmp_path):
    cli = CliRunner()
    folder = tmp_path / "shop"
    assert cli.invoke(app, ["init", str(folder)]).exit_code == 0
    every = cli.invoke(app, ["list", "-p", str(folder)])
    assert every.exit_code == 0, every.output
    for title in ("7 streams", "features", "2 labels", "2 models", "2 services"):
        assert title in every.output
    assert "email (pseudonymize)" in every.output  # the PII policy of signups
    payments = cli.invoke(
        app, ["list", "features", "--team", "payments@shop.example", "-p", str(folder)]
    )
    assert "spend" in payments.output and "sessions" not in payments.output
    assert "derived from refunds_30d, orders_30d" in payments.output
    wrong = cli.invoke(app, ["list", "nope", "-p", str(folder)])
    assert wrong.exit_code == 2 and "not one of streams" in wrong.output
