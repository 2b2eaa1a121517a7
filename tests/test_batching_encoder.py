"""BatchingQueryEncoder.close() against queries in flight (a KB reload closes the retriever it
replaced while searches may still be running on it).

The race is forced deterministically: a hook on the `_closed` read inside encode_query starts
close() in another thread right after the check, the moment a lost request or an orphaned worker
would follow. encode_query gets a short timeout so a lost request fails in a second, not 30 s.
"""
from __future__ import annotations

import gc
import threading
import time
import weakref

import numpy as np
import pytest

from retrieval.dense import BatchingQueryEncoder
from retrieval.encoder import HashingEncoder
from retrieval.retriever import Retriever
from tests._retrieval_fakes import FakeEncoder, tiny_kb

LOST = 1.0   # seconds a request may wait before it counts as lost


class RacyBatcher(BatchingQueryEncoder):
    """Runs close() in another thread right after encode_query has read `_closed` (once armed)."""

    def __init__(self, *args, **kwargs):
        self._armed = False
        self.closer: threading.Thread | None = None
        super().__init__(*args, **kwargs)

    @property
    def _closed(self):
        value = self.__dict__.get("_closed_flag", False)
        if self._armed:
            self._armed = False
            self.closer = threading.Thread(target=self.close, name="closer")
            self.closer.start()
            # Give close() every chance to run now; a correct encoder makes it wait for the
            # enqueue instead (so this join times out).
            self.closer.join(0.2)
            # ... and, if close() did get through, give the worker time to act on its STOP (it
            # waits max_wait_s for company after each request, which would hide the loss).
            worker = self._worker
            if worker is not None:
                worker.join(0.2)
        return value

    @_closed.setter
    def _closed(self, value):
        self.__dict__["_closed_flag"] = value


def _worker_ends(batcher: BatchingQueryEncoder, timeout: float = 2.0) -> bool:
    worker = batcher._worker
    if worker is None:
        return True
    worker.join(timeout)
    return not worker.is_alive()


def test_close_between_the_check_and_the_enqueue_loses_no_request():
    enc = FakeEncoder()
    batcher = RacyBatcher(enc)
    batcher.encode_query("先启动工作线程", timeout=LOST)      # the worker is running
    batcher._armed = True
    vec = batcher.encode_query("健康码可以截图吗", timeout=LOST)  # TimeoutError if STOP came first
    assert np.allclose(vec, enc.encode_queries(["健康码可以截图吗"])[0])
    batcher.closer.join(5)
    assert not batcher.closer.is_alive()
    assert _worker_ends(batcher)
    # After close: encoded directly, still right.
    assert np.allclose(batcher.encode_query("人脸识别不通过", timeout=LOST),
                       enc.encode_queries(["人脸识别不通过"])[0])
    assert batcher._worker is None or not batcher._worker.is_alive()


def test_a_worker_started_around_close_still_stops():
    # close() runs while no worker exists yet, right after the first query's closed check: the
    # worker that query starts must not outlive the close.
    enc = FakeEncoder()
    ref = weakref.ref(enc)
    batcher = RacyBatcher(enc)
    batcher._armed = True
    vec = batcher.encode_query("健康码可以截图吗", timeout=LOST)
    assert np.allclose(vec, enc.encode_queries(["健康码可以截图吗"])[0])
    batcher.closer.join(5)
    assert not batcher.closer.is_alive()
    assert _worker_ends(batcher)
    # Nothing left running holds the encoder: dropped, it is freed.
    del batcher, enc
    gc.collect()
    assert ref() is None


def test_close_returns_after_the_worker_has_exited():
    batcher = BatchingQueryEncoder(FakeEncoder())
    batcher.encode_query("健康码截图", timeout=LOST)
    worker = batcher._worker
    assert worker.is_alive()
    batcher.close()
    assert not worker.is_alive()          # close joined it
    batcher.close()                       # twice is harmless
    assert batcher.closed


def test_close_while_a_batch_is_encoding_answers_it_and_everything_queued():
    enc = FakeEncoder()
    real = enc.encode_queries
    started, release = threading.Event(), threading.Event()

    def slow(texts):
        started.set()
        release.wait(5)
        return real(texts)

    enc.encode_queries = slow
    batcher = BatchingQueryEncoder(enc)
    out, errors = {}, []

    def ask(text):
        try:
            out[text] = batcher.encode_query(text, timeout=5)
        except BaseException as exc:
            errors.append(exc)

    first = threading.Thread(target=ask, args=("第一问",))
    first.start()
    assert started.wait(5)
    rest = [threading.Thread(target=ask, args=(f"问题{i}",)) for i in range(10)]
    for t in rest:
        t.start()
    time.sleep(0.05)                     # they are queued behind the running batch
    closer = threading.Thread(target=batcher.close)
    closer.start()
    time.sleep(0.05)
    late = threading.Thread(target=ask, args=("关闭后的问题",))   # after close: direct
    late.start()
    release.set()
    for t in [first, *rest, late, closer]:
        t.join(10)
    assert not errors
    assert len(out) == 12
    for text, vec in out.items():
        assert np.allclose(vec, real([text])[0])
    assert _worker_ends(batcher)


def test_many_threads_querying_while_close_runs_all_get_answers():
    enc = FakeEncoder()
    batcher = BatchingQueryEncoder(enc)
    stop = threading.Event()
    errors: list[BaseException] = []
    counts = [0] * 16

    def hammer(i):
        n = 0
        while not stop.is_set():
            text = f"问{i}-{n}"
            try:
                vec = batcher.encode_query(text, timeout=LOST)
                assert np.allclose(vec, enc._vec(text))
            except BaseException as exc:
                errors.append(exc)
                return
            n += 1
            counts[i] = n

    threads = [threading.Thread(target=hammer, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    time.sleep(0.1)
    batcher.close()
    time.sleep(0.1)
    stop.set()
    for t in threads:
        t.join(10)
    assert not errors, errors[:3]
    assert all(c > 0 for c in counts)
    assert _worker_ends(batcher, timeout=0.5)


def test_a_closed_retriever_frees_its_encoder():
    # The worker thread holds the batcher, hence the model: once closed and dropped, the encoder
    # must be collectable.
    enc = HashingEncoder(dim=64)
    ref = weakref.ref(enc)
    retriever = Retriever(tiny_kb(), enc)
    retriever.warm_up()
    retriever.search("健康码截屏可以用吗")
    workers = [b._worker for b in (retriever._batcher, retriever._use_batcher)
               if b is not None and b._worker is not None]
    assert workers and all(w.is_alive() for w in workers)
    retriever.close()
    assert not any(w.is_alive() for w in workers)
    assert retriever.search("人脸识别过不了").kb_version == "v1"   # still answers, directly
    del retriever, enc, workers
    gc.collect()
    assert ref() is None


def test_an_unclosed_batching_worker_keeps_its_encoder_alive():
    # Why close() matters: without it the idle worker pins the encoder for ever.
    enc = HashingEncoder(dim=64)
    ref = weakref.ref(enc)
    batcher = BatchingQueryEncoder(enc)
    batcher.encode_query("健康码", timeout=LOST)
    worker = batcher._worker
    del batcher, enc
    gc.collect()
    assert ref() is not None
    # clean up: close the orphan, reachable only through its thread
    orphan = next(t for t in threading.enumerate() if t is worker)
    orphan._target.__self__.close()
    del orphan, worker
    gc.collect()
    assert ref() is None


def test_warm_up_after_close_starts_no_threads():
    retriever = Retriever(tiny_kb(), HashingEncoder(dim=64))
    retriever.close()
    retriever.warm_up()
    assert retriever._batcher is None
    assert retriever.search("健康码截屏能用吗").results


@pytest.mark.parametrize("n", [1, 5])
def test_encoder_errors_reach_every_caller(n):
    class Broken(FakeEncoder):
        def encode_queries(self, texts):
            raise RuntimeError("model gone")

    batcher = BatchingQueryEncoder(Broken())
    errors = []

    def ask(i):
        try:
            batcher.encode_query(f"q{i}", timeout=LOST)
        except RuntimeError as exc:
            errors.append(exc)

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(5)
    assert len(errors) == n
    batcher.close()
    assert _worker_ends(batcher)
