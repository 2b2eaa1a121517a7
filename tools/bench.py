"""`make bench`: p50/p95 latency of FAQ search and chat at 1 and 16 clients, full vs BM25-only.

Each mode starts the whole stack fresh (tools.stack), records the time to a healthy /healthz and
the total RSS of its processes, then drives it with closed-loop clients on loopback (a lean
keep-alive client, tools/loadgen.py, so the load generator takes little of the 2 cores): a bounded
number of requests per run, questions cycled from the dev set (only read, never trained on).
"repeated" runs ask questions the service has seen (each once before the run, so the result and
NLU caches hold them); "unique" runs append a number to every question, so no cache helps.
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
from tools.stack import running_stack

DEFAULT_QUESTIONS = REPO_ROOT.parent / "shared" / "eval" / "faq_dev.jsonl"


def process_tree_rss_mb(root_pid: int) -> float:
    """RSS of a process and all its descendants, from /proc."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
        except (OSError, IndexError, ValueError):
            continue
    total_kb, todo = 0, [root_pid]
    while todo:
        pid = todo.pop()
        todo.extend(children.get(pid, []))
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total_kb += int(line.split()[1])
        except OSError:
            continue
    return total_kb / 1024


# Numbers appended to "unique" questions continue from run to run, so no run sees another's text.
_UNIQUE_NUMBERS = itertools.count(1)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


async def drive(base: str, kind: str, questions: list[str], clients: int, total: int,
                unique: bool = False) -> dict:
    """unique: every request a text never seen before (a number appended), so no cache helps."""
    latencies: list[float] = []
    errors = 0
    counter = iter(range(total))
    numbers = {i: next(_UNIQUE_NUMBERS) for i in range(total)} if unique else {}

    async def call(conn: Connection, q: str, sender: str) -> bool:
        """True for a real answer: a 200 with results, or a 200 with at least one bot message
        (a turn whose action failed still comes back 200, with nothing to say)."""
        if kind == "search":
            status, body = await conn.request("GET", "/api/v1/faq/search", params={"q": q, "k": 3})
            return status == 200 and isinstance(json.loads(body).get("results"), list)
        status, body = await conn.request("POST", "/api/v1/chat", json_body={"sender": sender, "text": q})
        return status == 200 and bool(json.loads(body).get("messages"))

    async def worker(wid: int) -> None:
        nonlocal errors
        async with Connection(base) as conn:
            for i in counter:
                q = questions[i % len(questions)] + (f" {numbers[i]}" if unique else "")
                t0 = time.perf_counter()
                ok = await call(conn, q, f"bench-{wid}-{i}")
                latencies.append((time.perf_counter() - t0) * 1000)
                errors += not ok

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
    t0 = time.perf_counter()
    await asyncio.gather(*(worker(w) for w in range(clients)))
    wall = time.perf_counter() - t0
    return {"endpoint": kind, "questions": "unique" if unique else "repeated", "clients": clients,
            "n": len(latencies), "errors": errors,
            "p50_ms": round(percentile(latencies, 0.5), 1), "p95_ms": round(percentile(latencies, 0.95), 1),
            "mean_ms": round(statistics.fmean(latencies), 1), "rps": round(len(latencies) / wall, 1)}


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
    parser.add_argument("--requests", type=int, default=800, help="requests per (endpoint, clients) run")
    parser.add_argument("--modes", default="hybrid,bm25")
    args = parser.parse_args()
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
                        n = args.requests if clients > 1 else max(50, args.requests // 4)
                        row = {"mode": mode, **asyncio.run(drive(base, kind, questions, clients, n, unique))}
                        rows.append(row)
                        print(f"[bench] {json.dumps(row, ensure_ascii=False)}", flush=True)
            if mode == "hybrid":
                handoff = handoff_round_trip(base)
                print(f"[bench] handoff round trip: {json.dumps(handoff)}", flush=True)
                rows.append({"mode": mode, "handoff": handoff})
                from tools import bench_pages

                pages = {**bench_pages.widget_size(), **bench_pages.render_times(base)}
                print(f"[bench] widget: {json.dumps(pages, ensure_ascii=False)}", flush=True)
                rows.append({"mode": mode, "widget": pages})
            rows.append({"mode": mode, "startup_s": round(startup_s, 1), "rss_mb": round(rss)})
    print("\n| mode | endpoint | questions | clients | p50 ms | p95 ms | req/s | errors |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        if "endpoint" in r:
            print(f"| {r['mode']} | {r['endpoint']} | {r['questions']} | {r['clients']} | {r['p50_ms']} "
                  f"| {r['p95_ms']} | {r['rps']} | {r['errors']} |")
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
            print(f"| {r['mode']} | startup to /healthz 200: {r['startup_s']} s | total RSS: {r['rss_mb']} MB |")


if __name__ == "__main__":
    main()
