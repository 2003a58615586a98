"""``serve``: the HTTP API, optionally with processing, stream scoring and monitoring."""

from __future__ import annotations

import errno
import logging
import socket
from pathlib import Path
from typing import Annotated

import typer

from headwater.cli.common import EnvOpt, ProjectOpt, app, err, open_project
from headwater.definitions.source import redact_url
from headwater.errors import HeadwaterError
from headwater.serving import log_format


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Default: 127.0.0.1 (loopback)")] = None,
    port: Annotated[int | None, typer.Option(help="Default: from headwater.toml, 8800")] = None,
    with_processor: Annotated[
        bool, typer.Option("--with-processor", help="Also run the stream processor in this process")
    ] = False,
    with_scoring: Annotated[
        bool, typer.Option("--with-scoring", help="Also score the trigger streams of services")
    ] = False,
    log_predictions: Annotated[
        bool,
        typer.Option("--log-predictions", help="Write one JSON log line per prediction to stderr"),
    ] = False,
    monitor_every: Annotated[
        float,
        typer.Option(help="Run the monitor every N seconds and export it on /metrics (0: off)"),
    ] = 0,
    tls_cert: Annotated[
        Path | None, typer.Option(help="Serve HTTPS with this certificate (PEM)")
    ] = None,
    tls_key: Annotated[Path | None, typer.Option(help="The certificate's private key")] = None,
    project: ProjectOpt = Path("."),
    env: EnvOpt = None,
) -> None:
    """Start the HTTP API (OpenAPI docs at /docs)."""
    log_format.configure(logging.INFO if log_predictions else logging.WARNING)
    if (tls_cert is None) != (tls_key is None):
        raise typer.BadParameter("give both --tls-cert and --tls-key", param_hint="--tls-cert")
    tls = (str(tls_cert), str(tls_key)) if tls_cert and tls_key else None
    with open_project(project, env) as p:
        server = p.settings.server

        def announce(url: str) -> None:
            auth = "API keys" if server.auth == "keys" else "off"
            where = f"project {p.settings.name!r}"
            if p.environment.declared:
                where += f", environment {p.environment.name!r}"
            err.print(f"headwater serving {where} from {p.root}")
            err.print(f"  API      {url}   (docs {url}/docs, metrics {url}/metrics)")
            err.print(f"  auth     {auth}; hosts {', '.join(server.allowed_hosts)}")
            stores = vars(p.settings.stores)
            err.print(
                "  stores   " + ", ".join(f"{k} {redact_url(u)}" for k, u in stores.items()),
                highlight=False,
            )
            extra = [
                name
                for name, on in (
                    ("processor", with_processor),
                    ("stream scoring", with_scoring),
                    (f"monitor every {monitor_every:g}s", monitor_every > 0),
                )
                if on
            ]
            if extra:
                err.print(f"  also     {', '.join(extra)}")
            if not with_processor:
                err.print(
                    "  note     no processor here: ingested events reach online features when "
                    "`headwater process` runs (or start with --with-processor)"
                )
            if server.auth != "keys":
                err.print(
                    "  [yellow]warning:[/yellow] no authentication: anyone on this machine "
                    'can call it (set \\[server] auth = "keys" to require API keys)'
                )
            err.print("ready (Ctrl+C to stop)")

        _check_free(host or server.host, port or server.port)
        p.serve(
            host,
            port,
            with_processor=with_processor,
            with_scoring=with_scoring,
            monitor_every=monitor_every,
            tls=tls,
            announce=announce,
        )


def _check_free(host: str, port: int) -> None:
    """A clear error for a port in use (often a `headwater serve` still running), before the
    project's server starts."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE:
                return  # the server reports anything else itself
            raise HeadwaterError(
                f"{host}:{port} is in use (another `headwater serve`?): stop it, or pass "
                "--port with a free port"
            ) from None
