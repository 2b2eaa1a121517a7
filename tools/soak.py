"""`make soak`: many concurrent conversations for minutes against the scaled stack; what was lost,
how fast each route answered, how the processes' memory moved, and what was left at rest.

    python -m tools.soak [--conversations 200] [--duration-s 300] [--scaled | --single]
                         [--think-s 2,6] [--agents N] [--report-dir reports] [--keep]

It starts the stack itself (tools/run_scaled.py, or tools/run_stack.py with --single) on a fresh
PostgreSQL database (dropped after unless --keep), Redis, a var dir of its own, HC_DEMO=1 and
HC_RATE_LIMIT_ENABLED=0 (every client here is 127.0.0.1: per-address limits would measure the
limiter), and then runs, all through the public port (nginx for --scaled):

* FAQ conversations (half): anonymous, 2–5 questions each from ../shared/eval/faq_dev.jsonl,
  some as /api/v1/faq/search; "right" when the answered entry is one the dev set accepts;
* diagnosis conversations (a quarter): signed in as a demo account (/api/v1/demo/sessions),
  the account's own question, a follow-up, now and then with the user's name, ID and phone
  number typed in (they must be masked everywhere);
* hand-offs (a quarter): 转人工, half of them leave a callback number, then listen for the agent,
  half on the SSE stream (/api/v1/chat/stream, resumed from the turn's cursor), half polling
  /api/v1/chat/messages; once the agent resolves, they rate and start again;
* agents (created through the admin API) take the longest-waiting open ticket, claim it, send
  two messages and resolve it.

Counted: every request's status and latency per route (p50/p95/p99), 5xx and transport errors;
an agent message that never reaches its user (live, by the end of a grace period after the
agents stop; and whether it is in the conversation's feed at all); a ticket a user was given
that is not in the database at the end; RSS of every process every 10 s (first vs last minute);
restarts; and `tools.pii_scan` over the run's var dir and the database. Printed, and written to
<report-dir>/soak.json and soak.md.
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import random
import re
import secrets
import shutil
import statistics
import tempfile
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from core.settings import REPO_ROOT

DEV_SET = REPO_ROOT.parent / "shared" / "eval" / "faq_dev.jsonl"
FALLBACK_FAQ = [("健康码可以截图吗", ["personal.screenshot"]), ("怎么为家人申领", ["family.howto"]),
                ("八闽健康码在哪里申请", ["personal.howto"]), ("How do I create my own health code?", ["personal.howto"])]
# Each demo account and the question its own case answers (tests/test_diagnosis_e2e.py).
DIAGNOSIS = [("demo-orange-quarantine", "我的健康码为什么是橙色", "orange.quarantine_release_pending"),
             ("demo-orange-origin", "我的码咋是橙的", "orange.origin_not_synced"),
             ("demo-orange-overseas", "why is my health code orange", "orange.overseas_observation"),
             ("demo-face-mismatch", "我刷脸老是通不过", "face.identity_mismatch"),
             ("demo-face-retry", "my face verification keeps failing", "face.retry_other_login"),
             ("demo-minor", "我的健康码怎么生成不了", "generate.minor"),
             ("demo-family-full", "我能给我儿子申请健康码吗", "family.quota_full"),
             ("demo-overseas-checkin", "我从国外回来，境外入闽码怎么申请不了", "overseas.checkin_missing")]
TYPED_ID = "350102199001011234"           # typed by "users" in some diagnosis turns: must be masked
TYPED_PHONE = "13912345678"
GRACE_S = 20                              # after the agents stop: the last messages' way to the user
SAMPLE_EVERY_S = 10
_ID_IN_PATH = re.compile(r"/(HC-[^/]+|\d+)(?=/|$)")


def say(msg: str) -> None:
    print(f"[soak] {msg}", flush=True)


# Sender ids end in a whole uuid4 hex (tools.pii_scan skips machine ids of that shape): a short
# all-digit hex after "-7-" reads like a phone number to the scanner, and would be reported.


def faq_items() -> list[tuple[str, list[str]]]:
    if DEV_SET.is_file():
        items = [json.loads(line) for line in DEV_SET.read_text().splitlines() if line.strip()]
        items = [(i["q"], list(i.get("accept") or [])) for i in items if i.get("accept")]
        if items:
            return items
    return FALLBACK_FAQ


def percentile(values: list[float], p: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    k = (len(ordered) - 1) * p / 100
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


# --- what was seen ------------------------------------------------------------------------------
@dataclass
class Handoff:
    ticket_id: str
    sender: str
    live: str                                             # "stream" or "poll"
    created: float
    received: dict[str, float] = field(default_factory=dict)   # message id → monotonic arrival
    resolved: bool = False


@dataclass
class Stats:
    latency: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    status: dict[str, Counter] = field(default_factory=lambda: defaultdict(Counter))
    transport: Counter = field(default_factory=Counter)
    handoffs: dict[str, Handoff] = field(default_factory=dict)
    agent_sent: dict[str, tuple[str, float]] = field(default_factory=dict)   # message id → (ticket, sent at)
    faq: Counter = field(default_factory=Counter)
    diagnosis: Counter = field(default_factory=Counter)
    counts: Counter = field(default_factory=Counter)
    known: set[str] = field(default_factory=set)        # raw personal strings the run typed

    def record(self, route: str, status: int, seconds: float) -> None:
        self.latency[route].append(seconds)
        self.status[route][status] += 1


def route_of(method: str, url: str) -> str:
    return f"{method} {_ID_IN_PATH.sub('/{id}', url.split('?', 1)[0])}"


class Soak:
    def __init__(self, base: str, admin_token: str, *, conversations: int, duration_s: float,
                 think_s: tuple[float, float], agents: int, seed: int = 7):
        self.base, self.admin = base, admin_token
        self.conversations, self.duration_s, self.think_s = conversations, duration_s, think_s
        self.n_agents = agents
        self.rng = random.Random(seed)
        self.stats = Stats()
        self.faq = faq_items()
        self.users_stop = asyncio.Event()       # conversations stop starting turns
        self.agents_stop = asyncio.Event()      # agents stop taking tickets
        self.listen_stop = asyncio.Event()      # hand-off users stop listening
        self.client: httpx.AsyncClient | None = None

    # -- plumbing --------------------------------------------------------------------------------
    async def call(self, method: str, url: str, *, route: str | None = None, **kw) -> httpx.Response | None:
        route = route or route_of(method, url)
        started = time.perf_counter()
        try:
            r = await self.client.request(method, url, **kw)
        except httpx.HTTPError as exc:
            self.stats.transport[f"{route}: {type(exc).__name__}"] += 1
            self.stats.record(route, 0, time.perf_counter() - started)
            return None
        self.stats.record(route, r.status_code, time.perf_counter() - started)
        return r

    async def think(self, rng: random.Random, scale: float = 1.0) -> None:
        lo, hi = self.think_s
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self.users_stop.wait(), rng.uniform(lo, hi) * scale)

    async def chat(self, kind: str, sender: str, text: str, token: str | None = None) -> dict | None:
        r = await self.call("POST", "/api/v1/chat", route=f"POST /api/v1/chat ({kind})",
                            json={"sender": sender, "text": text},
                            headers={"Authorization": f"Bearer {token}"} if token else None)
        self.stats.counts["turns"] += 1
        return r.json() if r is not None and r.status_code == 200 else None

    # -- the users -------------------------------------------------------------------------------
    async def faq_user(self, i: int) -> None:
        rng = random.Random(f"faq{i}")
        while not self.users_stop.is_set():
            sender = f"soak-faq{i}-{uuid.uuid4().hex}"
            for _ in range(rng.randint(2, 5)):
                if self.users_stop.is_set():
                    return
                q, accept = rng.choice(self.faq)
                if rng.random() < 0.15:
                    await self.call("GET", "/api/v1/faq/search", params={"q": q})
                else:
                    body = await self.chat("faq", sender, q)
                    if body is not None:
                        self.stats.faq["turns"] += 1
                        self.stats.faq["right" if body["meta"].get("faq_id") in accept else "other"] += 1
                await self.think(rng)

    async def diagnosis_user(self, i: int) -> None:
        from accounts import demo
        from assistant.diagnose import china_today

        rng = random.Random(f"diag{i}")
        user_id, question, code = DIAGNOSIS[(i // 4) % len(DIAGNOSIS)]     # diagnosis users are every 4th
        name = next(d["name"] for d in demo.documents(china_today()) if d["user_id"] == user_id)
        self.stats.known.add(name)
        token = None
        while token is None and not self.users_stop.is_set():
            r = await self.call("POST", "/api/v1/demo/sessions", json={"user_id": user_id})
            if r is not None and r.status_code == 200:
                token = r.json()["token"]
            else:
                await self.think(rng)
        while not self.users_stop.is_set():
            sender = f"soak-diag{i}-{uuid.uuid4().hex}"
            text, personal = question, False
            if rng.random() < 0.1:       # the user types their name, ID and phone number in
                personal = True
                text = (f"我是{name},身份证{TYPED_ID},电话{TYPED_PHONE},{question}" if not question.isascii()
                        else f"I am {name}, ID {TYPED_ID}, phone {TYPED_PHONE}. {question}")
                self.stats.counts["turns_with_personal_data"] += 1
            body = await self.chat("diagnosis", sender, text, token)
            if body is not None:
                which = "personal" if personal else "plain"
                self.stats.diagnosis[f"{which} turns"] += 1
                if code in body["meta"].get("diagnosis", []):
                    self.stats.diagnosis[f"{which} right"] += 1
                else:
                    self.stats.diagnosis[f"other: {user_id}{' (with personal data)' if personal else ''}"] += 1
            await self.think(rng)
            if rng.random() < 0.5 and not self.users_stop.is_set():
                await self.chat("diagnosis", sender, "那我该怎么办" if rng.random() < 0.7 else "what should I do now?", token)
                await self.think(rng)

    async def handoff_user(self, i: int) -> None:
        rng = random.Random(f"handoff{i}")
        live = "stream" if (i // 4) % 2 == 0 else "poll"     # hand-off users are every 4th
        while not self.users_stop.is_set():
            sender = f"soak-ho{i}-{uuid.uuid4().hex}"
            body = await self.chat("handoff", sender, "转人工")
            ticket_id = body and body["meta"].get("ticket_id")
            if not ticket_id:
                self.stats.counts["handoff_without_ticket" if body else "handoff_failed"] += 1
                await self.think(rng)
                continue
            h = Handoff(ticket_id, sender, live, time.monotonic())
            self.stats.handoffs[ticket_id] = h
            cursor = body["meta"].get("cursor") or "0"
            if rng.random() < 0.5:
                phone = "139" + "".join(rng.choice("0123456789") for _ in range(8))
                self.stats.known.add(phone)
                left = await self.chat("handoff", sender, f"我的手机是 {phone[:3]}-{phone[3:7]}-{phone[7:]}")
                if left and left["meta"].get("cursor"):
                    cursor = left["meta"]["cursor"]
            rating = await (self.listen_stream(h, cursor) if live == "stream" else self.listen_poll(h, cursor))
            if rating and not self.users_stop.is_set():
                await self.chat("handoff", sender, rating)
            await self.think(rng)

    def _took(self, h: Handoff, msg: dict) -> str | None:
        """Note a delivered message; the rating payload once the agent resolved the ticket."""
        h.received.setdefault(str(msg["id"]), time.monotonic())
        for b in msg.get("buttons") or []:
            if str(b.get("payload", "")).startswith("/rate_ticket"):
                h.resolved = True
                return b["payload"]
        return None

    async def listen_stream(self, h: Handoff, cursor: str) -> str | None:
        last = cursor
        while not self.listen_stop.is_set():
            reader = asyncio.create_task(self._stream_once(h, last))
            stopper = asyncio.create_task(self.listen_stop.wait())
            done, _ = await asyncio.wait({reader, stopper}, return_when=asyncio.FIRST_COMPLETED)
            stopper.cancel()
            if reader not in done:
                reader.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await reader
                return None
            rating, last = reader.result()
            if rating:
                return rating
            self.stats.counts["stream_reconnects"] += 1
            await asyncio.sleep(1)
        return None

    async def _stream_once(self, h: Handoff, after: str) -> tuple[str | None, str]:
        route = "GET /api/v1/chat/stream"
        started = time.perf_counter()
        last = after
        try:
            async with self.client.stream("GET", "/api/v1/chat/stream", params={"sender": h.sender},
                                          headers={"Last-Event-ID": after},
                                          timeout=httpx.Timeout(30, read=60)) as r:
                self.stats.record(route, r.status_code, time.perf_counter() - started)
                if r.status_code != 200:
                    return None, last
                async for line in r.aiter_lines():
                    if line.startswith("id:"):
                        last = line[3:].strip()
                    elif line.startswith("data:"):
                        rating = self._took(h, json.loads(line[5:]))
                        if rating:
                            return rating, last
        except httpx.HTTPError as exc:
            self.stats.transport[f"{route}: {type(exc).__name__}"] += 1
        return None, last

    async def listen_poll(self, h: Handoff, cursor: str) -> str | None:
        while not self.listen_stop.is_set():
            r = await self.call("GET", "/api/v1/chat/messages", params={"sender": h.sender, "after": cursor})
            if r is not None and r.status_code == 200:
                body = r.json()
                cursor = body["cursor"]
                for msg in body["messages"]:
                    rating = self._took(h, msg)
                    if rating:
                        return rating
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.listen_stop.wait(), 2.0)
        return None

    # -- the agents ------------------------------------------------------------------------------
    async def agent(self, k: int, token: str) -> None:
        rng = random.Random(f"agent{k}")
        auth = {"Authorization": f"Bearer {token}"}
        while not self.agents_stop.is_set():
            r = await self.call("GET", "/api/v1/agent/tickets", params={"status": "open", "limit": 20}, headers=auth)
            waiting = [t["id"] for t in (r.json()["tickets"] if r is not None and r.status_code == 200 else [])
                       if t["id"] in self.stats.handoffs]
            if not waiting:
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self.agents_stop.wait(), 1.5)
                continue
            ticket_id = rng.choice(waiting[:4])
            r = await self.call("POST", f"/api/v1/agent/tickets/{ticket_id}/claim", headers=auth)
            if r is None or r.status_code != 200:
                self.stats.counts["claims_lost_race" if r is not None and r.status_code == 409 else "claims_failed"] += 1
                continue
            self.stats.counts["tickets_claimed"] += 1
            for j in range(2):
                await asyncio.sleep(rng.uniform(0.5, 2.0))
                sent = time.monotonic()        # before the call: the stream may deliver before it returns
                r = await self.call("POST", f"/api/v1/agent/tickets/{ticket_id}/messages", headers=auth,
                                    json={"text": f"您好,我是客服{k},这是第{j + 1}条回复"})
                if r is not None and r.status_code == 200:
                    self.stats.agent_sent[str(r.json()["message_id"])] = (ticket_id, sent)
            await asyncio.sleep(rng.uniform(0.5, 1.5))
            r = await self.call("POST", f"/api/v1/agent/tickets/{ticket_id}/resolve", headers=auth,
                                json={"resolution": "已为您处理,请刷新健康码查看。"})
            if r is not None and r.status_code == 200:
                self.stats.counts["tickets_resolved"] += 1

    # -- the run ---------------------------------------------------------------------------------
    async def run(self, sample: Callable[[], dict[str, int]] | None = None) -> dict:
        limits = httpx.Limits(max_connections=self.conversations + self.n_agents + 50,
                              max_keepalive_connections=self.conversations + self.n_agents + 50)
        async with httpx.AsyncClient(base_url=self.base, timeout=30, limits=limits) as client:
            self.client = client
            tokens = []
            for k in range(self.n_agents):
                r = await client.post("/api/v1/admin/agents", json={"name": f"压测坐席{k}"},
                                      headers={"Authorization": f"Bearer {self.admin}"})
                r.raise_for_status()
                tokens.append(r.json()["token"])
            rss: list[tuple[float, dict[str, int]]] = []
            t0 = time.monotonic()

            async def sampler():
                while not self.listen_stop.is_set():
                    if sample is not None:
                        rss.append((time.monotonic() - t0, await asyncio.to_thread(sample)))
                    with contextlib.suppress(asyncio.TimeoutError):
                        await asyncio.wait_for(self.listen_stop.wait(), SAMPLE_EVERY_S)

            kinds = ["faq", "faq", "diagnosis", "handoff"]
            users = []
            for i in range(self.conversations):
                kind = kinds[i % len(kinds)]
                fn = {"faq": self.faq_user, "diagnosis": self.diagnosis_user, "handoff": self.handoff_user}[kind]
                users.append(asyncio.create_task(fn(i)))
                await asyncio.sleep(min(0.02, 2.0 / max(1, self.conversations)))   # a ramp, not a stampede
            agents = [asyncio.create_task(self.agent(k, t)) for k, t in enumerate(tokens)]
            watch = asyncio.create_task(sampler())
            await asyncio.sleep(max(0.0, self.duration_s - (time.monotonic() - t0)))
            self.users_stop.set()
            self.agents_stop.set()
            await asyncio.gather(*agents)                         # they finish the ticket in hand
            ended = time.monotonic()
            await asyncio.sleep(GRACE_S)
            self.listen_stop.set()
            await asyncio.gather(*users, return_exceptions=True)
            await watch
            feeds = await self.final_feeds()
        return {"seconds": round(ended - t0, 1), "rss": rss, "feeds": feeds}

    async def final_feeds(self) -> dict[str, set[str]]:
        """Each hand-off conversation's whole feed after the run (what is stored for the user)."""
        out: dict[str, set[str]] = {}
        sem = asyncio.Semaphore(16)

        async def one(h: Handoff):
            async with sem:
                r = await self.client.get("/api/v1/chat/messages", params={"sender": h.sender, "after": "0"})
                if r.status_code == 200:
                    out[h.ticket_id] = {m["id"] for m in r.json()["messages"]}

        await asyncio.gather(*(one(h) for h in self.stats.handoffs.values()))
        return out


# --- memory -------------------------------------------------------------------------------------
def _children(pid: int) -> list[int]:
    out = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        with contextlib.suppress(OSError):
            out += [int(c) for c in (task / "children").read_text().split()]
    return out


def _rss(pid: int) -> int:
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def tree_rss(pid: int) -> int:
    """The process and all its descendants (nginx's master and workers count as one)."""
    total, todo, seen = 0, [pid], set()
    while todo:
        p = todo.pop()
        if p in seen:
            continue
        seen.add(p)
        total += _rss(p)
        todo += _children(p)
    return total


def named_children(root: int) -> dict[str, int]:
    """tools.run_stack's children, named by what they run."""
    names: dict[str, int] = {}
    for pid in _children(root):
        with contextlib.suppress(OSError):
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            names["rasa" if "rasa" in cmd else "app" if "api.main" in cmd else f"pid-{pid}"] = pid
    return names


def rss_summary(samples: list[tuple[float, dict[str, int]]], duration_s: float) -> dict[str, dict]:
    """Per process: mean RSS over the first and the last minute (a third of the run when shorter)."""
    window = min(60.0, max(duration_s / 3, SAMPLE_EVERY_S))
    out = {}
    names = sorted({n for _t, s in samples for n in s})
    for name in names:
        series = [(t, s[name]) for t, s in samples if s.get(name)]
        if not series:
            continue
        end = series[-1][0]
        first = [v for t, v in series if t <= series[0][0] + window]
        last = [v for t, v in series if t >= end - window]
        f, l_ = statistics.mean(first) / 2**20, statistics.mean(last) / 2**20
        out[name] = {"first_mb": round(f, 1), "last_mb": round(l_, 1), "growth_mb": round(l_ - f, 1),
                     "growth_pct": round((l_ - f) / f * 100, 1) if f else None,
                     "max_mb": round(max(v for _t, v in series) / 2**20, 1), "samples": len(series)}
    return out


# --- the report ---------------------------------------------------------------------------------
def summarise(soak: Soak, result: dict, *, tickets_in_db: set[str] | None, pii_hits: list,
              restarts: dict[str, int] | None, mode: str, started_at: str, load: tuple) -> dict:
    st = soak.stats
    routes = {}
    for route in sorted(st.latency):
        ms = [s * 1000 for s in st.latency[route]]
        codes = st.status[route]
        routes[route] = {"n": len(ms), "5xx": sum(v for c, v in codes.items() if c >= 500),
                         "4xx": sum(v for c, v in codes.items() if 400 <= c < 500),
                         "no_answer": codes.get(0, 0),
                         "p50_ms": _r(percentile(ms, 50)), "p95_ms": _r(percentile(ms, 95)),
                         "p99_ms": _r(percentile(ms, 99)), "max_ms": _r(max(ms) if ms else None)}
    # Agent messages: live (stream/poll) before the listeners stopped, and in the feed at all.
    not_live, missing, delays = [], [], defaultdict(list)
    for message_id, (ticket_id, sent_at) in st.agent_sent.items():
        h = st.handoffs[ticket_id]
        got = h.received.get(message_id)
        if got is None:
            not_live.append(message_id)
        else:
            delays[h.live].append((got - sent_at) * 1000)
        if message_id not in result["feeds"].get(ticket_id, set()):
            missing.append(message_id)
    lost_tickets = sorted(set(st.handoffs) - tickets_in_db) if tickets_in_db is not None else None
    five_xx = sum(r["5xx"] for r in routes.values())
    report = {
        "started_at": started_at, "mode": mode, "conversations": soak.conversations,
        "duration_s": soak.duration_s, "ran_s": result["seconds"], "think_s": list(soak.think_s),
        "agents": soak.n_agents,
        "machine": {"cpus": os.cpu_count(), "load_before": load[0], "load_after": load[1],
                    "python": platform.python_version(), "shared": "other sessions' tests may run on it"},
        "requests": sum(r["n"] for r in routes.values()), "turns": st.counts["turns"],
        "5xx": five_xx, "no_answer": sum(r["no_answer"] for r in routes.values()),
        "transport_errors": dict(st.transport),
        "routes": routes,
        "faq": {"turns": st.faq["turns"], "right": st.faq["right"],
                "right_pct": _pct(st.faq["right"], st.faq["turns"])},
        "diagnosis": {"turns": st.diagnosis["plain turns"], "right": st.diagnosis["plain right"],
                      "right_pct": _pct(st.diagnosis["plain right"], st.diagnosis["plain turns"]),
                      "with_personal_data": {"turns": st.diagnosis["personal turns"],
                                             "right": st.diagnosis["personal right"],
                                             "right_pct": _pct(st.diagnosis["personal right"],
                                                               st.diagnosis["personal turns"])},
                      "other": {k[7:]: v for k, v in st.diagnosis.items() if k.startswith("other: ")}},
        "handoff": {"tickets": len(st.handoffs), "claimed": st.counts["tickets_claimed"],
                    "resolved": st.counts["tickets_resolved"],
                    "resolved_seen_by_user": sum(h.resolved for h in st.handoffs.values()),
                    "by_stream": sum(h.live == "stream" for h in st.handoffs.values()),
                    "lost_tickets": lost_tickets, "without_ticket": st.counts["handoff_without_ticket"],
                    "claims_lost_race": st.counts["claims_lost_race"]},
        "agent_messages": {"sent": len(st.agent_sent), "lost": len(not_live), "missing_from_feed": len(missing),
                           "lost_ids": not_live[:20],
                           "delivery_ms": {k: {"n": len(v), "p50": _r(percentile(v, 50)), "p95": _r(percentile(v, 95)),
                                               "max": _r(max(v))} for k, v in delays.items() if v}},
        "counts": dict(st.counts),
        "rss": rss_summary(result["rss"], result["seconds"]),
        "restarts": restarts,
        "pii_hits": len(pii_hits), "pii_samples": [f"{h.kind} {h.where} {h.sample}" for h in pii_hits[:10]],
    }
    return report


def _r(v: float | None) -> float | None:
    return None if v is None else round(v, 1)


def _pct(a: int, b: int) -> float | None:
    return round(100 * a / b, 1) if b else None


def render_table(report: dict) -> str:
    lines = [f"| route | n | 5xx | 4xx | no answer | p50 ms | p95 ms | p99 ms | max ms |",
             "|---|---|---|---|---|---|---|---|---|"]
    for route, r in report["routes"].items():
        lines.append(f"| {route} | {r['n']} | {r['5xx']} | {r['4xx']} | {r['no_answer']} | {r['p50_ms']} | "
                     f"{r['p95_ms']} | {r['p99_ms']} | {r['max_ms']} |")
    return "\n".join(lines)


def render_md(report: dict) -> str:
    h, am = report["handoff"], report["agent_messages"]
    m = report["machine"]
    out = [f"# Soak ({report['mode']}): {report['conversations']} conversations for {report['duration_s']:g} s",
           "",
           f"Started {report['started_at']}; `python -m tools.soak --conversations {report['conversations']} "
           f"--duration-s {report['duration_s']:g} --{report['mode']}`; think time {report['think_s'][0]:g}–"
           f"{report['think_s'][1]:g} s, {report['agents']} agents. Machine: {m['cpus']} CPUs, load "
           f"{m['load_before']} before / {m['load_after']} after ({m['shared']}).",
           "",
           f"- requests {report['requests']} (chat turns {report['turns']}), **5xx {report['5xx']}**, "
           f"no answer {report['no_answer']}",
           f"- FAQ turns {report['faq']['turns']}, answered with an accepted entry {report['faq']['right_pct']} %; "
           f"diagnosis turns {report['diagnosis']['turns']}, the account's own finding {report['diagnosis']['right_pct']} % "
           f"(with the user's name, ID and phone typed in: {report['diagnosis']['with_personal_data']['turns']} turns, "
           f"{report['diagnosis']['with_personal_data']['right_pct']} %)",
           f"- hand-offs: {h['tickets']} tickets, {h['claimed']} claimed, {h['resolved']} resolved, "
           f"**lost tickets {len(h['lost_tickets']) if h['lost_tickets'] is not None else 'n/a'}**",
           f"- agent messages: {am['sent']} sent, **lost {am['lost']}** (not delivered live), "
           f"missing from the feed {am['missing_from_feed']}; delivery (agent sends → user has it) "
           + ", ".join(f"{k} p50 {v['p50']} ms / p95 {v['p95']} ms / max {v['max']} ms"
                       for k, v in am["delivery_ms"].items()),
           f"- restarts during the run: {report['restarts']}",
           f"- pii_scan (var dir + database): **{report['pii_hits']} hits**",
           "", "## Latency per route", "", render_table(report), "",
           "## Memory (RSS, MB; mean over the first and the last minute)", "",
           "| process | first | last | growth | max |", "|---|---|---|---|---|"]
    for name, r in report["rss"].items():
        out.append(f"| {name} | {r['first_mb']} | {r['last_mb']} | {r['growth_mb']:+} ({r['growth_pct']} %) | {r['max_mb']} |")
    return "\n".join(out) + "\n"


def print_report(report: dict) -> None:
    print(render_md(report), flush=True)


def write_report(report: dict, report_dir: Path) -> None:
    report_dir.mkdir(parents=True, exist_ok=True)
    (report_dir / "soak.json").write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    (report_dir / "soak.md").write_text(render_md(report))


# --- against a running stack (tests) and the command ---------------------------------------------
def soak_running(base: str, admin_token: str, *, var_dir: Path, database_url: str | None,
                 conversations: int, duration_s: float, think_s: tuple[float, float] = (2.0, 6.0),
                 agents: int | None = None, sample: Callable[[], dict[str, int]] | None = None,
                 restarts: Callable[[], dict[str, int]] | None = None, mode: str = "scaled") -> dict:
    """One soak against a stack that is already up; the report (nothing written)."""
    from tools import pii_scan

    agents = agents or max(2, conversations // 20)
    soak = Soak(base, admin_token, conversations=conversations, duration_s=duration_s, think_s=think_s, agents=agents)
    started_at = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    load_before = round(os.getloadavg()[0], 2)
    before = restarts() if restarts else None
    result = asyncio.run(soak.run(sample))
    after = restarts() if restarts else None
    delta = {k: after[k] - (before or {}).get(k, 0) for k in after} if after is not None else None
    tickets = None
    if database_url:
        import psycopg

        with psycopg.connect(database_url) as conn:
            tickets = {r[0] for r in conn.execute("select id from tickets where id = any(%s)",
                                                  (list(soak.stats.handoffs),))}
    known = tuple(sorted(soak.stats.known | {TYPED_ID, TYPED_PHONE}))
    hits = pii_scan.scan_dir(var_dir, known=known)
    if database_url:
        hits += pii_scan.scan_database(database_url, known=known)
    return summarise(soak, result, tickets_in_db=tickets, pii_hits=hits, restarts=delta, mode=mode,
                     started_at=started_at, load=(load_before, round(os.getloadavg()[0], 2)))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--conversations", type=int, default=200)
    ap.add_argument("--duration-s", type=float, default=300)
    group = ap.add_mutually_exclusive_group()
    group.add_argument("--scaled", dest="mode", action="store_const", const="scaled", default="scaled",
                       help="two app instances + two Rasa servers behind nginx (default)")
    group.add_argument("--single", dest="mode", action="store_const", const="single",
                       help="one app + one Rasa (tools/run_stack.py), on the same PostgreSQL + Redis")
    ap.add_argument("--think-s", default="2,6", help="a user's pause between turns: min,max seconds")
    ap.add_argument("--agents", type=int, default=None, help="default: one per 20 conversations (at least 2)")
    ap.add_argument("--report-dir", type=Path, default=REPO_ROOT / "reports")
    ap.add_argument("--keep", action="store_true", help="keep the var dir and the database")
    args = ap.parse_args(argv)
    think = tuple(float(x) for x in args.think_s.split(","))

    from core.settings import get_settings
    from tools.run_scaled import DEFAULT_DATABASE, DEFAULT_REDIS, check_redis, ensure_database

    settings = get_settings()
    server = (settings.database_url or DEFAULT_DATABASE).rsplit("/", 1)[0]
    database = f"{server}/hc_soak_{uuid.uuid4().hex[:8]}"
    redis_url = settings.redis_url or DEFAULT_REDIS
    check_redis(redis_url)
    ensure_database(database)
    var_dir = Path(tempfile.mkdtemp(prefix="hc-soak-"))
    admin = secrets.token_urlsafe(24)
    env = {"HC_DATABASE_URL": database, "HC_REDIS_URL": redis_url, "HC_ADMIN_TOKEN": admin, "HC_DEMO": "1",
           "HC_RATE_LIMIT_ENABLED": "0"}
    say(f"{args.mode} stack on {database.rsplit('/', 1)[1]}, var dir {var_dir}")
    try:
        if args.mode == "scaled":
            from tools.run_scaled import running_scaled

            with running_scaled(var_dir, env=env) as run:
                say(f"stack healthy in {run.startup_s:.1f}s at {run.base}; "
                    f"{args.conversations} conversations for {args.duration_s:g}s")

                def sample() -> dict[str, int]:
                    return {name: tree_rss(pid) for name, pid in run.state()["pids"].items()}

                report = soak_running(run.base, admin, var_dir=var_dir, database_url=database,
                                      conversations=args.conversations, duration_s=args.duration_s, think_s=think,
                                      agents=args.agents, sample=sample, restarts=lambda: run.state()["restarts"],
                                      mode="scaled")
        else:
            from tools.stack import running_stack

            with running_stack(var_dir, env=env) as (base, startup_s, pid):
                say(f"stack healthy in {startup_s:.1f}s at {base}")
                report = soak_running(base, admin, var_dir=var_dir, database_url=database,
                                      conversations=args.conversations, duration_s=args.duration_s, think_s=think,
                                      agents=args.agents, sample=lambda: {n: tree_rss(p) for n, p in named_children(pid).items()},
                                      mode="single")
    finally:
        if not args.keep:
            _drop(database)
            shutil.rmtree(var_dir, ignore_errors=True)
    print_report(report)
    write_report(report, args.report_dir)
    say(f"written {args.report_dir / 'soak.json'} and {args.report_dir / 'soak.md'}")
    ok = (report["5xx"] == 0 and report["agent_messages"]["lost"] == 0 and report["pii_hits"] == 0
          and not report["handoff"]["lost_tickets"])
    return 0 if ok else 1


def _drop(url: str) -> None:
    import psycopg
    from psycopg import sql

    server, name = url.rsplit("/", 1)
    with contextlib.suppress(psycopg.Error), psycopg.connect(f"{server}/postgres", autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


if __name__ == "__main__":
    raise SystemExit(main())
