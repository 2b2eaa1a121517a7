"""The encoder adapter: the hashing fake (fast) and the real e5 folder (slow)."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from retrieval.encoder import E5Encoder, Encoder, HashingEncoder


def _unit_rows(x: np.ndarray) -> None:
    np.testing.assert_allclose(np.linalg.norm(x, axis=1), 1.0, rtol=1e-5)


def test_hashing_encoder_shape_dtype_and_norm():
    enc = HashingEncoder(dim=64)
    out = enc.encode_queries(["健康码怎么申领", "Can I use a screenshot?", "码"])
    assert out.shape == (3, 64) and out.dtype == np.float32
    _unit_rows(out)
    assert enc.encode_passages([]).shape == (0, 64)


def test_hashing_encoder_is_deterministic_across_instances():
    texts = ["为家人申领健康码", "orange code after quarantine"]
    a = HashingEncoder(dim=32).encode_passages(texts)
    b = HashingEncoder(dim=32).encode_passages(texts)
    np.testing.assert_array_equal(a, b)


def test_hashing_encoder_ranks_shared_bigrams_higher():
    enc = HashingEncoder(dim=256)
    q = enc.encode_queries(["健康码显示橙色怎么办"])[0]
    near, far = enc.encode_passages(["健康码为什么显示橙色", "外籍人士能否申请"])
    assert q @ near > q @ far


def test_hashing_encoder_normalises_width_case_and_spacing():
    enc = HashingEncoder()
    a, b = enc.encode_queries(["ＬＩ Code？", "li  code?"])
    assert a @ b == pytest.approx(1.0)


def test_hashing_encoder_edge_inputs():
    enc = HashingEncoder(dim=16)
    assert not enc.encode_queries(["   "]).any()          # nothing to hash: zero row
    with pytest.raises(TypeError):
        enc.encode_queries("a single string")
    with pytest.raises(ValueError):
        HashingEncoder(dim=1)


def test_both_encoders_satisfy_the_protocol():
    assert isinstance(HashingEncoder(), Encoder)
    # issubclass() refuses protocols with properties; check E5Encoder's members instead
    for name in ("dim", "warm_up", "encode_queries", "encode_passages"):
        assert hasattr(E5Encoder, name), name


def test_e5_encoder_constructor_validates_without_loading(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a converted e5 folder"):
        E5Encoder(tmp_path)


@pytest.fixture(scope="module")
def e5(tmp_path_factory) -> E5Encoder:
    existing = os.environ.get("HC_MODEL_DIR")
    if existing:
        model_dir = Path(existing)
    else:
        from retrieval import e5_convert

        model_dir = tmp_path_factory.mktemp("e5") / "model"
        e5_convert.convert(model_dir)
    enc = E5Encoder(model_dir)
    enc.warm_up()
    return enc


@pytest.mark.slow
def test_e5_shapes_and_normalisation(e5):
    assert e5.dim == 384
    q = e5.encode_queries(["健康码是橙色的怎么办？", "How do I apply for a health code?"])
    p = e5.encode_passages(["外籍人士可以申领“八闽健康码”吗？"])
    assert q.shape == (2, 384) and p.shape == (1, 384)
    assert q.dtype == np.float32 and p.dtype == np.float32
    _unit_rows(q)
    _unit_rows(p)
    assert e5.encode_queries([]).shape == (0, 384)


@pytest.mark.slow
def test_e5_query_and_passage_prefixes_differ(e5):
    text = ["截图的健康码能用吗"]
    q, p = e5.encode_queries(text)[0], e5.encode_passages(text)[0]
    assert 0.8 < float(q @ p) < 0.9999


@pytest.mark.slow
def test_e5_paraphrase_scores_above_unrelated(e5):
    q = e5.encode_queries(["我隔离满十四天了，码怎么还是橙的"])[0]
    para, unrelated = e5.encode_passages([
        "隔离期满且没有症状，健康码仍为橙色，应该怎么处理？",
        "周末去鼓山爬山需要带什么装备？",
    ])
    assert q @ para > q @ unrelated + 0.05


@pytest.mark.slow
def test_e5_traditional_and_english_paraphrases(e5):
    q = e5.encode_queries(["外國人可以申請健康碼嗎", "Can a foreigner get the health code?"])
    right, wrong = e5.encode_passages(["外籍人士可以申领八闽健康码吗？",
                                       "为家人申领健康码成功后，如何切换查看？"])
    assert (q @ right > q @ wrong).all()
