"""Index files: round trip to a new retriever without re-encoding, atomic replace, staleness."""
from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest

from _retrieval_fakes import FakeEncoder, tiny_kb
from retrieval import index as idx
from retrieval.retriever import Params, Retriever


@pytest.fixture()
def model_dir(tmp_path):
    d = tmp_path / "model"
    d.mkdir()
    (d / "config.json").write_text('{"hidden_size": 256}')
    return d


@pytest.fixture(scope="module")
def built():
    r = Retriever(tiny_kb(), FakeEncoder(), params=Params(w_dense=0.5, dense_lo=0.2, dense_hi=0.9,
                                                          t_answer=0.5, t_clarify=0.3, margin=0.05))
    r.warm_up()
    return r


def test_round_trip_same_results_without_reencoding(built, model_dir, tmp_path):
    out = idx.write_index(built, tmp_path / "index", model=idx.model_id(model_dir))
    meta = json.loads((out / "meta.json").read_text())
    assert meta["kb_version"] == "v1" and meta["phrasings"] == len(built.phrasings.texts)
    assert meta["params"]["t_answer"] == 0.5

    enc = FakeEncoder()
    loaded = idx.load_retriever(out, None, model_dir, encoder=enc, kb=tiny_kb())
    assert enc.calls == [] or sum(enc.calls) == 0     # no phrasing was encoded again
    assert loaded.params == built.params
    assert np.allclose(loaded.dense.vectors(), built.dense.vectors())
    for q in ("外国护照能领健康码吗", "刷脸老是失败", "how many family members can I add"):
        a, b = built.search(q), loaded.search(q)
        assert a.decision == b.decision
        assert [(h.faq_id, h.score) for h in a.results] == [(h.faq_id, h.score) for h in b.results]
    assert sum(enc.calls) == 3                          # one encode per query, none for the KB


def test_stale_index_refused(built, model_dir, tmp_path):
    out = idx.write_index(built, tmp_path / "index", model=idx.model_id(model_dir))
    with pytest.raises(idx.StaleIndexError, match="KB"):
        idx.load_retriever(out, None, model_dir, encoder=FakeEncoder(), kb=tiny_kb(version="v2"))
    (model_dir / "config.json").write_text('{"hidden_size": 384}')
    with pytest.raises(idx.StaleIndexError, match="model"):
        idx.load_retriever(out, None, model_dir, encoder=FakeEncoder(), kb=tiny_kb())
    with pytest.raises(idx.StaleIndexError):
        idx.load_retriever(tmp_path / "nowhere", None, model_dir, encoder=FakeEncoder(), kb=tiny_kb())


def test_rewrite_replaces_atomically_and_leaves_no_temp_dirs(built, model_dir, tmp_path):
    out = tmp_path / "index"
    idx.write_index(built, out, model="m1")
    other = built.with_params(replace(built.params, t_answer=0.7))
    idx.write_index(other, out, model="m1")
    assert idx.read_meta(out)["params"]["t_answer"] == 0.7
    assert sorted(p.name for p in tmp_path.iterdir()) == ["index", "model"]


def test_failed_write_keeps_the_old_index(built, tmp_path, monkeypatch):
    out = tmp_path / "index"
    idx.write_index(built, out, model="m1")
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    def boom(directory):
        (directory / "dense.faiss").write_bytes(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(built.dense, "save", boom)
    with pytest.raises(OSError, match="disk full"):
        idx.write_index(built, out, model="m2")
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["index"]


def test_model_id_changes_with_the_model(model_dir):
    a = idx.model_id(model_dir)
    (model_dir / "config.json").write_text('{"hidden_size": 1}')
    assert idx.model_id(model_dir) != a
