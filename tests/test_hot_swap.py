"""KB hot swap through POST /api/v1/admin/kb/reload.

A good KB is swapped in while searches keep being answered; a broken one is refused with its
line number and the old index keeps serving. Most tests run BM25-only so they are fast; the
dense ones take the full path (find or build the index for the edited KB, load it, swap, close
the old retriever) with a hashing encoder standing in for e5 (build_index / load_retriever
themselves are real).
"""
from __future__ import annotations

import asyncio
import gc
import shutil
import threading
import time
import weakref

import httpx
import pytest

from api.main import create_app
from assistant import kb_reload, runtime
from core.settings import REPO_ROOT, Settings
from retrieval import index as retrieval_index
from retrieval.encoder import HashingEncoder
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


async def admin_kb_version(c: httpx.AsyncClient) -> str:
    resp = await c.get("/api/v1/admin/kb", headers=AUTH)
    assert resp.status_code == 200, resp.text
    return resp.json()["kb_version"]


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
            return reloaded, statuses, versions, after, during, await admin_kb_version(c)

    reloaded, statuses, versions, after, during, status_after = asyncio.run(scenario())
    assert during >= 3                     # the searches really overlapped the rebuild
    assert reloaded.status_code == 200, reloaded.text
    body = reloaded.json()
    assert body["previous_kb_version"] == before and body["kb_version"] != before
    assert body["kb_version"] == load_kb(kb_file).version == status_after
    assert before in versions               # searches before the swap: the old KB
    assert body["built"] is False and body["index_dir"] is None        # BM25-only: nothing on disk
    assert set(statuses) == {200}                                       # no request failed
    assert versions <= {before, body["kb_version"]}
    assert after.json()["kb_version"] == body["kb_version"] == runtime.retriever().kb.version
    assert after.json()["results"][0]["faq_id"] == "personal.screenshot"


def test_concurrent_searches_from_many_clients_during_a_swap(app, kb_file):
    before = runtime.retriever().kb.version
    edit(kb_file, "同义:\n", "同义:\n- 截屏的码给门卫看可以吗\n")
    new = load_kb(kb_file).version
    assert new != before
    questions = ["健康码可以截图吗", "怎么为家人申领", "外国人能申请吗", "人脸识别不通过"]

    async def scenario():
        async with client(app) as c:
            status_before = await admin_kb_version(c)

            async def searcher(i):
                seen = []
                for n in range(15):
                    resp = await c.get("/api/v1/faq/search", params={"q": questions[(i + n) % 4]})
                    seen.append((resp.status_code, resp.json().get("kb_version")))
                return seen
            results = await asyncio.gather(c.post("/api/v1/admin/kb/reload", headers=AUTH),
                                           *(searcher(i) for i in range(8)))
            after = await c.get("/api/v1/faq/search", params={"q": "怎么为家人申领"})
            return (status_before, results[0], [x for seen in results[1:] for x in seen], after,
                    await admin_kb_version(c))

    status_before, reloaded, seen, after, status_after = asyncio.run(scenario())
    assert status_before == before
    assert reloaded.status_code == 200, reloaded.text
    body = reloaded.json()
    assert body["previous_kb_version"] == before and body["kb_version"] == new
    assert len(seen) == 120 and {code for code, _ in seen} == {200}
    assert {version for _, version in seen} <= {before, new}
    assert after.status_code == 200 and after.json()["kb_version"] == new
    assert status_after == new == runtime.retriever().kb.version


def test_a_broken_kb_is_refused_with_its_line_and_the_old_index_keeps_serving(app, kb_file):
    before = runtime.retriever().kb.version
    lines = kb_file.read_text("utf-8").split("\n")
    bad_line = lines.index("### family.quota") + 2       # inside the entry, a stray line
    lines.insert(bad_line - 1, "this line is not a field")
    kb_file.write_text("\n".join(lines), "utf-8")

    async def scenario():
        async with client(app) as c:
            return (await c.post("/api/v1/admin/kb/reload", headers=AUTH),
                    await c.get("/api/v1/faq/search", params={"q": "健康码可以截图吗"}),
                    await admin_kb_version(c))

    resp, search, status = asyncio.run(scenario())
    assert resp.status_code == 422
    error = resp.json()["error"]
    assert error["code"] == "kb_invalid"
    assert error["line"] == bad_line
    assert f":{bad_line}:" in error["message"]
    assert runtime.retriever().kb.version == before
    assert search.status_code == 200 and search.json()["kb_version"] == before
    assert status == before


def test_reload_without_a_token_is_401(app, kb_file):
    before = runtime.retriever().kb.version
    edit(kb_file, "同义:\n", "同义:\n- 没有令牌也想换库\n")

    async def scenario():
        async with client(app) as c:
            return await c.post("/api/v1/admin/kb/reload")

    assert asyncio.run(scenario()).status_code == 401
    assert runtime.retriever().kb.version == before


def test_a_second_reload_while_one_runs_is_409(app, monkeypatch):
    serving = runtime.retriever()
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
    assert runtime.retriever() is serving


# --- the full (dense) reload path ------------------------------------------------------------

class GatedEncoder(HashingEncoder):
    """A hashing stand-in for e5 (what build_index / load_retriever create through
    retrieval.index._encoder) whose query encoding can be held at a gate."""

    def __init__(self, dim: int = 128):
        super().__init__(dim)
        self.gate: threading.Event | None = None

    def encode_queries(self, texts):
        gate = self.gate
        if gate is not None:
            assert gate.wait(10), "the gate was never opened"
        return super().encode_queries(texts)


@pytest.fixture
def dense_encoders(monkeypatch):
    """Every encoder the index code makes is a fresh GatedEncoder, as it would be a fresh e5
    (nothing here keeps a reference to one); no USE."""
    monkeypatch.setattr(retrieval_index, "_encoder", lambda model_dir: GatedEncoder())
    monkeypatch.setattr(retrieval_index, "use_available", lambda: False)


@pytest.fixture
def fake_model(tmp_path_factory):
    # model_id() names an index's model by its folder's files; no weights are ever read from it.
    model = tmp_path_factory.mktemp("model") / "e5-hashing"
    model.mkdir()
    (model / "config.json").write_text('{"model_type": "hashing"}', "utf-8")
    return model


@pytest.fixture
def dense_app(monkeypatch, tmp_path, kb_file, fake_model, dense_encoders):
    # Full mode: kb_reload reads the model dir (and the index `make setup` built) through
    # core.artifacts.load_artifacts; the settings' overrides point it at the stand-ins.
    setup_index = tmp_path / "setup-index"
    retrieval_index.build_index(kb_file, fake_model, setup_index)
    settings = Settings(admin_token=TOKEN, var_dir=tmp_path / "var", kb_path=kb_file,
                        retrieval_mode="hybrid", model_dir=fake_model, index_dir=setup_index,
                        internal_token="x")
    monkeypatch.setattr(runtime, "_retriever", None)
    first, where, built = kb_reload._dense_retriever(settings, load_kb(kb_file), None)
    assert where == setup_index and built is False          # found, not rebuilt
    assert first.encoder is not None and first.dense is not None
    runtime.install(first)
    del first                    # held only by runtime, so a swap can free it
    yield create_app(settings, load_index=False)
    if runtime.ready():
        runtime.retriever().close()


def test_dense_reload_builds_the_edited_kb_and_swaps_it_in_under_load(dense_app, kb_file, tmp_path,
                                                                      monkeypatch):
    old = runtime.retriever()
    before = old.kb.version
    old_encoder = old.encoder
    assert isinstance(old_encoder, GatedEncoder)
    edit(kb_file, "同义:\n", "同义:\n- 码能不能存相册里用\n")
    new = load_kb(kb_file).version
    assert new != before

    # Hold every query the old retriever encodes from just before the swap until a moment after
    # it, so searches are in its batcher (queued and mid-batch) when close() runs.
    swap: dict[str, float] = {}
    real_install = runtime.install

    def install(retriever):
        gate = threading.Event()
        old_encoder.gate = gate
        time.sleep(0.2)                    # searches pile up on the old retriever
        swap["armed"] = time.perf_counter()
        replaced = real_install(retriever)
        swap["installed"] = time.perf_counter()
        threading.Timer(0.3, gate.set).start()
        return replaced

    monkeypatch.setattr(runtime, "install", install)
    alive_at_reply: list[bool] = []

    async def scenario():
        async with client(dense_app) as c:
            status_before = await admin_kb_version(c)
            # A first search (on the old KB) starts the old retriever's batching thread.
            first = await c.get("/api/v1/faq/search", params={"q": "健康码可以截图吗"})
            workers = [b._worker for b in (old._batcher, old._use_batcher)
                       if b is not None and b._worker is not None]
            reload_task = asyncio.create_task(c.post("/api/v1/admin/kb/reload", headers=AUTH))
            # Looked at as soon as the reply is in (the old encoder's gate may still be shut
            # then, were close() not to wait for the worker).
            reload_task.add_done_callback(
                lambda _: alive_at_reply.extend(w.is_alive() for w in workers))
            seen = []

            async def search(q):
                started = time.perf_counter()
                resp = await c.get("/api/v1/faq/search", params={"q": q})
                seen.append((started, time.perf_counter(), resp.status_code,
                             resp.json().get("kb_version")))

            async def searcher(i):
                n = 0
                while not reload_task.done():          # through the rebuild and the swap
                    n += 1
                    await search(f"健康码可以截图吗 {i}-{n}")   # never the same text: no cache hit
                for m in range(3):                     # and on after it
                    await search(f"健康码可以截图吗 {i}-after-{m}")

            await asyncio.gather(*(searcher(i) for i in range(8)))
            reloaded = await reload_task
            after = await c.get("/api/v1/faq/search", params={"q": "码能不能存相册里用"})
            return (status_before, first, workers, reloaded, seen, after,
                    await admin_kb_version(c))

    status_before, first, workers, reloaded, seen, after, status_after = asyncio.run(scenario())

    assert status_before == before and first.json()["kb_version"] == before
    assert reloaded.status_code == 200, reloaded.text
    body = reloaded.json()
    assert body["previous_kb_version"] == before and body["kb_version"] == new
    assert body["built"] is True                                       # encoded here
    assert body["index_dir"] == str(tmp_path / "var" / "kb-index" / new)
    assert retrieval_index.read_meta(body["index_dir"])["kb_version"] == new

    # Every search succeeded (none waited out a lost request), each on a KB that was serving.
    assert len(seen) > 8 * 3 and {code for _, _, code, _ in seen} == {200}
    done_before = [v for _, end, _, v in seen if end < swap["armed"]]
    begun_after = [v for start, _, _, v in seen if start > swap["installed"]]
    straddled = [v for start, end, _, v in seen if start < swap["armed"] and end > swap["installed"]]
    assert done_before and set(done_before) == {before}
    assert begun_after and set(begun_after) == {new}
    assert before in straddled          # held on the old retriever across the swap and close
    assert after.json()["kb_version"] == new == status_after == runtime.retriever().kb.version
    owner = next(e.id for e in load_kb(kb_file).entries if "码能不能存相册里用" in e.alternates)
    assert after.json()["decision"] == "answer"                  # the new phrasing is served
    assert after.json()["results"][0]["faq_id"] == owner

    # The old retriever's batching threads had ended by the time the reload answered, and with
    # them went the last references to it and its model.
    assert workers and alive_at_reply == [False] * len(workers)
    assert not any(w.is_alive() for w in workers)
    assert runtime.retriever() is not old and runtime.retriever().encoder is not old_encoder
    encoder_ref, retriever_ref = weakref.ref(old_encoder), weakref.ref(old)
    del old, old_encoder, workers
    gc.collect()
    assert retriever_ref() is None and encoder_ref() is None


def test_dense_reload_of_an_unchanged_kb_finds_the_index_it_built(dense_app, kb_file):
    edit(kb_file, "同义:\n", "同义:\n- 截屏的码给门卫看可以吗\n")
    new = load_kb(kb_file).version

    async def scenario():
        async with client(dense_app) as c:
            first = await c.post("/api/v1/admin/kb/reload", headers=AUTH)
            mid = await c.get("/api/v1/faq/search", params={"q": "截屏的码给门卫看可以吗"})
            again = await c.post("/api/v1/admin/kb/reload", headers=AUTH)
            return first, mid, again, await admin_kb_version(c)

    first, mid, again, status = asyncio.run(scenario())
    assert first.status_code == 200 and again.status_code == 200, (first.text, again.text)
    a, b = first.json(), again.json()
    assert a["kb_version"] == new and a["built"] is True
    assert mid.json()["kb_version"] == new
    assert b["previous_kb_version"] == new and b["kb_version"] == new
    assert b["built"] is False and b["index_dir"] == a["index_dir"]    # loaded, not rebuilt
    assert status == new
