"""e5 on onnxruntime (the index's model.onnx) against e5 on PyTorch (base model + delta).

Against the index `make setup` built (HC_INDEX_DIR, from var/artifacts.json) and its model
(HC_MODEL_DIR): the ONNX retriever must rank, decide and score the dev set like the PyTorch one,
tokenise like sentence-transformers, and the serving process must never import torch.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from _env import missing
from retrieval import evaluate
from retrieval import index as idx
from retrieval.text import for_encoder

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parent.parent
KB = REPO / "kb" / "faq_zh.md"
DEV = REPO.parent / "shared" / "eval" / "faq_dev.jsonl"
FULL_WIDTH = ["健康码怎么申请？", "能截图吗，急！", "老人（没有手机）怎么办：", "ＩＤ号码；“引号”、顿号",
              "Ｌ４人脸识别不通过？？", "全角空格　在这里"]


def _artefacts() -> tuple[Path, Path]:
    model, index = os.environ.get("HC_MODEL_DIR"), os.environ.get("HC_INDEX_DIR")
    if not (model and (Path(model) / "model.safetensors").is_file()):
        missing(f"no converted e5 model (HC_MODEL_DIR={model})")
    if not (index and (Path(index) / "meta.json").is_file()):
        missing(f"no built index (HC_INDEX_DIR={index})")
    if not idx.has_onnx(index):
        missing(f"index {index} has no model.onnx: `python -m retrieval export-onnx --index DIR`")
    return Path(model), Path(index)


@pytest.fixture(scope="module")
def artefacts():
    return _artefacts()


@pytest.fixture(scope="module")
def pair(artefacts):
    """(onnx retriever, torch retriever) over the same index; no result cache, so every search
    really runs its encoder."""
    model, index = artefacts
    onnx = idx.load_retriever(index, KB, model, engine="onnx", cache_size=0, batching=False)
    torch_ = idx.load_retriever(index, KB, model, engine="torch", cache_size=0, batching=False)
    from retrieval.encoder import E5Encoder
    from retrieval.onnx_encoder import OnnxE5Encoder
    assert isinstance(onnx.encoder, OnnxE5Encoder) and isinstance(torch_.encoder, E5Encoder)
    return onnx, torch_


@pytest.fixture(scope="module")
def dev_questions():
    if not DEV.is_file():
        missing(f"no dev set at {DEV}")
    return [json.loads(line)["q"] for line in DEV.read_text("utf-8").splitlines() if line.strip()]


def test_raw_e5_vectors_match(pair, dev_questions):
    onnx, torch_ = pair
    texts = [for_encoder(q) for q in dev_questions]
    a, b = onnx.encoder.encode_queries(texts), torch_.encoder.encode_queries(texts)
    assert a.dtype == np.float32 and a.shape == b.shape == (len(texts), 384)
    assert np.allclose(np.linalg.norm(a, axis=1), 1.0, atol=1e-5)
    cos = np.sum(a * b, axis=1)
    assert cos.min() >= 0.9999, [(dev_questions[i], float(cos[i])) for i in np.argsort(cos)[:3]]
    # one at a time (the serving path) gives the same vectors as the padded batch
    single = np.vstack([onnx.encoder.encode_queries([t]) for t in texts[:10]])
    assert np.sum(single * a[:10], axis=1).min() >= 0.9999
    passages = onnx.encoder.encode_passages(texts[:10])
    assert np.sum(passages * torch_.encoder.encode_passages(texts[:10]), axis=1).min() >= 0.9999


def test_same_top1_decision_and_scores_on_dev_set(pair, dev_questions):
    onnx, torch_ = pair
    for q in dev_questions:
        a, b = onnx.search(q, k=3), torch_.search(q, k=3)
        assert a.decision == b.decision, q
        assert [h.faq_id for h in a.results[:1]] == [h.faq_id for h in b.results[:1]], q
        # Hit scores are rounded to 4 places: two values 1e-6 apart can round 1e-4 apart.
        for ha, hb in zip(a.results, b.results):
            assert ha.score == pytest.approx(hb.score, abs=1.5e-4), q
        # The full fusion, e5 included whatever the cascade did, unrounded.
        fa, fb = onnx.entry_scores(q), torch_.entry_scores(q)
        assert np.argmax(fa) == np.argmax(fb), q
        assert np.max(np.abs(fa - fb)) <= 1e-4, (q, float(np.max(np.abs(fa - fb))))


def test_full_width_punctuation_and_truncation_tokenise_like_sentence_transformers(pair):
    onnx, torch_ = pair
    st_tokenizer = torch_.encoder.model.tokenizer
    long_text = "健康码一直是橙色怎么办？" * 200           # far over 512 tokens
    texts = ["query: " + t for t in FULL_WIDTH] + ["passage: " + long_text]
    ours = onnx.encoder.token_ids(texts)
    theirs = st_tokenizer(texts, truncation=True, max_length=512)["input_ids"]
    assert ours == [list(ids) for ids in theirs]
    assert len(ours[-1]) == 512
    unk = st_tokenizer.unk_token_id
    assert all(unk not in ids for ids in ours), "full-width punctuation became <unk>"


SERVE = """
import json, sys
from core.settings import get_settings
from api.main import load_retriever
r = load_retriever(get_settings())
qs = ["健康码怎么申请？", "为什么L4人脸识别不通过", "Can foreigners apply?", "今天天气怎么样"]
out = [r.search(q).decision for q in qs]
vec = r.encoder.encode_queries(["健康码，能截图吗？"])
print(json.dumps({"decisions": out, "paths": dict(r.paths), "encoder": type(r.encoder).__name__,
                  "dim": int(vec.shape[1]),
                  "heavy": [m for m in ("torch", "sentence_transformers", "transformers")
                            if m in sys.modules]}))
"""


def test_serving_process_never_imports_torch(artefacts):
    model, index = artefacts
    env = {**os.environ, "PYTHONPATH": str(REPO), "HC_MODEL_DIR": str(model),
           "HC_INDEX_DIR": str(index), "HC_RETRIEVAL_MODE": "hybrid"}
    proc = subprocess.run([sys.executable, "-c", SERVE], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["encoder"] == "OnnxE5Encoder" and report["dim"] == 384
    assert report["decisions"][0] == "answer"
    assert report["heavy"] == [], report
