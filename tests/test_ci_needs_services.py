"""Under CI=true a test whose service is missing fails the run instead of skipping (tests/_env.py)."""
from __future__ import annotations

import os
import subprocess
import sys

from core.settings import REPO_ROOT

# One PostgreSQL-backed test, pointed at a port where nothing listens.
TARGET = "tests/test_store.py"
CLOSED = "postgresql://postgres@127.0.0.1:9/test"


def run(ci: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "CI": ci, "HC_TEST_POSTGRES_URL": CLOSED, "PYTHONPATH": str(REPO_ROOT)}
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "postgres",
                           TARGET], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300)


def test_missing_postgres_fails_under_ci():
    out = run("true")
    assert out.returncode == 1, out.stdout[-2000:]
    assert "PostgreSQL unreachable" in out.stdout and "skipped" not in out.stdout.splitlines()[-1]


def test_missing_postgres_skips_outside_ci():
    out = run("")
    assert out.returncode == 0, out.stdout[-2000:]
    assert "skipped" in out.stdout.splitlines()[-1]
