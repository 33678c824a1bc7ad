"""The randomized long run of tools/random_federation.py, trimmed: a few seeds of a
four-site federation with random owner operations (prune and re-ingest with deterministic
IDs, tags, chains, calibrations, processing runs), syncs along random edges with cycles,
random SIGKILLs, writers beside syncs, and a final convergence check. Seeds run side by
side, one of them with NCSA's and IN2P3's registries on PostgreSQL.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from conftest import PG_URL

TOOL = Path(__file__).resolve().parent.parent / "tools" / "random_federation.py"
STEPS = 40


@pytest.mark.slow
@pytest.mark.postgres
def test_random_federations_converge(tmp_path, pg_engine):
    runs = {
        "sqlite seed 11": ["--seeds", "11"],
        "sqlite seed 12": ["--seeds", "12"],
        "postgresql seed 13": ["--seeds", "13", "--postgres", PG_URL],
    }
    procs = {
        name: subprocess.Popen(
            [sys.executable, str(TOOL), *args, "--steps", str(STEPS),
             "--workdir", str(tmp_path / name.replace(" ", "-"))],
            cwd=TOOL.parent, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for name, args in runs.items()}
    failures = []
    for name, proc in procs.items():
        output, _ = proc.communicate(timeout=1200)
        if proc.returncode != 0 or "all 1 seeds passed" not in output:
            failures.append(f"{name} (exit {proc.returncode}):\n{output[-4000:]}")
    assert not failures, "\n\n".join(failures)
