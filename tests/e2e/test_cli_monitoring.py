"""`headwater monitor` and `headwater experiment` on predictions whose labels have matured."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from headwater import Project
from tests.conftest import write_project
from tests.e2e.test_cli import run
from tests.unit.serving.test_predict import SERVICES
from tests.unit.training.conftest import visits


def test_monitor_and_experiment_report_on_matured_predictions(tmp_path):
    folder = write_project(tmp_path / "p", SERVICES)
    now = datetime.now(UTC)
    clock = {"t": now}
    with Project(folder, clock=lambda: clock["t"]) as p:
        p.ingest("visits", visits(users=300, end=now - timedelta(minutes=1)))
        p.process()
        first = p.train("churn").version
        p.promote("churn", first)
        p.promote("churn", first, alias="challenger")
        clock["t"] = now - timedelta(days=10)
        p.serving.predict("risk_ab", [{"user_id": f"u{i}"} for i in range(300)], "test")
        p.serving.logger.flush()

    out = run("monitor", "risk_ab", "--days", "20", "--act", "-p", str(folder)).stdout
    assert "label coverage 100%" in out and "auc=" in out
    assert "visits_7d" in out  # the drift table lists every feature
    # These predictions were served "10 days ago" from tiles processed up to now, which online
    # reads do not support (they are exact at now): the skew check must notice.
    assert "predictions recomputed offline" in out and ", 0 mismatching values" not in out
    out = run(
        "experiment", "risk_ab", "--days", "20", "--lower-is-better", "-p", str(folder)
    ).stdout
    assert "b vs a:" in out and "two-proportion z-test" in out
    assert any(v in out for v in ("winner", "no difference", "more samples"))
    report = tmp_path / "churn.html"
    assert (
        "report written"
        in run("report", "churn", "-o", str(report), "--days", "20", "-p", str(folder)).stdout
    )
    assert "<svg" in report.read_text()
    assert "churn.html" in run("report", "churn", "-p", str(folder)).stdout
    assert (folder / "reports" / "churn.html").is_file()  # one reports folder
    single = run("experiment", "risk", "--days", "20", "-p", str(folder), ok=False)
    assert single.returncode == 1 and "serves one variant" in single.stderr
    assert "nothing to compare" in single.stderr
    unknown = run("experiment", "risk_abb", "-p", str(folder), ok=False)
    assert unknown.returncode == 1 and "unknown service 'risk_abb'" in unknown.stderr
    assert "unknown service" in run("monitor", "risk_abb", "-p", str(folder), ok=False).stderr
    missing = run("experiment", "risk_ab", "--days", "1", "-p", str(folder), ok=False)
    assert missing.returncode == 1 and "fewer than two variants" in missing.stderr
