"""`make fuzz`, short: schemathesis (every check, every phase, a fixed seed, a few examples per
operation) against the whole stack with admin, agent, user and no credentials, then the privacy
scan of what the stack left on disk. Nothing may be found (tools/fuzz.py)."""
from __future__ import annotations

import json

import pytest

from tools import fuzz

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]


def test_the_quick_fuzz_run_finds_nothing(tmp_path, capsys):
    report_dir = tmp_path / "fuzz"
    code = fuzz.main(["--quick", "--report-dir", str(report_dir)])
    out = capsys.readouterr().out
    summary = json.loads((report_dir / "summary.json").read_text())
    assert summary["test_cases"] > 1000, out
    for key in ("server_errors", "undocumented_statuses", "schema_violations", "other_failures", "errors",
                "pii_hits"):
        assert summary[key] == 0, (key, summary["details"], out[-4000:])
    assert code == 0, out[-4000:]
    # Each credential ran, every operation of the schema was tested.
    for name in fuzz.CREDENTIALS:
        report = json.loads((report_dir / name / "report.json").read_text())
        assert report["operations"]["tested"] == report["operations"]["total"] >= 30, (name, report["operations"])
