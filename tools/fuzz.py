"""`make fuzz`: schemathesis against the whole running stack, then the privacy scan of what it left.

    python -m tools.fuzz                       # the full run: every phase, 40 examples per operation
    python -m tools.fuzz --quick               # the short run of `make test` (tests/test_fuzz.py)
    python -m tools.fuzz --seed 7 --max-examples 100 --only admin
    python -m tools.fuzz --base-url http://127.0.0.1:8000 --admin-token "$HC_ADMIN_TOKEN"   # a stack you run

Starts the stack (tools.stack.running_stack: Rasa, the app, the action webhook) in a temp dir,
demo mode on, an admin token of its own, both channels configured against the local stand-ins
for WeChat's API and Alipay's gateway (tools/fake_wechat.py, tools/fake_alipay.py: nothing
leaves the machine). Then `schemathesis run` on /openapi.json once per credential: none, a user
session token (a demo account), an agent token (with a hotline ticket opened for it, so the
ticket routes act on a real one) and the admin token, last (the admin run revokes agents and
sessions), each token made just before its run. Every check (`--checks all`:
not_a_server_error, status_code_conformance, content_type_conformance,
response_schema_conformance, response_headers_conformance, positive_data_acceptance,
negative_data_rejection, ignored_auth, use_after_free, unsupported_method, ...), every phase
(examples, coverage, fuzzing, stateful), a fixed seed, a bounded number of examples per
operation, one worker (so a seed replays the same run). Afterwards tools.pii_scan reads what the
stopped stack left in its var dir (logs and files as bytes, the SQLite databases table by table)
for raw ID or phone numbers and the demo accounts' names.

Prints a summary (server errors, undocumented statuses, schema violations, other check failures,
schemathesis errors, pii hits), writes it to <report dir>/summary.json with schemathesis' JSON and
JUnit reports per credential (reports/fuzz/ unless --report-dir), and exits 1 when any count is
not 0.

--quick: 6 examples per operation and the BM25-only retriever (no e5 model to load; a KB reload
the fuzzer asks for rebuilds BM25, not an encoder): the HTTP surface is the same.

The rate limits stay on, set high (the fuzzer is one client sending thousands of requests): the
limiter runs on every request, and 429 is a documented status anyway.

A few documented rules relate one field to another and cannot be JSON Schema (since < until, a
document's user_id is the path's, ...): a "schema-valid request rejected" failure whose request
breaks one of them is dropped by the filter_failure hook below (SCHEMATHESIS_HOOKS=tools.fuzz),
each rule named there; nothing else is filtered."""
from __future__ import annotations

import argparse
import base64
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

from core.settings import REPO_ROOT

DEFAULT_SEED = 20261201
DEFAULT_EXAMPLES = 40
QUICK_EXAMPLES = 6

# schemathesis' failure types (its JSON report's `type`), in the summary's words.
SERVER_ERRORS = {"ServerError", "ContentTypeServerError"}
UNDOCUMENTED = {"UndefinedStatusCode"}
SCHEMA = {"JsonSchemaError", "MalformedJson", "MissingContentType", "UndefinedContentType", "MalformedMediaType",
          "MissingHeaders", "ContentDeserializationError", "DiscriminatorMismatch"}


def say(msg: str) -> None:
    print(f"[fuzz] {msg}", flush=True)


# --- the stack and its credentials ----------------------------------------------------------------
def _request(base: str, method: str, path: str, token: str | None = None, body: dict | None = None) -> dict:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(base + path, data=data, method=method)
    if data is not None:
        req.add_header("Content-Type", "application/json")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(req, timeout=30) as resp:
        return json.loads(resp.read() or b"{}")


CREDENTIALS = ("anonymous", "user", "agent", "admin")


def credential(base: str, admin_token: str, name: str) -> str | None:
    """A fresh token of one kind, made just before its run: the admin run revokes what it finds
    (DELETE /admin/agents/{id} with small ids, a user's sessions), so it goes last."""
    if name == "admin":
        return admin_token
    if name == "agent":
        return _request(base, "POST", "/api/v1/admin/agents", admin_token, {"name": "fuzz-agent"})["token"]
    if name == "user":
        demo = _request(base, "GET", "/api/v1/demo/accounts")["accounts"]
        if demo:
            return _request(base, "POST", "/api/v1/demo/sessions", None, {"user_id": demo[0]["user_id"]})["token"]
        return _request(base, "POST", "/api/v1/admin/sessions", admin_token, {"user_id": "fuzz-user"})["token"]
    return None


def seed_ticket(base: str, agent_token: str) -> str | None:
    """A hotline ticket for the agent run to work on (claim, message, note, resolve, reveal):
    with random ids every ticket route would only ever answer 404."""
    try:
        _request(base, "POST", "/api/v1/chat", None, {"sender": "fuzz-handoff-" + secrets.token_hex(4),
                                                      "text": "转人工"})
        tickets = _request(base, "GET", "/api/v1/agent/tickets?status=open", agent_token)["tickets"]
    except OSError as exc:
        say(f"could not open a ticket for the agent run ({exc}); its ticket routes get random ids")
        return None
    return tickets[0]["id"] if tickets else None


def make_tokens(base: str, admin_token: str) -> dict[str, str | None]:
    return {name: credential(base, admin_token, name) for name in CREDENTIALS}


def stack_env(admin_token: str, quick: bool) -> tuple[dict[str, str], dict]:
    """The stack's environment and the channel credentials it was given (for the stand-ins)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    app_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    channel = {
        "wechat_token": "tok" + secrets.token_hex(4), "appid": "wx" + secrets.token_hex(8),
        "secret": secrets.token_hex(12),
        "aes_key": base64.b64encode(secrets.token_bytes(32)).decode().rstrip("="),
        "alipay_app": "2021" + str(secrets.randbelow(10**12)).zfill(12),
        "app_private": app_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                             serialization.NoEncryption()).decode(),
        "app_public": app_key.public_key().public_bytes(serialization.Encoding.PEM,
                                                        serialization.PublicFormat.SubjectPublicKeyInfo).decode(),
    }
    env = {
        "HC_ADMIN_TOKEN": admin_token,
        "HC_DEMO": "1",
        "HC_SSE_PING_S": "1",
        # On, and high: the fuzzer is one client sending thousands of requests.
        "HC_RATE_LIMIT_ENABLED": "1",
        "HC_RATE_LIMIT": "1000000/minute",
        "HC_RATE_LIMIT_CONVERSATION": "1000000/minute",
        "HC_RATE_LIMIT_CHANNEL": "1000000/minute",
        "HC_WECHAT_TOKEN": channel["wechat_token"], "HC_WECHAT_APPID": channel["appid"],
        "HC_WECHAT_APPSECRET": channel["secret"], "HC_WECHAT_AES_KEY": channel["aes_key"],
        "HC_ALIPAY_APP_ID": channel["alipay_app"], "HC_ALIPAY_PRIVATE_KEY": channel["app_private"],
    }
    if quick:
        # The short run checks the HTTP surface, not retrieval: BM25 only (no e5 model to load at
        # start-up, and a KB reload the fuzzer asks for is a BM25 rebuild, not an encoder load).
        env["HC_RETRIEVAL_MODE"] = "bm25"
    return env, channel


# --- schemathesis ---------------------------------------------------------------------------------
def schemathesis_cmd() -> list[str]:
    exe = Path(sys.executable).parent / "schemathesis"
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "schemathesis.cli"]


@dataclass
class RunResult:
    name: str
    exit_code: int
    failures: list[dict] = field(default_factory=list)
    errors: list[dict] = field(default_factory=list)
    generated: int = 0
    report: Path | None = None


# Event streams never end: schemathesis reads one until its request timeout, so theirs is short
# (the app pings every HC_SSE_PING_S, set to 1 s for the fuzz run, and answers at once).
# A body over HC_MAX_BODY_BYTES is refused with 413 before it is read: for schemathesis' invalid
# data (a field past its maxLength, percent-encoded) that is a rejection like 400 or 422.
CONFIG = """\
max-stream-events = 3

[checks.negative_data_rejection]
expected-statuses = ["400", "401", "403", "404", "405", "406", "409", "413", "415", "422", "428", "429", "5xx"]

[[operations]]
include-path-regex = "/stream$"
request-timeout = 2
"""


def run_schemathesis(base: str, name: str, token: str | None, *, seed: int, max_examples: int,
                     phases: str, workers: int, report_dir: Path, max_time: int | None = None,
                     parameters: dict[str, str] | None = None) -> RunResult:
    out = report_dir / name
    out.mkdir(parents=True, exist_ok=True)
    json_path = out / "report.json"
    config = out / "schemathesis.toml"
    pinned = "".join(f"{json.dumps(k)} = {json.dumps(v)}\n" for k, v in (parameters or {}).items())
    # TOML: the top-level keys, then the tables.
    head, tables = CONFIG.split("[[operations]]", 1)
    config.write_text(head + ("[parameters]\n" + pinned + "\n" if pinned else "") + "[[operations]]" + tables)
    cmd = [*schemathesis_cmd(), "--config-file", str(config), "run", f"{base}/openapi.json",
           "--checks", "all", "--phases", phases, "--seed", str(seed), "--max-examples", str(max_examples),
           "--workers", str(workers), "--generation-database", "none", "--request-timeout", "20",
           "--suppress-health-check", "all", "--no-color", "--output-truncate", "true",
           "--report", "json,junit", "--report-dir", str(out), "--report-json-path", str(json_path),
           "--report-junit-path", str(out / "junit.xml")]
    if max_time:
        cmd += ["--max-time", str(max_time)]
    if token:
        cmd += ["-H", f"Authorization: Bearer {token}"]
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "SCHEMATHESIS_HOOKS": "tools.fuzz", "HC_FUZZ_HOOKS": "1"}
    say(f"schemathesis as {name}: seed {seed}, {max_examples} examples per operation, phases {phases}")
    t0 = time.monotonic()
    with open(out / "output.txt", "wb") as log:
        proc = subprocess.run(cmd, cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    result = RunResult(name, proc.returncode, report=out / "output.txt")
    if json_path.exists():
        doc = json.loads(json_path.read_text())
        result.failures = doc.get("failures") or []
        result.errors = doc.get("errors") or []
        result.generated = (doc.get("test_cases") or {}).get("generated") or 0
    elif proc.returncode:
        result.errors = [{"title": f"schemathesis exited {proc.returncode} without a report", "count": 1}]
    say(f"  {name}: {result.generated} test cases, {len(result.failures)} failure group(s), "
        f"{len(result.errors)} error group(s), {time.monotonic() - t0:.0f} s (log: {out / 'output.txt'})")
    return result


def _kind(failure_type: str) -> str:
    if failure_type in SERVER_ERRORS:
        return "server_errors"
    if failure_type in UNDOCUMENTED:
        return "undocumented_statuses"
    if failure_type in SCHEMA:
        return "schema_violations"
    return "other_failures"       # rejected valid data, accepted invalid data, auth, Allow, ...


def summarize(results: list[RunResult], pii_hits: list) -> dict:
    summary = {"server_errors": 0, "undocumented_statuses": 0, "schema_violations": 0,
               "other_failures": 0, "errors": 0, "pii_hits": len(pii_hits), "test_cases": 0, "details": []}
    for result in results:
        summary["test_cases"] += result.generated
        for group in result.failures:
            kind = str(group.get("type") or "")
            summary[_kind(kind)] += int(group.get("count") or 1)
            summary["details"].append({"as": result.name, "check": f"{group.get('code')} {kind}",
                                       "title": group.get("title"),
                                       "count": group.get("count"), "operations": group.get("operations")})
        for group in result.errors:
            summary["errors"] += int(group.get("count") or 1)
            summary["details"].append({"as": result.name, "check": "error", "title": group.get("title"),
                                       "count": group.get("count")})
    return summary


def failed(summary: dict) -> bool:
    return any(summary[k] for k in ("server_errors", "undocumented_statuses", "schema_violations",
                                     "other_failures", "errors", "pii_hits"))


def print_summary(summary: dict, pii_hits: list) -> None:
    say("summary")
    for key in ("test_cases", "server_errors", "undocumented_statuses", "schema_violations",
                "other_failures", "errors", "pii_hits"):
        print(f"  {key:22} {summary[key]}")
    for d in summary["details"]:
        ops = ", ".join((d.get("operations") or [])[:6])
        print(f"  - [{d['as']}] {d['check']}: {d['title']} ×{d.get('count')} {ops}")
    for hit in pii_hits[:20]:
        print(f"  - pii {hit.kind} {hit.where} {hit.sample}")


# --- the whole run --------------------------------------------------------------------------------
def known_strings() -> list[str]:
    """The demo accounts' names: they must not be at rest in clear (tools.pii_scan --known)."""
    from accounts import demo
    from assistant.diagnose import china_today

    names: list[str] = []
    for doc in demo.documents(china_today()):
        names += [doc.get("name") or ""] + [m.get("name") or "" for m in doc.get("family") or []]
    return sorted({n for n in names if len(n) >= 2})


def scan_var(var_dir: Path, known: list[str]) -> list:
    """tools.pii_scan over the stack's var dir: every file as bytes (logs, Rasa's and the app's
    files), the SQLite databases table by table. Their raw pages are not read as bytes here: a
    SHA-256 token digest packed against a record header's byte reads as a run of digits there."""
    from tools import pii_scan

    hits = []
    for path in pii_scan.files_under(var_dir):
        if path.name.endswith((".db", ".db-wal", ".db-shm", ".db-journal")):
            continue
        hits += pii_scan.scan_file(path, tuple(known))
    for db in sorted(var_dir.glob("*.db")):
        hits += pii_scan.scan_database(f"sqlite:///{db}", known)
    return hits


def fuzz_stack(args) -> int:
    from tools import fake_alipay, fake_wechat
    from tools.stack import running_stack

    admin_token = "fuzz-admin-" + secrets.token_urlsafe(18)
    env, ch = stack_env(admin_token, args.quick)
    tmp = Path(tempfile.mkdtemp(prefix="hc-fuzz-"))
    var_dir = tmp / "var"
    results: list[RunResult] = []
    try:
        with ExitStack() as stack:
            wx = stack.enter_context(fake_wechat.running(ch["appid"], ch["secret"]))
            ali = stack.enter_context(fake_alipay.running(ch["app_public"], app_id=ch["alipay_app"]))
            env.update({"HC_WECHAT_API_BASE": wx.base_url, "HC_ALIPAY_GATEWAY": ali.url,
                        "HC_ALIPAY_PUBLIC_KEY": ali.public_key_pem})
            say(f"starting the stack in {var_dir}")
            base, startup_s, _pid = stack.enter_context(running_stack(var_dir, env=env))
            say(f"stack healthy at {base} after {startup_s:.0f} s")
            results = fuzz_credentials(base, admin_token, args)
        # The stack has stopped: its logs and database are complete.
        hits = scan_var(var_dir, known_strings())
        summary = summarize(results, hits)
        print_summary(summary, hits)
        (args.report_dir).mkdir(parents=True, exist_ok=True)
        (args.report_dir / "summary.json").write_text(json.dumps(summary, ensure_ascii=False, indent=2))
        return 1 if failed(summary) else 0
    finally:
        if args.keep:
            say(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


def fuzz_credentials(base: str, admin_token: str, args) -> list[RunResult]:
    names = [name for name in CREDENTIALS if not args.only or name in args.only]
    results = []
    for name in names:
        token = credential(base, admin_token, name)
        parameters = {}
        if name == "agent":
            ticket = seed_ticket(base, token)
            if ticket:
                parameters["path.ticket_id"] = ticket
        results.append(run_schemathesis(base, name, token, seed=args.seed, max_examples=args.max_examples,
                                        phases=args.phases, workers=args.workers, report_dir=args.report_dir,
                                        max_time=args.max_time, parameters=parameters))
    return results


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--max-examples", type=int, default=None, help=f"per operation (default {DEFAULT_EXAMPLES}, "
                                                                     f"--quick {QUICK_EXAMPLES})")
    ap.add_argument("--seed", type=int, default=DEFAULT_SEED)
    ap.add_argument("--quick", action="store_true", help="the short run of make test: few examples, BM25 only")
    ap.add_argument("--phases", default="examples,coverage,fuzzing,stateful")
    ap.add_argument("--workers", type=int, default=1, help="schemathesis workers (1: reproducible with --seed)")
    ap.add_argument("--max-time", type=int, default=None, help="seconds per credential (schemathesis --max-time)")
    ap.add_argument("--only", action="append", choices=["admin", "agent", "user", "anonymous"],
                    help="fuzz with this credential only (repeatable)")
    ap.add_argument("--report-dir", type=Path, default=REPO_ROOT / "reports" / "fuzz")
    ap.add_argument("--keep", action="store_true", help="keep the stack's temp dir (logs, database)")
    ap.add_argument("--base-url", help="fuzz a stack that is already running (no pii scan unless --var-dir)")
    ap.add_argument("--admin-token", default=os.environ.get("HC_ADMIN_TOKEN"))
    ap.add_argument("--var-dir", type=Path, help="with --base-url: the var dir to scan afterwards")
    args = ap.parse_args(argv)
    if args.max_examples is None:
        args.max_examples = QUICK_EXAMPLES if args.quick else DEFAULT_EXAMPLES
    if args.base_url:
        if not args.admin_token:
            ap.error("--base-url needs --admin-token (or HC_ADMIN_TOKEN)")
        results = fuzz_credentials(args.base_url.rstrip("/"), args.admin_token, args)
        hits = scan_var(args.var_dir, known_strings()) if args.var_dir else []
        summary = summarize(results, hits)
        print_summary(summary, hits)
        return 1 if failed(summary) else 0
    return fuzz_stack(args)


# --- schemathesis hooks (SCHEMATHESIS_HOOKS=tools.fuzz) -------------------------------------------
# A few rules the API documents cannot be written as JSON Schema (one field against another).
# A "schema-valid request rejected" failure whose request breaks one of them is the API doing
# what it says, not a finding: only those are dropped, each rule named here and in the route's
# description.
def breaks_documented_rule(method: str, path: str, case) -> str | None:
    query = getattr(case, "query", None) or {}
    body = getattr(case, "body", None)
    params = getattr(case, "path_parameters", None) or {}
    if (method, path) == ("GET", "/api/v1/admin/stats"):
        from tickets import stats

        try:
            start, end = stats.parse_bound(query.get("since")), stats.parse_bound(query.get("until"))
        except (ValueError, OverflowError, TypeError):
            return None
        if start is not None and end is not None and start >= end:
            return "since < until"
        if end is None and start is not None:
            from datetime import datetime, timezone

            if start >= datetime.now(timezone.utc):
                return "since < until (until defaults to now)"
    if (method, path) in (("POST", "/api/v1/chat"), ("GET", "/api/v1/faq/search")):
        from retrieval.text import clean

        text = body.get("text") if isinstance(body, dict) else query.get("q")
        if isinstance(text, str) and not clean(text):
            # The schema's pattern says "a visible character" for the Basic Multilingual Plane
            # only (JSON Schema patterns cannot name the others portably): an astral format or
            # private-use character alone is still no question.
            return "the text has a visible character"
    if (method, path) == ("POST", "/channels/alipay") and isinstance(body, dict):
        charset = str(body.get("charset") or "GBK").upper()
        if charset != "UTF-8" and any(not str(v).isascii() or not str(k).isascii() for k, v in body.items()):
            return "the form is encoded in its declared charset (schemathesis encodes UTF-8)"
    if (method, path) == ("POST", "/api/v1/admin/accounts/{user_id}") and isinstance(body, dict):
        if "user_id" in body and body["user_id"] is not None and body["user_id"] != params.get("user_id"):
            return "the document's user_id is the path's"
        quarantine = body.get("quarantine")
        if isinstance(quarantine, dict) and quarantine.get("start") and quarantine.get("end"):
            if str(quarantine["end"]) < str(quarantine["start"]):
                return "a quarantine's end is not before its start"
    return None


if os.environ.get("HC_FUZZ_HOOKS"):
    import schemathesis

    @schemathesis.hook
    def filter_failure(context, failure, case, response) -> bool:
        if type(failure).__name__ != "RejectedPositiveData":
            return True
        return breaks_documented_rule(case.method.upper(), case.operation.path, case) is None


if __name__ == "__main__":
    sys.exit(main())
