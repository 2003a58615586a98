"""``serve``: the HTTP API, optionally with processing, stream scoring and monitoring."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer

from headwater.cli.common import ProjectOpt, app, err, open_project
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
) -> None:
    """Start the HTTP API (OpenAPI docs at /docs)."""
    log_format.configure(logging.INFO if log_predictions else logging.WARNING)
    if (tls_cert is None) != (tls_key is None):
        raise typer.BadParameter("give both --tls-cert and --tls-key", param_hint="--tls-cert")
    tls = (str(tls_cert), str(tls_key)) if tls_cert and tls_key else None
    with open_project(project) as p:
        server = p.settings.server

        def announce(url: str) -> None:
            auth = "API keys" if server.auth == "keys" else "off"
            err.print(f"headwater serving project {p.settings.name!r} from {p.root}")
            err.print(f"  API      {url}/v1/   (docs {url}/docs, metrics {url}/metrics)")
            err.print(f"  auth     {auth}; hosts {', '.join(server.allowed_hosts)}")
            if server.auth != "keys":
                err.print(
                    "  [yellow]warning:[/yellow] no authentication: anyone on this machine "
                    'can call it (set \\[server] auth = "keys" to require API keys)'
                )
            err.print("ready (Ctrl+C to stop)")

        p.serve(
            host,
            port,
            with_processor=with_processor,
            with_scoring=with_scoring,
            monitor_every=monitor_every,
            tls=tls,
            announce=announce,
        )
