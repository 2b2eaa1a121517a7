"""Browser tests: the real stack (Rasa + app, demo mode) once per session, Debian's Chromium
driven by Playwright, screenshots into reports/screens/, and the axe-core check.

Playwright never downloads a browser here: it launches /usr/bin/chromium (tools/setup.py
installs Debian's package when it is missing). Without it, or without Playwright, the tests skip
outside CI and fail under CI=true (tests/_env.missing)."""
from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from core.settings import REPO_ROOT
from tests._env import missing

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# No sandbox (CI runs as root in a container), no GPU, and nothing that phones home.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--disable-component-update",
                 "--no-first-run", "--disable-sync", "--metrics-recording-only",
                 "--disable-default-apps", "--mute-audio"]
SCREENS = REPO_ROOT / "reports" / "screens"
ADMIN = "browser-admin-token"

DESKTOP = {"viewport": {"width": 1280, "height": 800}}
PHONE = {"viewport": {"width": 390, "height": 844}, "device_scale_factor": 2, "is_mobile": True,
         "has_touch": True}


@dataclass
class WebStack:
    base: str
    var_dir: Path
    admin: str = ADMIN

    def api(self, method: str, path: str, token: str | None = None, **kw) -> httpx.Response:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        with httpx.Client(base_url=self.base, timeout=30) as client:
            return client.request(method, path, headers=headers, **kw)

    def agent_token(self, name: str) -> str:
        resp = self.api("POST", "/api/v1/admin/agents", self.admin, json={"name": name})
        assert resp.status_code == 200, resp.text
        return resp.json()["token"]

    def user_token(self, user_id: str) -> str:
        resp = self.api("POST", "/api/v1/admin/sessions", self.admin, json={"user_id": user_id})
        assert resp.status_code == 200, resp.text
        return resp.json()["token"]

    def tickets(self, token: str, status: str = "") -> list[dict]:
        resp = self.api("GET", "/api/v1/agent/tickets", token, params={"status": status})
        assert resp.status_code == 200, resp.text
        return resp.json()["tickets"]


@pytest.fixture(scope="session")
def web_stack(tmp_path_factory):
    """The whole stack as `make run` starts it, in demo mode, shared by every browser test."""
    from tools.stack import running_stack

    if not (REPO_ROOT / "var" / "artifacts.json").exists():
        missing("no artefacts: run `make setup`")
    var_dir = tmp_path_factory.mktemp("web-stack")
    env = {"HC_ADMIN_TOKEN": ADMIN, "HC_DEMO": "1", "HC_SSE_PING_S": "2"}
    with running_stack(var_dir, env=env) as (base, _startup, _pid):
        yield WebStack(base, var_dir)


@pytest.fixture(scope="module")
def browser():
    """One headless Chromium per test module (Playwright's sync API owns its own loop)."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        missing("playwright is not installed (make setup)")
    if not Path(CHROMIUM).exists():
        missing("Chromium is not installed (make setup installs Debian's package)")
    with sync_playwright() as pw:
        instance = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield instance
        instance.close()


@pytest.fixture
def new_context(browser):
    """new_context(**options) → a fresh browser context (own storage), closed after the test."""
    made = []

    def make(**options):
        options.setdefault("locale", "zh-CN")
        context = browser.new_context(**{**DESKTOP, **options})
        context.set_default_timeout(15_000)
        made.append(context)
        return context

    yield make
    for context in made:
        context.close()


def screenshot(page, name: str) -> Path:
    """reports/screens/<name>.png, for a person to look at (make test writes them)."""
    SCREENS.mkdir(parents=True, exist_ok=True)
    path = SCREENS / f"{name}.png"
    page.screenshot(path=str(path), full_page=False)
    return path


def serious_accessibility_violations(page) -> list[str]:
    """axe-core's serious and critical violations on the page as it is now ("rule: target")."""
    from axe_playwright_python.sync_playwright import Axe

    results = Axe().run(page)
    return [f"{v['id']} ({v['impact']}): {[n.get('target') for n in v['nodes']][:5]} {v['help']}"
            for v in results.response["violations"] if v.get("impact") in ("serious", "critical")]
