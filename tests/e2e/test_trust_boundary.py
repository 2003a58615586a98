"""The trust boundary end to end: a real `headwater serve` over TLS with `auth = "keys"`,
called through `headwater.Client` with keys made by `headwater keys create`; the server's
banner; a refused non-loopback bind; `/healthz` answering while a maximal request runs."""

from __future__ import annotations

import datetime as dt
import ssl
import subprocess
import sys
import threading
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from headwater import Client, Project
from headwater.client import ClientError
from headwater.errors import NotFoundError
from headwater.security.access import Forbidden
from headwater.security.keys import Unauthenticated
from tests.conftest import write_project
from tests.e2e.servers import free_port, headwater, start_server
from tests.unit.serving.test_predict import SERVICES
from tests.unit.training.conftest import visits

SERVER = '\n[server]\nauth = "keys"\nmax_entities = 8000\n'


def _self_signed(folder: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(__import__("ipaddress").ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def _create_key(folder: Path, *args: str) -> str:
    out = subprocess.run(
        [*_cli(), "keys", "create", "--project", str(folder), *args],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "shown only now" in out.stderr
    return out.stdout.strip()


def _cli() -> list[str]:
    return [sys.executable, "-m", "headwater"]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    folder = write_project(tmp_path_factory.mktemp("trust") / "p", SERVICES)
    with open(folder / "headwater.toml", "a") as toml:
        toml.write(SERVER)
    with Project(folder) as p:
        p.ingest("visits", visits(users=80, end=dt.datetime.now(dt.UTC)))
        p.process()
        p.promote("churn", p.train("churn").version)
    keys = {
        "admin": _create_key(folder, "--admin"),
        "growth": _create_key(folder, "--team", "growth", "--scope", "growth:*"),
        "web": _create_key(
            folder, "--team", "web", "--scope", "ingest:visits", "-s", "ingest:checkouts"
        ),
    }
    cert, key = _self_signed(folder)
    port = free_port()
    proc = start_server(
        folder,
        port,
        "--tls-cert",
        str(cert),
        "--tls-key",
        str(key),
        scheme="https",
        verify=str(cert),
    )
    try:
        yield folder, f"https://127.0.0.1:{port}", keys, str(cert)
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def test_the_client_does_every_remote_call_with_the_owning_teams_keys(server):
    folder, url, keys, cert = server
    now = dt.datetime.now(dt.UTC)
    with Client(url, api_key=keys["web"], verify=cert) as web:
        result = web.ingest("visits", [{"user_id": "u1", "device": "ios", "ts": now.isoformat()}])
        assert result.accepted == 1 and result.rejected == []
        bad = web.ingest("visits", [{"user_id": "u1", "ts": "1969-12-31T00:00:00Z"}])
        assert bad.accepted == 0 and "before 1970" in bad.rejected[0].reason
        with pytest.raises(Forbidden, match="predict:risk"):
            web.predict("risk", user_id="u1")
    with Client(url, api_key=keys["growth"], verify=cert) as growth:
        prediction = growth.predict("risk", user_id="u1")
        assert 0 <= prediction["score"] <= 1 and prediction["model"] == "churn"
        values = growth.online_features({"user_id": "u1"}, ["visits_7d", "visits_30d"])
        assert set(values) >= {"visits_7d", "visits_30d"}
        models = {m["name"]: m for m in growth.models()}
        champion = models["churn"]["aliases"]["champion"]
        moved = growth.promote("churn", champion, alias="challenger", reason="e2e")
        assert moved["version"] == champion and "growth" in moved["by"]
        with pytest.raises(NotFoundError):
            growth.promote("churn", 999, alias="challenger", reason="no such version")
        with pytest.raises(Forbidden, match="alerts:ack"):
            growth.ack_alert("no-such-alert")
    with Client(url, api_key=keys["admin"], verify=cert) as admin, pytest.raises(NotFoundError):
        admin.ack_alert("no-such-alert")
    forged = "hw_0123456789abcdef_" + "A" * 43
    with (
        Client(url, api_key=forged, verify=cert) as nobody,
        pytest.raises(Unauthenticated, match="unknown API key"),
    ):
        nobody.predict("risk", user_id="u1")
    with Client(url, api_key="", verify=cert) as anonymous, pytest.raises(Unauthenticated):
        anonymous.models()


def test_the_cli_reads_the_audit_and_the_key_list_shows_no_secret(server):
    folder, _, keys, _ = server
    listed = subprocess.run(
        [*_cli(), "keys", "list", "--project", str(folder)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    for secret in keys.values():
        assert secret.split("_")[1] in listed and secret.split("_", 2)[2] not in listed
    audit = subprocess.run(
        [*_cli(), "audit", "--project", str(folder), "--team", "web"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "ingest" in audit and "visits" in audit


def test_the_server_announces_itself(server):
    folder = server[0]
    log = (folder / "server.log").read_text()
    assert "https://127.0.0.1:" in log and "ready" in log and "auth     API keys" in log


def test_answers_do_not_name_the_server_software(server):
    folder, url, keys, cert = server
    context = ssl.create_default_context(cafile=cert)
    with httpx.Client(base_url=url, verify=context) as http:
        health = http.get("/healthz")
        predicted = http.post(
            "/v1/predict/risk",
            json={"entity": {"user_id": "u1"}},
            headers={"authorization": f"Bearer {keys['admin']}"},
        )
    assert health.status_code == 200 and predicted.status_code == 200, predicted.text
    assert "server" not in health.headers and "server" not in predicted.headers
    assert "date" in predicted.headers


def test_health_answers_while_a_maximal_request_runs(server):
    _, url, keys, cert = server
    heavy_done = threading.Event()
    statuses: list[int] = []

    def heavy() -> None:  # 8,000 entities: the most a 200 kB body ([ingest]) holds
        rows = [{"user_id": f"x{i}"} for i in range(8_000)]
        try:
            with Client(url, api_key=keys["growth"], verify=cert, timeout=120) as c:
                statuses.append(len(c.predict_many("risk", rows)))
        finally:
            heavy_done.set()

    thread = threading.Thread(target=heavy)
    thread.start()
    answered_during = 0
    with httpx.Client(verify=ssl.create_default_context(cafile=cert), timeout=5) as http:
        while not heavy_done.wait(0.05):
            if http.get(f"{url}/healthz").status_code == 200 and not heavy_done.is_set():
                answered_during += 1
    thread.join()
    assert statuses == [8_000]
    assert answered_during >= 1  # the event loop kept answering beside the 8,000 entities
    with Client(url, api_key=keys["growth"], verify=cert) as c, pytest.raises(ClientError) as exc:
        c.predict_many("risk", [{"user_id": "x"}] * 9_000)
    assert exc.value.status == 413


def test_a_public_address_without_auth_refuses_to_start(tmp_path):
    folder = write_project(tmp_path / "open", SERVICES)
    proc = headwater(
        "serve",
        "--project",
        str(folder),
        "--host",
        "0.0.0.0",
        "--port",
        str(free_port()),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 1
    assert "without authentication" in err and "keys create --admin" in err


def test_the_quickstart_runs_the_whole_loop_with_team_keys(tmp_path):
    folder = tmp_path / "shop"
    run = subprocess.run(
        [*_cli(), "quickstart", "--dir", str(folder), "--auth", "--users", "300", "--days", "21"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "auth: API keys" in run.stdout
    with Project(folder) as p:
        assert p.settings.server.auth == "keys"
        records = list(p.audit_log.read())
        owners = {n: s.owner for n, s in p.definitions.streams.items()}
        ingests = [r for r in records if r.action == "ingest"]
        # every stream's events went through the server with a key of its owning team
        assert {r.target for r in ingests} == set(owners)
        assert all(r.team == owners[r.target] and r.key_id != "-" for r in ingests)
        promotions = {r.target: r.team for r in records if r.action == "promote"}
        assert promotions == {
            f"{m}:champion": p.definitions.models[m].owner for m in ("churn", "purchase_propensity")
        }
        keys = p.access.keys.list()
        assert {k.team for k in keys} == set(owners.values()) | {
            m.owner for m in p.definitions.models.values()
        } | {s.owner for s in p.definitions.services.values()}
        assert p.log.end_offset("predictions") >= 200
