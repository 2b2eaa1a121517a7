"""The process's loaded retriever, shared by the API routes and the actions served in-process.

Swapped as a whole (one reference assignment) so a KB rebuild never leaves a request half on the
old index and half on the new one.
"""
from __future__ import annotations

import threading
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from retrieval.retriever import Retriever

_lock = threading.Lock()
_retriever: "Retriever | None" = None


class NotReady(RuntimeError):
    pass


def install(retriever: "Retriever") -> "Retriever | None":
    """Make `retriever` the one every new search uses; returns the one it replaced (None at
    start-up). The caller owns the replaced one: searches already running on it finish there,
    so close it (Retriever.close is safe against them), never leave its threads running."""
    global _retriever
    with _lock:
        previous, _retriever = _retriever, retriever
    return previous


def retriever() -> "Retriever":
    current = _retriever
    if current is None:
        raise NotReady("the retrieval index is not loaded yet")
    return current


def ready() -> bool:
    return _retriever is not None
