"""`make bench`: p50/p95 latency of FAQ search and chat at 1 and 16 clients, full vs BM25-only.

Each mode starts the whole stack fresh (tools.stack), records the time to a healthy /healthz and
the total RSS of its processes, then drives it with closed-loop clients on loopback (a lean
keep-alive client, tools/loadgen.py, so the load generator takes little of the 2 cores): a bounded
number of requests per run, questions cycled from the dev set (only read, never trained on).
"repeated" runs ask questions the service has seen (each once before the run, so the result and
NLU caches hold them); "unique" runs append a number to every question, so no cache helps;
"greet" runs send 你好 (a rule's plain response), each from a new sender.

Also: a peer, stock Rasa on the same model with only its REST channel (tools/bench_peer.py),
answering the same greeting at 1 and 16 clients once our stacks have stopped, with our chat turns
as ratios of it; and an open-loop row (tools/openloop.py): unique chat questions arriving at a
fixed rate, latency timed from each one's scheduled send, so queueing is not hidden.
`--quick` to try it; `--skip-peer`, `--skip-openloop` to leave those out.
"""
from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import statistics
import tempfile
import time
from pathlib import Path

from core.settings import REPO_ROOT
from tools.loadgen import Connection
from tools.openloop import percentile
from tools.stack import running_stack

DEFAULT_QUESTIONS = REPO_ROOT.parent / "shared" / "eval" / "faq_dev.jsonl"


def descendants(root_pid: int) -> list[int]:
    """A process and all its descendants, from /proc."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
        except (OSError, IndexError, ValueError):
            continue
    out, todo = [], [root_pid]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, []))
    return out


def process_tree_rss_mb(root_pid: int) -> float:
    """RSS of a process and all its descendants, from /proc."""
    total_kb = 0
    for pid in descendants(root_pid):
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total_kb += int(line.split()[1])
        except OSError:
            continue
    return total_kb / 1024


# Numbers appended to "unique" questions continue from run to run, so no run sees another's text.
_UNIQUE_NUMBERS = itertools.count(1)


async def closed_loop(base: str, clients: int, total: int, call) -> dict:
    """`clients` keep-alive connections, each sending its next request when the last one was
    answered, until `total` were sent. call(conn, i, wid) -> True for a real answer."""
    latencies: list[float] = []
    errors = 0
    counter = iter(range(total))

    async def worker(wid: int) -> None:
        nonlocal errors
        async with Connection(base) as conn:
            for i in counter:
                t0 = time.perf_counter()
                ok = await call(conn, i, wid)
                latencies.append((time.perf_counter() - t0) * 1000)
                errors += not ok

    t0 = time.perf_counter()
    await asyncio.gather(*(worker(w) for w in range(clients)))
    wall = time.perf_counter() - t0
    return {"n": len(latencies), "errors": errors,
            "p50_ms": round(percentile(latencies, 0.5), 1), "p95_ms": round(percentile(latencies, 0.95), 1),
            "mean_ms": round(statistics.fmean(latencies), 1), "rps": round(len(latencies) / wall, 1)}


async def drive(base: str, kind: str, questions: list[str], clients: int, total: int,
                unique: bool = False) -> dict:
    """unique: every request a text never seen before (a number appended), so no cache helps."""
    numbers = {i: next(_UNIQUE_NUMBERS) for i in range(total)} if unique else {}

    async def call(conn: Connection, i: int, wid: int) -> bool:
        """True for a real answer: a 200 with results, or a 200 with at least one bot message
        (a turn whose action failed still comes back 200, with nothing to say)."""
        q = questions[i % len(questions)] + (f" {numbers[i]}" if unique else "")
        if kind == "search":
            status, body = await conn.request("GET", "/api/v1/faq/search", params={"q": q, "k": 3})
            return status == 200 and isinstance(json.loads(body).get("results"), list)
        status, body = await conn.request("POST", "/api/v1/chat",
                                          json_body={"sender": f"bench-{wid}-{i}", "text": q})
        return status == 200 and bool(json.loads(body).get("messages"))

    # Warm-up: first requests pay for lazy initialisation, which is not what we measure. For
    # "repeated", every question is asked once first: the run then measures a service answering
    # questions it has seen (the popular ones, in the same words), while "unique" measures one
    # that has seen none of them.
    async with Connection(base) as conn:
        for q in questions if not unique else questions[:5]:
            if kind == "search" or unique:
                await conn.request("GET", "/api/v1/faq/search", params={"q": q, "k": 3})
            if kind == "chat" or unique:
                await conn.request("POST", "/api/v1/chat", json_body={"sender": "bench-warm", "text": q})
    stats = await closed_loop(base, clients, total, call)
    return {"endpoint": kind, "questions": "unique" if unique else "repeated", "clients": clients, **stats}


# Each new sender a new conversation, in both stacks: the greeting is a first turn every time.
_GREET_SENDERS = itertools.count(1)


async def drive_greet(base: str, clients: int, total: int, peer: bool = False) -> dict:
    """The greeting (bench_peer.GREETING, answered by a rule with utter_greet) at `clients`: through
    our /api/v1/chat, or (peer) through stock Rasa's REST channel. Each request a new sender."""
    from tools import bench_peer

    async def call(conn: Connection, i: int, wid: int) -> bool:
        sender = f"bench-greet-{next(_GREET_SENDERS)}"
        if peer:
            return await bench_peer.rest_greet_call(conn, sender)
        status, body = await conn.request("POST", "/api/v1/chat",
                                          json_body={"sender": sender, "text": bench_peer.GREETING})
        return status == 200 and any(m.get("text") == bench_peer.greet_reply_text()
                                     for m in json.loads(body).get("messages") or [])

    async with Connection(base) as conn:     # warm-up, as drive() does
        for _ in range(5):
            await call(conn, 0, -1)
    stats = await closed_loop(base, clients, total, call)
    return {"endpoint": "rest" if peer else "chat", "questions": "greet", "clients": clients, **stats}


async def drive_open_loop(base: str, questions: list[str], rate: float, duration_s: float) -> dict:
    """Unique chat questions (as drive(unique=True)) arriving at `rate`/s: tools/openloop.py."""
    from tools.openloop import open_loop

    total = max(1, int(round(rate * duration_s)))
    numbers = {i: next(_UNIQUE_NUMBERS) for i in range(total)}

    async def call(conn: Connection, i: int) -> bool:
        q = f"{questions[i % len(questions)]} {numbers[i]}"
        status, body = await conn.request("POST", "/api/v1/chat",
                                          json_body={"sender": f"bench-open-{i}", "text": q})
        return status == 200 and bool(json.loads(body).get("messages"))

    return {"endpoint": "chat", "questions": "unique", **await open_loop(base, call, rate, duration_s)}


def run_peer(requests: int, min_requests: int) -> list[dict]:
    """Stock Rasa (tools/bench_peer.py) on the same model, alone on the machine (our stack is
    stopped by now), answering the greeting at 1 and 16 clients."""
    from core.artifacts import load_artifacts
    from core.settings import get_settings
    from tools import bench_peer

    art = load_artifacts(get_settings())
    if not (art.rasa_model and art.rasa_venv):
        print("[bench] rasa-stock: no Rasa model or venv (make setup): skipped", flush=True)
        return []
    rows = []
    with tempfile.TemporaryDirectory(prefix="hc-bench-peer-") as tmp, \
            bench_peer.running_stock_rasa(Path(tmp), art.rasa_venv / "bin" / "rasa", art.rasa_model) \
            as (base, startup_s, pid):
        bench_peer.check_greeting(base)
        rss = process_tree_rss_mb(pid)
        print(f"[bench] rasa-stock: answering after {startup_s:.1f}s, RSS {rss:.0f} MB", flush=True)
        for clients in (1, 16):
            n = requests if clients > 1 else max(min_requests, requests // 4)
            row = {"mode": "rasa-stock", **asyncio.run(drive_greet(base, clients, n, peer=True))}
            rows.append(row)
            print(f"[bench] {json.dumps(row, ensure_ascii=False)}", flush=True)
        rows.append({"mode": "rasa-stock", "startup_s": round(startup_s, 1), "rss_mb": round(rss),
                     "startup_what": "first greeting answered"})
    return rows


def ratio_rows(rows: list[dict]) -> list[str]:
    """Our turns as a ratio of stock Rasa's greeting at the same number of clients: rps (above 1:
    we serve more per second) and p50 (above 1: we are slower)."""
    def find(mode: str, endpoint: str, questions: str, clients: int) -> dict | None:
        return next((r for r in rows if r.get("mode") == mode and r.get("endpoint") == endpoint
                     and r.get("questions") == questions and r.get("clients") == clients), None)

    out = []
    for ours_questions in ("unique", "greet"):
        for clients in (1, 16):
            ours = find("hybrid", "chat", ours_questions, clients)
            peer = find("rasa-stock", "rest", "greet", clients)
            if ours and peer and peer["rps"] and peer["p50_ms"]:
                out.append(f"| hybrid chat {ours_questions} / rasa-stock rest greet | {clients} "
                           f"| {ours['rps'] / peer['rps']:.2f} | {ours['p50_ms'] / peer['p50_ms']:.2f} |")
    return out


BENCH_ADMIN = "bench-admin-token"


def handoff_round_trip(base: str, n: int = 50) -> dict:
    """An agent's message to the moment it arrives on the user's SSE stream (/api/v1/chat/stream),
    over a claimed ticket: the delivery path (message log, broker, stream) end to end."""
    import threading
    import uuid

    import httpx

    admin = {"Authorization": f"Bearer {BENCH_ADMIN}"}
    sender = f"bench-handoff-{uuid.uuid4().hex}"
    latencies: list[float] = []
    with httpx.Client(base_url=base, timeout=30) as api:
        ticket = api.post("/api/v1/chat", json={"sender": sender, "text": "转人工"}).json()["meta"]["ticket_id"]
        agent = {"Authorization": "Bearer " + api.post("/api/v1/admin/agents", json={"name": "bench"},
                                                       headers=admin).json()["token"]}
        api.post(f"/api/v1/agent/tickets/{ticket}/claim", headers=agent).raise_for_status()
        arrived: dict[str, float] = {}
        ready, done = threading.Event(), threading.Event()

        def listen() -> None:
            with httpx.Client(base_url=base, timeout=httpx.Timeout(30, read=60)) as c, \
                    c.stream("GET", "/api/v1/chat/stream", params={"sender": sender}) as r:
                ready.set()
                for line in r.iter_lines():
                    if line.startswith("data:"):
                        arrived[json.loads(line[5:])["text"]] = time.perf_counter()
                        if len(arrived) >= n:
                            done.set()
                            return

        threading.Thread(target=listen, daemon=True).start()
        ready.wait(30)
        time.sleep(0.5)
        for i in range(n):
            text = f"bench {i}"
            t0 = time.perf_counter()
            api.post(f"/api/v1/agent/tickets/{ticket}/messages", json={"text": text}, headers=agent).raise_for_status()
            deadline = time.perf_counter() + 10
            while text not in arrived and time.perf_counter() < deadline:
                time.sleep(0.0005)
            if text in arrived:
                latencies.append((arrived[text] - t0) * 1000)
        api.post(f"/api/v1/agent/tickets/{ticket}/resolve", json={"resolution": "bench"}, headers=agent)
    return {"n": n, "arrived": len(latencies), "p50_ms": round(percentile(latencies, 0.5), 1) if latencies else None,
            "p95_ms": round(percentile(latencies, 0.95), 1) if latencies else None}


def index_summary() -> str:
    """What building the current index cost, from its meta.json (the build records it)."""
    from core.artifacts import load_artifacts
    from core.settings import get_settings

    index_dir = load_artifacts(get_settings()).index_dir
    if not index_dir or not (index_dir / "meta.json").exists():
        return "index: not built"
    meta = json.loads((index_dir / "meta.json").read_text())
    size_mb = sum(f.stat().st_size for f in index_dir.iterdir() if f.is_file()) / 2**20
    tune = (meta.get("finetune") or {}).get("seconds")
    return (f"index: {meta.get('phrasings')} phrasings, {size_mb:.0f} MB on disk"
            + (f", e5 fine-tuning {tune:.0f} s of the build" if tune else "")
            + f" (built {meta.get('built_at')}; `make setup` prints the whole build time)")


def load_questions(path: Path) -> list[str]:
    if path.exists():
        return [json.loads(line)["q"] for line in path.read_text().splitlines() if line.strip()]
    from retrieval.kb import load_kb

    return [e.question for e in load_kb(REPO_ROOT / "kb/faq_zh.md").entries]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--questions", type=Path, default=DEFAULT_QUESTIONS)
    parser.add_argument("--requests", type=int, default=None,
                        help="requests per (endpoint, clients) run (800; 120 with --quick)")
    parser.add_argument("--modes", default="hybrid,bm25")
    parser.add_argument("--rate", type=float, default=60.0, help="open loop: new chat questions per second")
    parser.add_argument("--duration", type=float, default=None,
                        help="open loop: seconds (30; 5 with --quick)")
    parser.add_argument("--quick", action="store_true", help="fewer requests and a 5 s open loop, to try it")
    parser.add_argument("--skip-peer", action="store_true", help="no stock-Rasa peer rows")
    parser.add_argument("--skip-openloop", action="store_true", help="no open-loop row")
    args = parser.parse_args()
    requests = args.requests or (120 if args.quick else 800)
    min_requests = 30 if args.quick else 50      # the 1-client runs: a quarter, at least this many
    duration = args.duration or (5.0 if args.quick else 30.0)
    questions = load_questions(args.questions)
    rows = []
    for mode in args.modes.split(","):
        with tempfile.TemporaryDirectory(prefix=f"hc-bench-{mode}-") as tmp, \
                running_stack(Path(tmp), {"HC_RETRIEVAL_MODE": mode, "HC_ADMIN_TOKEN": BENCH_ADMIN,
                                          # one address, thousands of requests: measured, not limited
                                          "HC_RATE_LIMIT_ENABLED": "0"}) \
                as (base, startup_s, pid):
            rss = process_tree_rss_mb(pid)
            print(f"[bench] mode={mode}: healthy after {startup_s:.1f}s, RSS of all processes {rss:.0f} MB",
                  flush=True)
            for kind in ("search", "chat"):
                for unique in (False, True):
                    for clients in (1, 16):
                        n = requests if clients > 1 else max(min_requests, requests // 4)
                        row = {"mode": mode, **asyncio.run(drive(base, kind, questions, clients, n, unique))}
                        rows.append(row)
                        print(f"[bench] {json.dumps(row, ensure_ascii=False)}", flush=True)
            if mode == "hybrid":
                # The greeting through our whole stack, to set beside stock Rasa's (run_peer).
                for clients in (1, 16):
                    n = requests if clients > 1 else max(min_requests, requests // 4)
                    row = {"mode": mode, **asyncio.run(drive_greet(base, clients, n))}
                    rows.append(row)
                    print(f"[bench] {json.dumps(row, ensure_ascii=False)}", flush=True)
                handoff = handoff_round_trip(base, n=10 if args.quick else 50)
                print(f"[bench] handoff round trip: {json.dumps(handoff)}", flush=True)
                rows.append({"mode": mode, "handoff": handoff})
                from tools import bench_pages

                pages = {**bench_pages.widget_size(),
                         **bench_pages.render_times(base, runs=3 if args.quick else 8)}
                print(f"[bench] widget: {json.dumps(pages, ensure_ascii=False)}", flush=True)
                rows.append({"mode": mode, "widget": pages})
                if not args.skip_openloop:
                    # Last in this mode: a backlog it leaves (if the stack fell behind) slows nothing else.
                    row = {"mode": mode,
                           "openloop": asyncio.run(drive_open_loop(base, questions, args.rate, duration))}
                    rows.append(row)
                    print(f"[bench] open loop: {json.dumps(row['openloop'], ensure_ascii=False)}", flush=True)
            rows.append({"mode": mode, "startup_s": round(startup_s, 1), "rss_mb": round(rss)})
    if not args.skip_peer:
        # After our stacks have stopped: the peer has the machine to itself, as each mode had.
        rows.extend(run_peer(requests, min_requests))
    print("\n| mode | endpoint | questions | clients | p50 ms | p95 ms | req/s | errors |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        if "endpoint" in r:
            print(f"| {r['mode']} | {r['endpoint']} | {r['questions']} | {r['clients']} | {r['p50_ms']} "
                  f"| {r['p95_ms']} | {r['rps']} | {r['errors']} |")
    ratios = ratio_rows(rows)
    if ratios:
        print("\n| ours / stock Rasa (same model, same clients) | clients | req/s ratio (>1: ours serves more) "
              "| p50 ratio (>1: ours slower) |")
        print("|---|---|---|---|")
        print("\n".join(ratios))
        print()
    for r in rows:
        if "openloop" in r:
            o = r["openloop"]
            print(f"| {r['mode']} open loop (chat, unique questions; latency from the scheduled send) "
                  f"| offered {o['offered_rps']}/s for {o['duration_s']} s ({o['n']}) "
                  f"| achieved {o['achieved_rps']}/s | p50 {o['p50_ms']} ms | p95 {o['p95_ms']} ms "
                  f"| p99 {o['p99_ms']} ms | errors {o['errors']} "
                  f"| late >100 ms {o['late']} | connections {o['connections']} |")
    for r in rows:
        if "handoff" in r:
            h = r["handoff"]
            print(f"| hand-off round trip (agent message → user's SSE stream) | n {h['n']} | arrived {h['arrived']} "
                  f"| p50 {h['p50_ms']} ms | p95 {h['p95_ms']} ms |")
    for r in rows:
        if "widget" in r:
            w = r["widget"]
            print(f"| widget (widget.js + widget.css) | {w['bytes']} bytes | {w['gzip_bytes']} gzip "
                  f"| first message rendered p50 {w.get('first_message_p50_ms')} ms (max {w.get('first_message_max_ms')}) "
                  f"| question → answer rendered p50 {w.get('answer_rendered_p50_ms')} ms |")
    print(index_summary())
    for r in rows:
        if "startup_s" in r:
            what = r.get("startup_what", "/healthz 200")
            print(f"| {r['mode']} | startup to {what}: {r['startup_s']} s | total RSS: {r['rss_mb']} MB |")


if __name__ == "__main__":
    main()
