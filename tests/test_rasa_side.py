"""Our code inside the Rasa process (the SQLite tracker store, the NLU result cache), checked in
the Rasa virtualenv by tests/rasa_side/checks.py; one test per check."""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from _env import missing

ROOT = Path(__file__).resolve().parent.parent
RASA_PYTHON = ROOT / ".venv-rasa" / "bin" / "python"
CHECKS = ("tracker_round_trip_and_appends_only_new_events",
          "retrieve_gives_the_latest_session_and_full_gives_all",
          "the_table_is_rasas_sql_table_and_files_are_shared",
          "nlu_results_are_reused_per_text_and_language",
          "action_calls_share_one_session_per_headers_and_loop",
          "action_results_get_the_same_verdict_as_the_full_schema",
          "the_fast_classifier_builds_rasas_own_feature_matrix",
          "the_plain_graph_runner_gives_what_dask_gave")



@pytest.fixture(autouse=True, scope="module")
def rasa_venv():
    if not RASA_PYTHON.exists():
        missing("no Rasa venv (make setup builds it)")


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> dict:
    tmp = tmp_path_factory.mktemp("rasa-side")
    out = subprocess.run([str(RASA_PYTHON), str(ROOT / "tests/rasa_side/checks.py"), str(tmp)],
                         cwd=ROOT / "bot", env={"PYTHONPATH": str(ROOT / "bot"), "TF_CPP_MIN_LOG_LEVEL": "3",
                                                "RASA_TELEMETRY_ENABLED": "false", "HOME": str(tmp)},
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_every_check_is_listed(results):
    assert sorted(results) == sorted(f"check_{c}" for c in CHECKS)


@pytest.mark.parametrize("check", CHECKS)
def test_rasa_side(results, check):
    assert results[f"check_{check}"] == "ok", results[f"check_{check}"]
