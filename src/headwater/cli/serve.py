"""``serve``: the HTTP API, optionally with processing, stream scoring and monitoring."""

from __future__ import annotations

import errno
import html
import logging
import re
import socket
import webbrowser
from pathlib import Path
from typing import Annotated

import httpx
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
    grpc_port: Annotated[
        int | None,
        typer.Option(help="Also serve gRPC (Open Inference Protocol, Predict) on this port"),
    ] = None,
    workers: Annotated[
        int,
        typer.Option(
            min=1,
            help="Serve from N processes sharing the port; the first alone runs the "
            "processor, scoring and monitor",
        ),
    ] = 1,
    preload: Annotated[
        bool,
        typer.Option(
            "--preload",
            help="Load every service's model versions in the background at start-up (a "
            "service answers 503 until loaded; /readyz reports each); without it a model "
            "loads at its service's first call, and only required services preload",
        ),
    ] = False,
    project: ProjectOpt = Path("."),
    env: EnvOpt = None,
) -> None:
    """Start the HTTP API (OpenAPI docs at /docs, the web UI at /ui), and gRPC with
    --grpc-port."""
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
            err.print(f"  UI       {url}/ui")
            if grpc_port is not None:
                grpc_host = url.split("://", 1)[1].rsplit(":", 1)[0]
                err.print(
                    f"  gRPC     {grpc_host}:{grpc_port}   (Open Inference Protocol, "
                    "headwater.v1.Predictions, health)"
                )
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
            services = p.definitions.services
            required = [n for n, s in services.items() if s.required]
            if services:
                loading = (
                    f"all {len(services)} services' models loading in the background"
                    if preload
                    else "each service's model loads at its first call"
                    + (f"; required {', '.join(required)} loading now" if required else "")
                )
                err.print(f"  models   {loading} (/readyz)")
            if workers > 1:
                err.print(
                    f"  workers  {workers} processes on the port"
                    + (f"; {', '.join(extra)} in the first" if extra else "")
                )
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
            grpc_port=grpc_port,
            workers=workers,
            preload=preload,
        )


@app.command()
def ui(
    port: Annotated[int | None, typer.Option(help="Default: from headwater.toml, 8800")] = None,
    open_browser: Annotated[
        bool, typer.Option("--open", help="Also open the UI in this machine's browser")
    ] = False,
    project: ProjectOpt = Path("."),
    env: EnvOpt = None,
) -> None:
    """Print the web UI's URL, starting the server when none runs on the configured port."""
    with open_project(project, env) as p:
        server = p.settings.server
        host, port = server.host, port or server.port
        name = f"[{host}]" if ":" in host else host
        scheme = "https" if server.tls_cert else "http"
        url = f"{scheme}://{name}:{port}/ui"
        running = _serving_project(url)
        if running == (p.settings.name, p.environment.name):
            typer.echo(url)
            if open_browser:
                webbrowser.open(url)
            return
        if running is not None:
            raise HeadwaterError(
                f"{host}:{port} serves project {running[0]!r}, environment {running[1]!r}, "
                "not this one: pass --port"
            )
        _check_free(host, port)

        def announce(base: str) -> None:
            err.print(f"headwater serving project {p.settings.name!r} from {p.root}")
            typer.echo(f"{base}/ui")
            err.print("ready (Ctrl+C to stop)")
            if open_browser:
                webbrowser.open(f"{base}/ui")

        p.serve(None, port, announce=announce)


def _serving_project(url: str) -> tuple[str, str] | None:
    """(project, environment) of the headwater UI at ``url``, None if nothing headwater
    answers there."""
    try:
        answer = httpx.get(url.removesuffix("/ui") + "/ui/login", timeout=2, verify=False)
    except httpx.HTTPError:
        return None
    found = re.search(r'<span class="project">(.*?) · environment (.*?)</span>', answer.text)
    if answer.status_code != 200 or found is None:
        return None
    return html.unescape(found.group(1)), html.unescape(found.group(2))


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
