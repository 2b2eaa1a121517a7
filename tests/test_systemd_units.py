"""deploy/systemd/: the production process manager's units, checked as far as a container allows.

Parsed like systemd does (sections, repeated keys, no interpolation): restart policy, start
limits, the shared EnvironmentFile, the hardening, the instance wiring; then `systemd-analyze
verify` on the units with /opt/hc-assistant pointed at this checkout (so every ExecStart binary
is one that exists here), when systemd-analyze is installed. Starting them needs a booted
systemd, which CI's container is not."""
from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from core.settings import REPO_ROOT

UNITS = REPO_ROOT / "deploy" / "systemd"
INSTALL_ROOT = "/opt/hc-assistant"
TEMPLATES = ("hc-app@.service", "hc-rasa@.service")


def parse_unit(path: Path) -> dict[str, dict[str, list[str]]]:
    """{section: {key: [values in order]}}; continuation lines and comments as systemd reads them."""
    sections: dict[str, dict[str, list[str]]] = {}
    current = None
    pending = ""
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = pending + raw.strip() if pending else raw.strip()
        pending = ""
        if not line or line[0] in "#;":
            continue
        if line.endswith("\\"):
            pending = line[:-1] + " "
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
            continue
        assert current is not None, f"{path.name}: a key outside any section: {line!r}"
        key, sep, value = line.partition("=")
        assert sep, f"{path.name}: not a key=value line: {line!r}"
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


def one(unit: dict, section: str, key: str) -> str:
    values = unit.get(section, {}).get(key)
    assert values, f"[{section}] {key}= missing"
    return values[-1]


@pytest.fixture(scope="module")
def units() -> dict[str, dict]:
    return {name: parse_unit(UNITS / name) for name in (*TEMPLATES, "hc-assistant.target")}


def test_the_files_exist_with_a_readme():
    for name in (*TEMPLATES, "hc-assistant.target", "README.md", "hc-write-endpoints"):
        assert (UNITS / name).is_file(), name
    readme = (UNITS / "README.md").read_text(encoding="utf-8")
    for word in ("systemctl enable", "/etc/hc-assistant/env", "useradd", "hc-app@", "hc-rasa@",
                 "daemon-reload", "journalctl"):
        assert word in readme, word


@pytest.mark.parametrize("name", TEMPLATES)
def test_restart_policy_and_start_limits(units, name):
    unit = units[name]
    assert one(unit, "Service", "Restart") == "always"
    assert 0 < float(one(unit, "Service", "RestartSec").rstrip("s")) <= 10
    # Start limits live in [Unit] since systemd 230; a burst of at least a few, over minutes.
    assert int(one(unit, "Unit", "StartLimitBurst")) >= 5
    assert int(one(unit, "Unit", "StartLimitIntervalSec").rstrip("s")) >= 60
    assert one(unit, "Service", "Type") == "simple"
    assert one(unit, "Service", "KillMode") == "control-group"
    assert int(one(unit, "Service", "TimeoutStopSec").rstrip("s")) <= 30


@pytest.mark.parametrize("name", TEMPLATES)
def test_environment_and_user(units, name):
    unit = units[name]
    files = unit["Service"]["EnvironmentFile"]
    assert files[0] == "/etc/hc-assistant/env"                     # required: no leading "-"
    assert all(f.startswith("-/etc/hc-assistant/") for f in files[1:])   # per instance, optional
    assert one(unit, "Service", "User") == "hc" and one(unit, "Service", "Group") == "hc"
    assert "%i" in one(unit, "Unit", "Description")
    assert one(unit, "Unit", "PartOf") == "hc-assistant.target"
    assert one(unit, "Install", "WantedBy") == "hc-assistant.target"
    after = " ".join(unit["Unit"]["After"])
    assert "network-online.target" in after and "postgresql.service" in after


@pytest.mark.parametrize("name", TEMPLATES)
def test_hardening(units, name):
    service = units[name]["Service"]
    expect = {"NoNewPrivileges": "yes", "ProtectSystem": "strict", "PrivateTmp": "yes", "ProtectHome": "yes",
              "PrivateDevices": "yes", "RestrictNamespaces": "yes", "LockPersonality": "yes"}
    for key, value in expect.items():
        assert service.get(key, [None])[-1] == value, key
    assert "/var/lib/hc-assistant" in " ".join(service["ReadWritePaths"]).split()
    assert service["CapabilityBoundingSet"] == [""]               # no capabilities at all
    families = service["RestrictAddressFamilies"][-1].split()
    assert set(families) == {"AF_INET", "AF_INET6", "AF_UNIX"}


def test_the_app_instance_is_its_port(units):
    service = units["hc-app@.service"]["Service"]
    assert "HC_PORT=%i" in service["Environment"]
    assert "HC_VAR_DIR=/var/lib/hc-assistant" in service["Environment"]
    assert one(units["hc-app@.service"], "Service", "ExecStart") == f"{INSTALL_ROOT}/.venv/bin/python -m api.main"
    assert "-/etc/hc-assistant/app-%i.env" in service["EnvironmentFile"]


def test_the_rasa_instance_is_its_port_and_writes_its_endpoints(units):
    service = units["hc-rasa@.service"]["Service"]
    start = one(units["hc-rasa@.service"], "Service", "ExecStart").split()
    assert start[0] == f"{INSTALL_ROOT}/.venv-rasa/bin/rasa" and start[1] == "run"
    assert start[start.index("-p") + 1] == "%i" and start[start.index("-i") + 1] == "127.0.0.1"
    assert start[start.index("--model") + 1] == "${HC_RASA_MODEL}"
    endpoints = start[start.index("--endpoints") + 1]
    assert endpoints == "/var/lib/hc-assistant/rasa-%i/endpoints.yml"
    pre = one(units["hc-rasa@.service"], "Service", "ExecStartPre")
    assert "hc-write-endpoints /var/lib/hc-assistant/rasa-%i" in pre
    assert one(units["hc-rasa@.service"], "Service", "WorkingDirectory") == f"{INSTALL_ROOT}/bot"
    assert "-/etc/hc-assistant/rasa-%i.env" in service["EnvironmentFile"]
    # The same Rasa PYTHONPATH as make run's: the bot's code and the fast model load.
    assert f"PYTHONPATH={INSTALL_ROOT}/bot:{INSTALL_ROOT}/tools/rasa_boot" in service["Environment"]


def test_the_target(units):
    target = units["hc-assistant.target"]
    assert one(target, "Install", "WantedBy") == "multi-user.target"
    assert "Description" in target["Unit"]


def test_every_path_in_the_units_exists_in_the_checkout():
    """What the units run, relative to the install root, is in the repository (or made by
    `make setup`: the venv links)."""
    for name in TEMPLATES:
        text = (UNITS / name).read_text(encoding="utf-8")
        for rel in set(re.findall(re.escape(INSTALL_ROOT) + r"/([\w./-]+)", text)):
            top = rel.split("/")[0]
            if top in (".venv", ".venv-rasa"):
                continue
            assert (REPO_ROOT / rel).exists(), f"{name}: {INSTALL_ROOT}/{rel} is not in the repository"


def test_the_endpoints_writer_matches_make_run(tmp_path):
    """hc-write-endpoints writes what core.rasa_endpoints would: the action webhook on
    HC_ACTIONS_PORT with the internal token, the tracker store on the database."""
    import json
    import os
    import sys

    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "HC_ACTIONS_PORT": "5099", "HC_INTERNAL_TOKEN": "tok-x",
           "HC_DATABASE_URL": "postgresql://hc@db.internal:5432/hc", "HC_REDIS_URL": "redis://cache:6379/0"}
    out = subprocess.run([sys.executable, str(UNITS / "hc-write-endpoints"), str(tmp_path / "rasa-5005")],
                         env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    path = tmp_path / "rasa-5005" / "endpoints.yml"
    doc = json.loads(path.read_text())
    assert doc["action_endpoint"]["url"] == "http://127.0.0.1:5099/webhook"
    assert "tok-x" in json.dumps(doc["action_endpoint"]["headers"])
    assert doc["tracker_store"]["url"] == "db.internal" and doc["lock_store"]["url"] == "cache"
    assert path.stat().st_mode & 0o077 == 0
    env.pop("HC_INTERNAL_TOKEN")
    out = subprocess.run([sys.executable, str(UNITS / "hc-write-endpoints"), str(tmp_path / "x")],
                         env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 1 and "HC_INTERNAL_TOKEN" in out.stderr


def test_systemd_analyze_verify(tmp_path):
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed here")
    for path in UNITS.iterdir():
        if path.suffix in (".service", ".target"):
            (tmp_path / path.name).write_text(path.read_text(encoding="utf-8").replace(INSTALL_ROOT, str(REPO_ROOT)),
                                              encoding="utf-8")
    if not (REPO_ROOT / ".venv-rasa" / "bin" / "rasa").exists():
        pytest.skip("no .venv-rasa here (make setup): verify would only find the missing binary")
    targets = [str(tmp_path / "hc-app@8001.service"), str(tmp_path / "hc-rasa@5005.service"),
               str(tmp_path / "hc-assistant.target")]
    out = subprocess.run([analyze, "verify", "--man=no", *targets], capture_output=True, text=True, timeout=120,
                         cwd=tmp_path)
    # verify prints warnings (an unknown key, a value it ignores) without failing: none allowed.
    problems = [line for line in (out.stdout + out.stderr).splitlines()
                if line.strip() and "generator" not in line]
    assert out.returncode == 0 and not problems, out.stdout + out.stderr
