"""KB hot swap through POST /api/v1/admin/kb/reload, BM25-only so it is fast.

A good KB is swapped in while searches keep being answered; a broken one is refused with its
line number and the old index keeps serving.
"""
from __future__ import annotations

import asyncio
import shutil

import httpx
import pytest

from api.main import create_app
from assistant import kb_reload, runtime
from core.settings import REPO_ROOT, Settings
from retrieval.kb import load_kb

TOKEN = "admin-test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def kb_file(tmp_path):
    path = tmp_path / "faq_zh.md"
    shutil.copy(REPO_ROOT / "kb" / "faq_zh.md", path)
    return path


@pytest.fixture
def app(monkeypatch, tmp_path, kb_file):
    settings = Settings(admin_token=TOKEN, var_dir=tmp_path / "var", kb_path=kb_file,
                        retrieval_mode="bm25", internal_token="x")
    monkeypatch.setattr(runtime, "_retriever", None)
    runtime.install(kb_reload._bm25_retriever(load_kb(kb_file)))
    return create_app(settings, load_index=False)


def client(app) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test", timeout=60)


def edit(kb_file, old: str, new: str) -> None:
    text = kb_file.read_text("utf-8")
    assert old in text
    kb_file.write_text(text.replace(old, new, 1), "utf-8")


def test_reload_swaps_the_kb_while_searches_keep_succeeding(app, kb_file):
    before = runtime.retriever().kb.version
    # A new phrasing (on the first entry): the edited KB gets a new version.
    edit(kb_file, "同义:\n", "同义:\n- 码能不能存相册里用\n")

    async def scenario():
        async with client(app) as c:
            reload_task = asyncio.create_task(c.post("/api/v1/admin/kb/reload", headers=AUTH))
            statuses, versions = [], set()
            during = 0
            while not reload_task.done() or len(statuses) < 20:
                during += not reload_task.done()
                resp = await c.get("/api/v1/faq/search", params={"q": "健康码可以截图吗"})
                statuses.append(resp.status_code)
                versions.add(resp.json().get("kb_version"))
                # In-process transport: a cached answer completes without ever suspending, so
                # let the reload run between searches (a real server yields on its sockets).
                await asyncio.sleep(0)
            reloaded = await reload_task
            after = await c.get("/api/v1/faq/search", params={"q": "健康码可以截图吗"})
            return reloaded, statuses, versions, after, during

    reloaded, statuses, versions, after, during = asyncio.run(scenario())
    assert during >= 3                     # the searches really overlapped the rebuild
    assert reloaded.status_code == 200, reloaded.text
    body = reloaded.json()
    assert body["previous_kb_version"] == before and body["kb_version"] != before
    assert body["built"] is False and body["index_dir"] is None        # BM25-only: nothing on disk
    assert set(statuses) == {200}                                       # no request failed
    assert versions <= {before, body["kb_version"]}
    assert after.json()["kb_version"] == body["kb_version"] == runtime.retriever().kb.version
    assert after.json()["results"][0]["faq_id"] == "personal.screenshot"


def test_concurrent_searches_from_many_clients_during_a_swap(app, kb_file):
    edit(kb_file, "同义:\n", "同义:\n- 截屏的码给门卫看可以吗\n")
    questions = ["健康码可以截图吗", "怎么为家人申领", "外国人能申请吗", "人脸识别不通过"]

    async def scenario():
        async with client(app) as c:
            async def searcher(i):
                codes = []
                for n in range(15):
                    resp = await c.get("/api/v1/faq/search", params={"q": questions[(i + n) % 4]})
                    codes.append(resp.status_code)
                return codes
            results = await asyncio.gather(c.post("/api/v1/admin/kb/reload", headers=AUTH),
                                           *(searcher(i) for i in range(8)))
            return results[0], [code for codes in results[1:] for code in codes]

    reloaded, codes = asyncio.run(scenario())
    assert reloaded.status_code == 200
    assert len(codes) == 120 and set(codes) == {200}


def test_a_broken_kb_is_refused_with_its_line_and_the_old_index_keeps_serving(app, kb_file):
    before = runtime.retriever().kb.version
    lines = kb_file.read_text("utf-8").split("\n")
    bad_line = lines.index("### family.quota") + 2       # inside the entry, a stray line
    lines.insert(bad_line - 1, "this line is not a field")
    kb_file.write_text("\n".join(lines), "utf-8")

    async def scenario():
        async with client(app) as c:
            return (await c.post("/api/v1/admin/kb/reload", headers=AUTH),
                    await c.get("/api/v1/faq/search", params={"q": "健康码可以截图吗"}))

    resp, search = asyncio.run(scenario())
    assert resp.status_code == 422
    error = resp.json()["error"]
    assert error["code"] == "kb_invalid"
    assert error["line"] == bad_line
    assert f":{bad_line}:" in error["message"]
    assert runtime.retriever().kb.version == before
    assert search.status_code == 200 and search.json()["kb_version"] == before


def test_reload_without_a_token_is_401(app):
    async def scenario():
        async with client(app) as c:
            return await c.post("/api/v1/admin/kb/reload")

    assert asyncio.run(scenario()).status_code == 401


def test_a_second_reload_while_one_runs_is_409(app, monkeypatch):
    assert kb_reload._busy.acquire(blocking=False)
    try:
        async def scenario():
            async with client(app) as c:
                return await c.post("/api/v1/admin/kb/reload", headers=AUTH)
        resp = asyncio.run(scenario())
    finally:
        kb_reload._busy.release()
    assert resp.status_code == 409
    assert resp.json()["error"]["code"] == "reload_in_progress"
