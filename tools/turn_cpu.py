"""Where a chat turn's CPU goes: CPU seconds per process of a fresh stack over a closed-loop run.

    python -m tools.turn_cpu chat unique 800 [HC_RASA_SERVERS=2 ...]

Starts the stack (tools.stack), warms it, drives `n` requests with 16 clients (tools.bench.drive),
and prints the run's figures, then each process's CPU over the run from /proc/<pid>/stat: the
cores it kept busy and its milliseconds of CPU per request. Extra NAME=VALUE arguments go into
the stack's environment (an A/B of one setting)."""
from __future__ import annotations

import asyncio
import json
import os
import sys
import tempfile
import time
from pathlib import Path

from core.settings import REPO_ROOT
from tools.bench import DEFAULT_QUESTIONS, descendants, drive, load_questions
from tools.stack import running_stack


def cpu_seconds(pid: int) -> tuple[float, str]:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK"), command[:90]


def main(argv: list[str]) -> int:
    if len(argv) < 3:
        print(__doc__)
        return 2
    kind, unique, n = argv[0], argv[1] == "unique", int(argv[2])
    env = {"HC_RATE_LIMIT_ENABLED": "0", **dict(a.split("=", 1) for a in argv[3:])}
    questions = load_questions(DEFAULT_QUESTIONS)
    with tempfile.TemporaryDirectory(prefix="hc-turn-cpu-") as tmp:
        (Path(tmp) / "artifacts.json").write_text((REPO_ROOT / "var" / "artifacts.json").read_text())
        with running_stack(Path(tmp), env) as (base, _startup, pid):
            asyncio.run(drive(base, kind, questions, 16, 50, unique))
            before = {p: cpu_seconds(p)[0] for p in descendants(pid)}
            t0 = time.perf_counter()
            row = asyncio.run(drive(base, kind, questions, 16, n, unique))
            wall = time.perf_counter() - t0
            # drive() warms up first (every question once for "repeated", five for "unique"):
            # those requests ran inside the measured window too.
            turns = row["n"] + (5 if unique else len(questions))
            print(json.dumps(row, ensure_ascii=False))
            for p in descendants(pid):
                if p not in before:
                    continue
                used, command = cpu_seconds(p)
                used -= before[p]
                if used > 0.05:
                    print(f"{used / wall:5.2f} cores  {used / turns * 1000:6.1f} ms/request  {command}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
