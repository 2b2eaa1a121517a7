"""What a test needs from the machine (PostgreSQL, Redis, the Rasa venv, the built model).

Outside CI a missing piece skips the test, so a laptop without PostgreSQL still runs the rest.
With CI=true it fails the run: `make test` sets everything up and the services run on CI's
machine, so a green CI must mean these tests ran, not that they were skipped."""
from __future__ import annotations

import os

import pytest

IN_CI = os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")


def missing(reason: str) -> None:
    """Skip the test, or under CI fail it: `reason` says what is missing."""
    if IN_CI:
        pytest.fail(f"{reason} (CI=true: this must be available, so the test fails instead of skipping)",
                    pytrace=False)
    pytest.skip(reason)
