"""The peer `make bench` compares against: a stock Rasa server on the same trained model.

Stock means: `rasa run` with a credentials file of its own that enables only Rasa's REST channel
(`rest:`), no endpoints file (so Rasa's default in-memory tracker and lock stores, no action
server), and PYTHONPATH=bot only, which the model needs for its one custom NLU component
(components.lang_metadata); not tools/rasa_boot (our faster model load), not bot/channels (our
internal channel and its patches). It answers a greeting, which a rule answers with a plain
response (rules.yml: greet -> utter_greet), so the turn needs nothing but Rasa itself.
"""
from __future__ import annotations

import contextlib
import functools
import json
import os
import subprocess
import time
import urllib.request
from pathlib import Path

from core.settings import REPO_ROOT
from tools.stack import free_port, stop_group, wait_until

GREETING = "你好"
REST_PATH = "/webhooks/rest/webhook"


@functools.cache
def greet_reply_text() -> str:
    """The default (Chinese) text of utter_greet, read from the domain the model was trained on."""
    import yaml

    variants = yaml.safe_load((REPO_ROOT / "bot" / "domain.yml").read_text())["responses"]["utter_greet"]
    return next(v["text"] for v in variants if not v.get("condition"))


def rest_greet(base: str, sender: str, timeout_s: float = 10) -> list[dict]:
    """One greeting through the REST channel: the bot's messages ([{"recipient_id", "text"}])."""
    req = urllib.request.Request(base + REST_PATH, method="POST",
                                 data=json.dumps({"sender": sender, "message": GREETING}).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout_s) as resp:
        return json.loads(resp.read())


@contextlib.contextmanager
def running_stock_rasa(work_dir: Path, rasa_bin: Path, model: Path, timeout_s: float = 240):
    """Yields (base_url, startup_seconds, pid) once the server answers the greeting."""
    work_dir.mkdir(parents=True, exist_ok=True)
    credentials = work_dir / "credentials.yml"
    credentials.write_text("rest:\n")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("HC_") and k != "PYTHONPATH"}
    env.update(PYTHONPATH=str(REPO_ROOT / "bot"), RASA_TELEMETRY_ENABLED="false", TF_CPP_MIN_LOG_LEVEL="2")
    log = open(work_dir / "rasa-stock.log", "ab")
    t0 = time.monotonic()
    # cwd bot/ as in the stack: the model's jieba dictionary path is relative to it. No --endpoints:
    # bot/ has no endpoints.yml, so Rasa runs with its defaults.
    proc = subprocess.Popen([str(rasa_bin), "run", "--model", str(model), "--credentials", str(credentials),
                             "-i", "127.0.0.1", "-p", str(port), "--quiet"],
                            cwd=REPO_ROOT / "bot", env=env, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until(proc, lambda: rest_greet(base, "bench-peer-ready", timeout_s=5), t0, timeout_s,
                   f"stock Rasa (see {log.name})")
        yield base, time.monotonic() - t0, proc.pid
    finally:
        stop_group(proc)
        log.close()


async def rest_greet_call(conn, sender: str) -> bool:
    """For the load generator: True when the reply is the greeting rule's response."""
    status, body = await conn.request("POST", REST_PATH, json_body={"sender": sender, "message": GREETING})
    return status == 200 and any(m.get("text") == greet_reply_text() for m in json.loads(body))


def check_greeting(base: str) -> None:
    """The reply to a fresh greeting must be utter_greet's text (NLU said greet, the rule ran):
    else the peer would be measuring something else (a fallback, an error)."""
    texts = [m.get("text") for m in rest_greet(base, "bench-peer-check")]
    if greet_reply_text() not in texts:
        raise RuntimeError(f"stock Rasa answered {GREETING!r} with {texts!r}, not utter_greet")
