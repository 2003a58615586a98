"""The web UI's server time per page on the quickstart's data (the aim: under 300 ms).

Set-up, once: `headwater quickstart` into benchmarks/.work/ui (``--users``, ``--days``; or
``--project`` names an existing project). Each of ``--runs`` runs then opens the project
afresh in this process (nothing cached) and asks every page through the ASGI app, with auth
off: ``cold`` is a page's first answer (it reads the history, the predictions and the
monitor's ledger), ``warm`` the median of the next five (the figures computed from the log
are kept under the log offsets they read: nothing new arrived, nothing is recomputed).
No network is in the figure: the page's whole server time, from request to last byte.

    python benchmarks/ui.py [--users 2000] [--days 56] [--runs 3]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from common import Figures, add_runs_argument, fresh_dir  # noqa: E402

from headwater import Project  # noqa: E402

AIM_MS = 300.0
PAGES = {
    "overview": "/ui",
    "streams": "/ui/streams",
    "stream (page_views)": "/ui/streams/page_views",
    "features": "/ui/features",
    "feature (spend)": "/ui/features/spend",
    "lineage": "/ui/lineage",
    "models": "/ui/models",
    "model (churn)": "/ui/models/churn",
    "compare (churn v1, v2)": "/ui/models/churn/compare?a=1&b=2",
    "services": "/ui/services",
    "service (retention)": "/ui/services/retention",
    "monitoring": "/ui/monitoring",
    "monitoring (churn)": "/ui/monitoring/churn",
}


def quickstart(users: int, days: int) -> Path:
    folder = fresh_dir("ui") / "shop"
    started = time.perf_counter()
    command = [sys.executable, "-m", "headwater", "quickstart", "--dir", str(folder)]
    command += ["--users", str(users), "--days", str(days)]
    subprocess.run(command, check=True, capture_output=True, cwd=folder.parent)
    print(f"quickstart: {users:,} users, {days} days in {time.perf_counter() - started:.0f} s")
    return folder


def measure(folder: Path, figures: Figures) -> None:
    from fastapi.testclient import TestClient

    with Project(folder) as p:
        events = sum(p.log.end_offset(s) for s in p.definitions.streams)
        client = TestClient(p.app(), base_url="http://127.0.0.1")
        for name, url in PAGES.items():
            started = time.perf_counter()
            answer = client.get(url)
            cold = (time.perf_counter() - started) * 1000
            if answer.status_code != 200:
                raise SystemExit(f"{url} answered {answer.status_code}: {answer.text[:300]}")
            warm = []
            for _ in range(5):
                started = time.perf_counter()
                client.get(url)
                warm.append((time.perf_counter() - started) * 1000)
            figures.add(f"{name}: cold", cold, "ms")
            figures.add(f"{name}: warm", statistics.median(warm), "ms")
    figures.add("events in the project's streams", events, "events")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=2000)
    parser.add_argument("--days", type=int, default=56)
    parser.add_argument("--project", type=Path, help="an existing project instead")
    add_runs_argument(parser)
    args = parser.parse_args()
    folder = args.project or quickstart(args.users, args.days)
    figures = Figures(args.runs)
    for _ in figures.runs():
        measure(folder, figures)
    print(figures.report())
    over = [
        name
        for name in PAGES
        if figures.median(f"{name}: cold") > AIM_MS or figures.median(f"{name}: warm") > AIM_MS
    ]
    print(
        f"\npages over the {AIM_MS:.0f} ms aim (median, cold or warm): {', '.join(over) or 'none'}"
    )


if __name__ == "__main__":
    main()
