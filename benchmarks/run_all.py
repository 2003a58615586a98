"""``make bench``: every benchmark at the sizes quoted in benchmarks/README.md."""

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
    "streams.py",
):
    print(f"== {script}", flush=True)
    subprocess.run([sys.executable, str(HERE / script)], check=True)
