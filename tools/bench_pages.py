"""The widget's figures for `make bench`: its size on the wire, and how soon a person sees
something on the demo page (Debian's Chromium through Playwright, on loopback).

- first message: from the start of navigation to /widget until the first message (the welcome)
  is rendered in the opened panel;
- answer: from pressing send on a question until the bot's answer is rendered."""
from __future__ import annotations

import gzip
import shutil
import statistics
import time

from core.settings import REPO_ROOT

WIDGET_FILES = ("widget.js", "widget.css")
QUESTIONS = ["健康码可以截图吗", "为什么我的码是橙色", "外国人可以申请八闽健康码吗", "Can I use a screenshot of my health code?"]


def widget_size() -> dict:
    """Bytes of the widget (script + styles) as served, and gzip-compressed."""
    raw = b"".join((REPO_ROOT / "web" / "widget" / name).read_bytes() for name in WIDGET_FILES)
    return {"files": list(WIDGET_FILES), "bytes": len(raw), "gzip_bytes": len(gzip.compress(raw, 9))}


def render_times(base: str, runs: int = 8) -> dict:
    """p50/max of time to the first message and of question → rendered answer, over `runs` fresh
    page loads (each its own browser context: nothing cached, a new conversation)."""
    from playwright.sync_api import sync_playwright

    from tests._browser_fixtures import CHROMIUM, CHROMIUM_ARGS

    if not shutil.which("chromium"):
        return {"error": "chromium not installed"}
    first, answer = [], []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            for i in range(runs + 1):           # the first run warms the server's caches: not counted
                context = browser.new_context(viewport={"width": 1280, "height": 800})
                page = context.new_page()
                t0 = time.perf_counter()
                page.goto(base + "/widget")
                page.click("[data-hc=launcher]")
                page.wait_for_selector("[data-hc=message]")
                t_first = (time.perf_counter() - t0) * 1000
                bots = page.locator("[data-hc=message][data-from=bot]").count()
                page.fill("[data-hc=input]", f"{QUESTIONS[i % len(QUESTIONS)]} {i}")
                t1 = time.perf_counter()
                page.click("[data-hc=send]")
                # Polled with evaluate: wait_for_function compiles its text with new Function,
                # which the pages' CSP (no unsafe-eval) refuses.
                deadline = time.perf_counter() + 30
                while page.locator("[data-hc=message][data-from=bot]").count() <= bots:
                    if time.perf_counter() > deadline:
                        raise RuntimeError("no answer rendered within 30 s")
                    time.sleep(0.005)
                t_answer = (time.perf_counter() - t1) * 1000
                context.close()
                if i:
                    first.append(t_first)
                    answer.append(t_answer)
        finally:
            browser.close()
    return {"runs": runs, "first_message_p50_ms": round(statistics.median(first), 1),
            "first_message_max_ms": round(max(first), 1),
            "answer_rendered_p50_ms": round(statistics.median(answer), 1),
            "answer_rendered_max_ms": round(max(answer), 1)}
