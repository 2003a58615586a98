"""``make bench``: every benchmark at the sizes quoted in benchmarks/README.md.

Arguments are passed to every script: ``python benchmarks/run_all.py --runs 1`` for a quicker
pass (streams.py alone takes about an hour a run at 1M events, mostly Quix Streams).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent

for script in (
    "core.py",
    "serving.py",
    "feast_pit.py",
    "feast_online.py",
    "monitoring.py",
    "backends.py",
    "replay.py",
    "ui.py",
    "many_services.py",
    "streams.py",
):
    print(f"== {script}", flush=True)
    subprocess.run([sys.executable, str(HERE / script), *sys.argv[1:]], check=True)
