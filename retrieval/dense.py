"""Dense side of retrieval: a faiss inner-product index over encoded KB phrasings, and a
micro-batching wrapper that lets concurrent queries share one encoder call.
"""
from __future__ import annotations

import queue
import threading
from concurrent.futures import Future
from pathlib import Path
from typing import Protocol, Sequence

import numpy as np


class QueryEncoder(Protocol):
    """What the retriever needs of retrieval.encoder's encoders."""

    dim: int

    def warm_up(self) -> None: ...
    def encode_queries(self, texts: Sequence[str]) -> np.ndarray: ...
    def encode_passages(self, texts: Sequence[str]) -> np.ndarray: ...


def limit_faiss_threads() -> None:
    # On 2 cores, faiss's OpenMP pool fighting torch's for the same cores doubles latency; the
    # index is a few hundred rows, one thread scans it in microseconds.
    import faiss
    faiss.omp_set_num_threads(1)


class DenseIndex:
    """Unit vectors of every phrasing (rows), each owned by one KB entry (owners[row])."""

    FILE = "dense.faiss"

    def __init__(self, vectors: np.ndarray, owners: Sequence[int], n_entries: int):
        import faiss

        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape[0] != len(owners):
            raise ValueError(f"{vectors.shape[0]} vectors for {len(owners)} phrasings")
        self.owners = np.asarray(owners, dtype=np.int64)
        self.n_entries = n_entries
        self.dim = vectors.shape[1]
        self.index = faiss.IndexFlatIP(self.dim)
        self.index.add(vectors)

    @classmethod
    def from_faiss(cls, index, owners: Sequence[int], n_entries: int) -> "DenseIndex":
        if index.ntotal != len(owners):
            raise ValueError(f"index holds {index.ntotal} vectors, map has {len(owners)}")
        self = cls.__new__(cls)
        self.owners = np.asarray(owners, dtype=np.int64)
        self.n_entries = n_entries
        self.dim = index.d
        self.index = index
        return self

    def vectors(self) -> np.ndarray:
        return self.index.reconstruct_n(0, self.index.ntotal)

    def row_scores(self, qvecs: np.ndarray) -> np.ndarray:
        """Cosine of each query against every phrasing row: (n_queries, n_rows)."""
        qvecs = np.ascontiguousarray(np.atleast_2d(qvecs), dtype=np.float32)
        n = self.index.ntotal
        sims, labels = self.index.search(qvecs, n)
        out = np.empty_like(sims)
        np.put_along_axis(out, labels, sims, axis=1)
        return out

    def entry_scores(self, row_scores: np.ndarray) -> np.ndarray:
        """Best phrasing per entry, from row_scores of one query (n_rows,) → (n_entries,)."""
        out = np.full(self.n_entries, -1.0, dtype=np.float32)
        np.maximum.at(out, self.owners, row_scores)
        return out

    def save(self, directory: Path) -> None:
        import faiss
        faiss.write_index(self.index, str(Path(directory) / self.FILE))

    @classmethod
    def load(cls, directory: Path, owners: Sequence[int], n_entries: int) -> "DenseIndex":
        import faiss
        return cls.from_faiss(faiss.read_index(str(Path(directory) / cls.FILE)), owners, n_entries)


_STOP = object()


class BatchingQueryEncoder:
    """Coalesces encode_query calls from many threads into encode_queries batches.

    One worker thread takes whatever requests are waiting (after at most `max_wait_s` for
    company when only one is) and encodes them together. Under load the queue fills while the
    previous batch runs, so batches grow without any added wait: 16 queries encoded as one batch
    cost far less than 16 sequential calls on 2 cores.

    close() may run at any moment, from any thread, while queries are in flight (a KB reload
    closes the retriever it replaced): the closed check, the worker start and the enqueue of a
    request happen under the same lock as close()'s flag and STOP, so STOP is always the last
    thing queued and the worker answers every request before it; a query after close is encoded
    directly, in its caller's thread.
    """

    def __init__(self, encoder: QueryEncoder, *, max_wait_s: float = 0.001, max_batch: int = 32):
        self.encoder = encoder
        self.max_wait_s = max_wait_s
        self.max_batch = max_batch
        self._queue: queue.Queue[tuple[object, Future | None]] = queue.Queue()
        self._worker: threading.Thread | None = None
        self._lock = threading.Lock()
        self._closed = False

    def close(self, timeout: float | None = 5.0) -> None:
        """Stop the worker thread: it holds this object, hence the model, for as long as it runs.
        Queries already queued are still answered; later ones are encoded directly. Waits up to
        `timeout` seconds for the worker to finish the batch it is encoding and exit."""
        with self._lock:
            if not self._closed:
                self._closed = True
                if self._worker is not None:
                    self._queue.put((_STOP, None))
            worker = self._worker
        if worker is not None and worker is not threading.current_thread():
            worker.join(timeout)

    @property
    def closed(self) -> bool:
        return self._closed

    def encode_query(self, text: str, timeout: float | None = 30.0) -> np.ndarray:
        with self._lock:
            if self._closed:
                fut = None
            else:
                if self._worker is None:
                    worker = threading.Thread(target=self._run, name="query-encoder", daemon=True)
                    worker.start()
                    self._worker = worker
                fut = Future()
                self._queue.put((text, fut))
        if fut is None:
            return self.encoder.encode_queries([text])[0]
        return fut.result(timeout=timeout)

    def _take_batch(self) -> list[tuple[object, Future | None]]:
        batch = [self._queue.get()]
        try:
            batch.append(self._queue.get(timeout=self.max_wait_s))
        except queue.Empty:
            pass
        while len(batch) < self.max_batch:
            try:
                batch.append(self._queue.get_nowait())
            except queue.Empty:
                break
        return batch

    def _answer(self, batch: list[tuple[object, Future | None]]) -> None:
        texts = [t for t, _ in batch]
        try:
            vecs = self.encoder.encode_queries(texts) if texts else []
            if len(vecs) != len(texts):
                raise RuntimeError(f"the encoder returned {len(vecs)} vectors for {len(texts)} texts")
        except BaseException as exc:  # the callers must hear about it, not hang
            for _, fut in batch:
                fut.set_exception(exc)
            return
        for (_, fut), vec in zip(batch, vecs):
            fut.set_result(vec)

    def _run(self) -> None:
        stop = False
        while not stop:
            batch = self._take_batch()
            stop = any(t is _STOP for t, _ in batch)
            self._answer([(t, fut) for t, fut in batch if t is not _STOP])
        # STOP is queued last (under the lock, after which nothing is enqueued), so this finds
        # nothing; it is the guarantee that no request can be left waiting all the same.
        leftover = []
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item[0] is not _STOP:
                leftover.append(item)
        if leftover:
            self._answer(leftover)
