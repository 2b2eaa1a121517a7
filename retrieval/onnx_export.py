"""Exporting the fine-tuned e5 to ONNX, so serving runs on onnxruntime without PyTorch.

The graph is the transformer only (input_ids, attention_mask -> last_hidden_state); pooling and
normalisation stay in numpy (retrieval.onnx_encoder), as sentence-transformers does them. This
module needs torch: it runs in the build process (index build, `python -m retrieval export-onnx`),
never in the serving one.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

ONNX_FILE = "model.onnx"
# The weights sit beside the graph, not inside it: onnxruntime then reads them straight into its
# tensors, where a single-file model keeps the 470 MB protobuf around as well (measured: 396 MB
# vs 782 MB anonymous RSS for the encoder alone, peak 471 MB vs 1162 MB).
DATA_FILE = "model.onnx.data"
OPSET = 17
# torch 2.13's torch.onnx.export defaults to the dynamo exporter, which needs onnxscript (not
# installed, not needed): the TorchScript-based exporter works offline with torch alone.
EXPORTER = "torchscript (torch.onnx.export dynamo=False)"
# Checked after every export: the ONNX vectors must match the PyTorch ones on these (full-width
# punctuation included: the tokenizer's normaliser must survive) or the export is refused.
PROBES = ["为什么L4人脸识别不通过？", "健康码一直是橙色怎么办，急", "Can foreigners apply?",
          "帮家里老人申领健康码要怎么弄", "截图可以用吗", "８８８　全角ＡＢＣ！", "码", "  前后空格  "]
MIN_COSINE = 0.9999


def _transformer(encoder):
    """The Hugging Face model inside E5Encoder's SentenceTransformer (module 0)."""
    return encoder.model[0].auto_model


def export_model(encoder, path: str | Path) -> None:
    """Write the encoder's transformer (fine-tuned weights included) to path as fp32 ONNX with
    dynamic batch and sequence axes, its weights in DATA_FILE beside it."""
    import onnx
    import torch

    bert = _transformer(encoder).eval()

    class LastHidden(torch.nn.Module):
        # sentence-transformers passes no token_type_ids (XLM-R's tokenizer makes none), so BERT
        # uses zeros: pass them explicitly so the graph does not depend on a buffer's length.
        def __init__(self, model):
            super().__init__()
            self.model = model

        def forward(self, input_ids, attention_mask):
            return self.model(input_ids=input_ids, attention_mask=attention_mask,
                              token_type_ids=torch.zeros_like(input_ids)).last_hidden_state

    # The tracer bakes Python-side branches of transformers' mask code into the graph; the
    # example carries padding so the traced path is the masked one (check_parity below then
    # compares padded batches with single queries, so a wrong branch would be caught).
    ids = torch.tensor([[0, 41, 1294, 12, 6, 2], [0, 41, 1294, 12, 2, 1]], dtype=torch.int64)
    mask = (ids != 1).to(torch.int64)
    path = Path(path)
    single = path.with_name(path.name + ".single")
    with torch.no_grad():
        torch.onnx.export(
            LastHidden(bert), (ids, mask), str(single), dynamo=False, opset_version=OPSET,
            input_names=["input_ids", "attention_mask"], output_names=["last_hidden_state"],
            dynamic_axes={"input_ids": {0: "batch", 1: "sequence"},
                          "attention_mask": {0: "batch", 1: "sequence"},
                          "last_hidden_state": {0: "batch", 1: "sequence"}},
            do_constant_folding=True)
    try:
        model = onnx.load(str(single))
        onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                        location=DATA_FILE, size_threshold=1024)
    finally:
        single.unlink(missing_ok=True)
    for written in (path, path.parent / DATA_FILE):
        os.chmod(written, 0o644)   # like the rest of the index: not a secret (onnx writes 0600)


def check_parity(encoder, onnx_encoder, texts=PROBES) -> float:
    """Smallest cosine between the PyTorch and the ONNX vectors of texts (queries and passages,
    one at a time and as a padded batch); ValueError below MIN_COSINE."""
    worst = 1.0
    for kind in ("encode_queries", "encode_passages"):
        ref = getattr(encoder, kind)(texts)
        got = getattr(onnx_encoder, kind)(texts)
        single = np.vstack([getattr(onnx_encoder, kind)([t]) for t in texts])
        for vecs in (got, single):
            worst = min(worst, float(np.min(np.sum(ref * vecs, axis=1))))
    if worst < MIN_COSINE:
        raise ValueError(f"ONNX export differs from PyTorch: cosine {worst:.6f} < {MIN_COSINE}")
    return worst


def export_encoder(encoder, directory: str | Path, model_dir: str | Path) -> dict:
    """Export into directory/model.onnx (+ model.onnx.data), check it against the PyTorch
    encoder, and return what meta.json records about it. Both files are written in a temporary
    folder and renamed into place, the graph last: it names the data file, so a reader that
    finds a model.onnx finds its weights complete (index.has_onnx also wants meta.json's entry,
    written after this returns). Re-exporting an index a live process is loading is not safe."""
    import onnxruntime
    import torch

    from retrieval.onnx_encoder import OnnxE5Encoder

    directory = Path(directory)
    tmp = Path(tempfile.mkdtemp(prefix=".onnx-tmp-", dir=directory))
    t0 = time.perf_counter()
    try:
        export_model(encoder, tmp / ONNX_FILE)
        cosine = check_parity(encoder, OnnxE5Encoder(tmp / ONNX_FILE, model_dir))
        os.replace(tmp / DATA_FILE, directory / DATA_FILE)
        os.replace(tmp / ONNX_FILE, directory / ONNX_FILE)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    size = sum((directory / name).stat().st_size for name in (ONNX_FILE, DATA_FILE))
    return {"file": ONNX_FILE, "data_file": DATA_FILE, "opset": OPSET, "exporter": EXPORTER,
            "dtype": "float32", "torch": torch.__version__, "onnxruntime": onnxruntime.__version__,
            "bytes": size, "min_probe_cosine": round(cosine, 6),
            "seconds": round(time.perf_counter() - t0, 1)}


def supports(encoder) -> bool:
    """Only the PyTorch e5 encoder can be exported (test stand-ins cannot)."""
    from retrieval.encoder import E5Encoder
    return isinstance(encoder, E5Encoder)


def add_to_index(index_dir: str | Path, model_dir: str | Path) -> dict:
    """Add model.onnx to an existing index (one built before the export existed): load the base
    model and the index's delta, export, record it in meta.json. Returns the meta entry."""
    from retrieval import index as idx
    from retrieval.encoder import E5Encoder

    index_dir = Path(index_dir)
    meta = idx.read_meta(index_dir)
    if meta.get("model") != idx.model_id(model_dir):
        raise idx.StaleIndexError(f"index built with model {meta.get('model')}, "
                                  f"{model_dir} is {idx.model_id(model_dir)}")
    encoder = E5Encoder(model_dir)
    if meta.get("finetune"):
        encoder.load_delta(index_dir / idx.DELTA_FILE)
    meta["onnx"] = export_encoder(encoder, index_dir, model_dir)
    _write_json_atomically(index_dir / idx.META, meta)
    return meta["onnx"]


def _write_json_atomically(path: Path, data: dict) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(data, ensure_ascii=False, indent=2), "utf-8")
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)

