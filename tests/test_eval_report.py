"""`make eval`'s report: per-entry accuracy, confusions, score distributions with the thresholds."""
from __future__ import annotations

import base64
import io
import json
import re

import pytest

from _retrieval_fakes import FakeEncoder, tiny_kb
from retrieval import evaluate
from retrieval.__main__ import main
from retrieval.evaluate import Case, Outcome
from retrieval.report_html import write_report
from retrieval.retriever import Params, Retriever

# Our own questions for the tiny KB (not the dev set): in scope, and two out of scope.
CASES = [
    Case("健康码截屏给保安看行吗", ("personal.screenshot",), "zh"),
    Case("刷脸老是不通过", ("personal.face_fail",), "zh"),
    Case("能帮几个家人领码", ("family.quota",), "zh"),
    Case("外国护照能领健康码吗", ("overseas.foreign_passport",), "zh"),
    Case("Can I print my health code?", ("personal.screenshot",), "en"),
    Case("明天福州天气怎么样", (), "zh"),
    Case("社保卡丢了怎么补办", (), "zh"),
]


@pytest.fixture(scope="module")
def retriever():
    r = Retriever(tiny_kb(), FakeEncoder(),
                  params=Params(w_dense=0.5, dense_lo=0.2, dense_hi=0.9, t_answer=0.5, t_clarify=0.25))
    r.warm_up()
    return r


def outcome(q, accept, decision, ranked, scores=()):
    return Outcome(Case(q, tuple(accept), "zh"), decision, tuple(ranked), 0.01, tuple(scores))


def test_per_entry_and_confusion_counts():
    outs = [
        outcome("a", ["e.one"], "answer", ["e.one", "e.two"], [0.9, 0.2]),
        outcome("b", ["e.one"], "answer", ["e.two", "e.one"], [0.7, 0.3]),     # answered wrongly as e.two
        outcome("c", ["e.one"], "clarify", ["e.two", "e.one"], [0.4, 0.38]),
        outcome("d", ["e.two", "e.one"], "none", ["e.three"], [0.1]),           # counts under both
        outcome("e", [], "answer", ["e.two"], [0.8]),                           # out of scope, answered
    ]
    rows = {r["faq_id"]: r for r in evaluate.per_entry(outs, ("e.one", "e.two", "e.three"))}
    assert rows["e.one"]["n"] == 4
    assert rows["e.one"]["hit@1"] == pytest.approx(1 / 4)
    assert rows["e.one"]["hit@3"] == pytest.approx(3 / 4)
    assert rows["e.one"]["answered_correct"] == pytest.approx(1 / 4)
    assert (rows["e.one"]["clarified"], rows["e.one"]["none"]) == (1, 1)
    assert rows["e.two"]["wrongly_answered_as"] == 2                            # b and the oos one
    assert rows["e.three"]["n"] == 0 and rows["e.three"]["hit@1"] is None

    conf = evaluate.confusion(outs)
    assert [(c["expected"], c["got"], c["count"], c["answered"]) for c in conf] == [
        ("e.one", "e.two", 2, 1), ("e.two | e.one", "e.three", 1, 0)]
    assert conf[0]["examples"] == ["b", "c"]
    assert outs[3].top_score == 0.1 and outcome("x", [], "none", []).top_score == 0.0


def test_html_and_json_report(retriever, tmp_path):
    outcomes = evaluate.run(retriever, CASES)
    assert all(len(o.scores) == len(o.ranked) for o in outcomes)
    html_path, json_path = write_report(outcomes, retriever, tmp_path / "reports", dev_path="own.jsonl",
                                        mode="bm25+dense")
    data = json.loads(json_path.read_text("utf-8"))
    assert data["thresholds"] == {"t_answer": 0.5, "t_clarify": 0.25, "margin": retriever.params.margin}
    assert [r["faq_id"] for r in data["per_entry"]] == list(tiny_kb().ids)
    assert data["metrics"]["all"]["n"] == len(CASES)
    assert len(data["questions"]) == len(CASES)
    assert json.dumps(data, allow_nan=False)           # NaN rates became null

    page = html_path.read_text("utf-8")
    assert "<script" not in page and "http" not in page.replace("http-equiv", "")   # self-contained
    for needle in ("Per entry", "Wrong top-1", "Score distributions", "0.500", "0.250",
                   "overseas.foreign_passport", "健康码截屏给保安看行吗"):
        assert needle in page
    images = re.findall(r"src='data:image/png;base64,([A-Za-z0-9+/=]+)'", page)
    assert len(images) == 2
    from PIL import Image

    for b64 in images:
        img = Image.open(io.BytesIO(base64.b64decode(b64)))
        assert img.format == "PNG" and img.width >= 600 and img.height >= 200


def test_question_text_is_escaped(retriever, tmp_path):
    cases = [Case("<script>alert(1)</script>健康码能截图吗", ("personal.screenshot",), "zh")]
    html_path, _ = write_report(evaluate.run(retriever, cases), retriever, tmp_path)
    page = html_path.read_text("utf-8")
    assert "<script>" not in page and "&lt;script&gt;" in page


def test_eval_command_writes_the_report(tmp_path, capsys):
    dev = tmp_path / "own.jsonl"
    dev.write_text("\n".join(json.dumps({"q": c.q, "accept": list(c.accept), "lang": c.lang}, ensure_ascii=False)
                             for c in CASES), "utf-8")
    assert main(["eval", "--dev", str(dev), "--bm25-only", "--report", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    for figure in ("hit@1", "hit@3", "answered_correct", "wrong_answer", "oos_abstain", "zh ", "en "):
        assert figure in out
    assert f"report: {tmp_path / 'out' / 'eval.html'}" in out
    assert (tmp_path / "out" / "eval.html").exists() and (tmp_path / "out" / "eval.json").exists()


def test_the_cascade_share_counts_the_way_each_search_went():
    from retrieval.retriever import Retriever
    from retrieval.kb import load_kb
    from core.settings import REPO_ROOT

    retriever = Retriever(load_kb(REPO_ROOT / "kb" / "faq_zh.md"))          # BM25 only: path "bm25"
    retriever.warm_up()
    cases = [Case("健康码可以截图吗", ("personal.screenshot",), "zh"), Case("天气怎么样", (), "zh")]
    outcomes = evaluate.run(retriever, cases) + evaluate.run(retriever, cases[:1])    # the last: cached
    assert [o.path for o in outcomes] == ["bm25", "bm25", "cached"]
    share = evaluate.cascade_share(outcomes)
    assert share["n"] == 3 and share["reached_e5"] == 0.0
    assert share["shares"] == {"bm25": 2 / 3, "cached": 1 / 3}
    outcomes.append(Outcome(cases[0], "answer", ("personal.screenshot",), 0.01, (0.9,), "full"))
    assert evaluate.cascade_share(outcomes)["reached_e5"] == 0.25
    assert "reached e5: 25.0%" in evaluate.format_report(evaluate.report(outcomes))
