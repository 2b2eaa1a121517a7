"""Swap in a new knowledge base while the app keeps serving: no restart, no Rasa retraining.

    reload(settings, index_dir=None) -> Reloaded

1. Parse kb/faq_zh.md. A malformed file raises retrieval.kb.KBError (with its line) and nothing
   else happens: the index in use keeps serving.
2. Find an index built from exactly this KB: the one given, the one `make setup` last built
   (var/artifacts.json is re-read, so `make setup` or `python -m retrieval build --out <that
   dir>` followed by a reload needs no rebuild here), or one a previous reload built. Failing
   that, build it (encode, calibrate) into <var>/kb-index/<kb version>/.
3. Load it into a new retriever with a fresh encoder (each index carries its own fine-tuned
   weights; the old model is freed once the old retriever is dropped) and install it with
   runtime.install, one reference assignment: a request already searching finishes on the old
   retriever, the next one starts on the new. The replaced retriever is then closed: its
   batching threads end (searches still running on it are answered) so it and its model can
   be garbage collected.

This runs in a worker thread; one reload at a time (a second caller gets ReloadBusy).
"""
from __future__ import annotations

import logging
import shutil
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from assistant import runtime
from core.artifacts import load_artifacts
from core.logs import log_event
from core.settings import Settings

log = logging.getLogger("hc.kb")

_busy = threading.Lock()
KEEP_BUILT = 2   # index folders a reload keeps under var/kb-index (the newest; ~560 MB each with model.onnx)


class ReloadBusy(RuntimeError):
    """Another reload is running."""


class ReloadFailed(RuntimeError):
    """The KB parsed, but no index could be made from it; the old one keeps serving."""


@dataclass(frozen=True)
class Reloaded:
    kb_version: str
    previous_kb_version: str | None
    entries: int
    index_dir: str | None      # None for a BM25-only retriever (nothing on disk)
    built: bool                # True when this reload encoded the KB itself
    seconds: float

    def as_dict(self) -> dict:
        return {"kb_version": self.kb_version, "previous_kb_version": self.previous_kb_version,
                "entries": self.entries, "index_dir": self.index_dir, "built": self.built,
                "seconds": round(self.seconds, 2)}


def reload(settings: Settings, index_dir: str | Path | None = None) -> Reloaded:
    if not _busy.acquire(blocking=False):
        raise ReloadBusy("a KB reload is already running")
    try:
        return _reload(settings, Path(index_dir) if index_dir else None)
    finally:
        _busy.release()


def _reload(settings: Settings, index_dir: Path | None) -> Reloaded:
    from retrieval.kb import load_kb

    started = time.perf_counter()
    kb = load_kb(settings.kb_path)           # KBError propagates: the caller reports the line

    if settings.retrieval_mode == "bm25":
        retriever, used, built = _bm25_retriever(kb), None, False
    else:
        retriever, used, built = _dense_retriever(settings, kb, index_dir)
    replaced = runtime.install(retriever)
    previous_version = replaced.kb.version if replaced is not None else None
    # The replaced retriever may still be answering searches that started before the swap:
    # close() lets them finish (queued queries are answered, later ones encode directly) and
    # ends its batching threads, which otherwise would keep the old model alive.
    if replaced is not None and replaced is not retriever and hasattr(replaced, "close"):
        try:
            replaced.close()
        except Exception:   # the new KB is serving already; a failed clean-up must not undo that
            log.exception("closing the replaced retriever failed")
    result = Reloaded(kb.version, previous_version, len(kb.entries), str(used) if used else None, built,
                      time.perf_counter() - started)
    log_event(log, "kb_reloaded", **result.as_dict())
    return result


def _bm25_retriever(kb):
    # The same retriever api.main builds at start-up in BM25-only mode (the benchmark baseline).
    from retrieval.retriever import Params, Retriever

    retriever = Retriever(kb, None, params=Params(bm25_only=True))
    retriever.warm_up()
    return retriever


def _dense_retriever(settings: Settings, kb, index_dir: Path | None):
    from retrieval.index import StaleIndexError, build_index, load_retriever

    art = load_artifacts(settings)
    if art.model_dir is None:
        raise ReloadFailed("no e5 model: run `make setup` (or set HC_MODEL_DIR)")
    # Each index carries its own fine-tuned e5 weights, and building one fine-tunes the encoder
    # it is given: sharing the serving retriever's encoder would change it under live queries.
    # A fresh encoder costs ~500 MB until the old retriever is dropped after the swap.
    encoder = None
    built_root = settings.var_dir / "kb-index"
    candidates = [index_dir] if index_dir else [art.index_dir, built_root / kb.version]
    for candidate in candidates:
        if candidate is None or not (candidate / "meta.json").is_file():
            if index_dir:
                raise ReloadFailed(f"no index at {candidate}")
            continue
        try:
            return load_retriever(candidate, settings.kb_path, art.model_dir, kb=kb, encoder=encoder), \
                candidate, False
        except StaleIndexError as exc:
            if index_dir:
                raise ReloadFailed(f"index {candidate} does not match the KB: {exc}") from exc
            log_event(log, "kb_index_stale", index_dir=str(candidate), reason=str(exc))

    out = built_root / kb.version
    build_index(settings.kb_path, art.model_dir, out, encoder=encoder)
    try:
        retriever = load_retriever(out, settings.kb_path, art.model_dir, kb=kb, encoder=encoder)
    except StaleIndexError as exc:
        # kb/faq_zh.md changed again while it was being encoded: the caller may simply retry.
        raise ReloadFailed(f"the KB changed during the rebuild; reload again ({exc})") from exc
    _prune(built_root, keep=out)
    return retriever, out, True


def _prune(root: Path, keep: Path) -> None:
    """Drop all but the newest few reload-built indexes (each holds its e5 as ONNX, ~0.5 GB)."""
    dirs = sorted((d for d in root.iterdir() if d.is_dir() and not d.name.startswith(".")),
                  key=lambda d: d.stat().st_mtime, reverse=True)
    for old in dirs[KEEP_BUILT:]:
        if old != keep:
            shutil.rmtree(old, ignore_errors=True)
