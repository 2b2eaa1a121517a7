"""The pages as the server hands them out (api/routes/pages.py) and what their files may contain:
a strict CSP can only hold if no page needs an inline script, style or handler."""
from __future__ import annotations

import re

import pytest

from _accounts_fixtures import make_client
from core.settings import REPO_ROOT

WEB = REPO_ROOT / "web"
PAGES = [("/widget", "widget"), ("/agent", "agent")]


@pytest.fixture
def client(tmp_path):
    with make_client(tmp_path, widget_frame_origins=["https://www.fujian.gov.cn"]) as c:
        yield c


@pytest.mark.parametrize("path,page", PAGES)
def test_each_page_is_served_with_a_strict_policy(client, path, page):
    resp = client.get(path)
    assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/html")
    policy = resp.headers["content-security-policy"]
    assert "script-src 'self'" in policy and "unsafe-inline" not in policy and "unsafe-eval" not in policy
    assert "default-src 'none'" in policy
    assert resp.headers["x-content-type-options"] == "nosniff"
    assert resp.headers["referrer-policy"] == "no-referrer"
    assert client.get(path + "/", follow_redirects=False).headers["location"] == path


def test_frame_rules_agent_never_widget_by_configured_origins(client):
    agent = client.get("/agent").headers
    assert "frame-ancestors 'none'" in agent["content-security-policy"] and agent["x-frame-options"] == "DENY"
    widget = client.get("/widget").headers["content-security-policy"]
    assert "frame-ancestors 'self' https://www.fujian.gov.cn" in widget


def test_widget_script_is_javascript(client):
    resp = client.get("/widget/widget.js")
    assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/javascript")
    assert "HCWidget" in resp.text
    assert client.get("/widget/widget.css").headers["content-type"].startswith("text/css")


@pytest.mark.parametrize("path", ["/widget/../core/settings.py", "/widget/%2e%2e%2fcore%2fsettings.py",
                                  "/widget/.hidden.js", "/widget/nope.js", "/widget/README.md",
                                  "/agent/..%2f..%2fREADME.md", "/agent/x.py", "/widget/" + "a" * 5000 + ".js"])
def test_nothing_but_the_pages_own_files(client, path):
    assert client.get(path).status_code == 404


HTML_FILES = sorted(WEB.glob("*/*.html"))
JS_FILES = sorted(WEB.glob("*/*.js"))


def test_there_are_pages_to_check():
    assert {p.parent.name for p in HTML_FILES} >= {"widget", "agent"} and JS_FILES


@pytest.mark.parametrize("path", HTML_FILES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_html_has_no_inline_script_style_or_handler(path):
    html = path.read_text()
    for script in re.findall(r"<script\b([^>]*)>(.*?)</script>", html, re.S | re.I):
        assert "src=" in script[0] and not script[1].strip(), script
    assert not re.search(r"<style\b", html, re.I)
    assert not re.search(r"\sstyle\s*=", html, re.I)
    assert not re.search(r"\son[a-z]+\s*=", html, re.I)
    assert not re.search(r"(src|href)\s*=\s*[\"']?(https?:)?//", html, re.I), "nothing from another site"


@pytest.mark.parametrize("path", JS_FILES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_scripts_insert_text_as_text(path):
    code = path.read_text()
    # Text goes in through textContent / createTextNode; these would parse it as HTML.
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "new Function"):
        assert sink not in code, f"{path.name} uses {sink}"
    assert not re.search(r"https?://(?!127\.0\.0\.1|localhost)", code.replace("http://www.w3.org/2000/svg", "")), \
        "no request to another site"


def test_cors_only_for_the_configured_origins(tmp_path):
    with make_client(tmp_path, cors_origins=["https://www.fujian.gov.cn"]) as c:
        ok = c.options("/api/v1/chat", headers={"Origin": "https://www.fujian.gov.cn",
                                                "Access-Control-Request-Method": "POST",
                                                "Access-Control-Request-Headers": "authorization,content-type"})
        assert ok.status_code == 200
        assert ok.headers["access-control-allow-origin"] == "https://www.fujian.gov.cn"
        other = c.options("/api/v1/chat", headers={"Origin": "https://evil.example",
                                                   "Access-Control-Request-Method": "POST"})
        assert "access-control-allow-origin" not in other.headers
    with make_client(tmp_path) as c:       # none configured: no CORS headers at all
        resp = c.get("/healthz", headers={"Origin": "https://www.fujian.gov.cn"})
        assert "access-control-allow-origin" not in resp.headers
