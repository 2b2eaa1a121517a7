"""The trained Rasa model on English and Traditional questions about the user's own situation:
own probes (tests/data/diagnosis_intent_probes.jsonl, never in bot/data/nlu.yml), parsed in the
Rasa virtualenv the way tests/test_rasa_side.py drives it. General questions on the same topics
are probes too: they must still go to retrieval (faq, or nlu_fallback, which rules.yml also
sends to action_answer_faq).

Also a report, for comparing models:
    .venv/bin/python tests/test_diagnosis_intents_real.py [RASA_MODEL.tar.gz]
"""
from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

import pytest

# The Rasa venv the other Rasa-side tests use (tests/ is on sys.path under pytest and as a script).
from test_rasa_side import RASA_PYTHON, ROOT

PROBES = ROOT / "tests" / "data" / "diagnosis_intent_probes.jsonl"
TO_RETRIEVAL = {"faq", "nlu_fallback"}   # both are answered by action_answer_faq
DIAGNOSIS_INTENTS = {"why_orange", "why_cannot_generate", "why_face_fail", "name_wrong", "can_apply_family",
                     "why_no_overseas_code", "ask_next_step"}

# Runs in the Rasa venv (cwd bot/, so config's ../kb/jieba resolves): argv = model, texts file.
_PARSE = """
import asyncio, json, logging, sys
logging.disable(logging.WARNING)
from rasa.core.agent import Agent
agent = Agent.load(sys.argv[1])
texts = json.load(open(sys.argv[2], encoding="utf-8"))
async def parse():
    return [(await agent.parse_message(t))["intent"] for t in texts]
print(json.dumps(asyncio.run(parse())))
"""


def load_probes() -> list[dict]:
    return [json.loads(line) for line in PROBES.read_text(encoding="utf-8").splitlines() if line.strip()]


def trained_model() -> Path | None:
    artefacts = ROOT / "var" / "artifacts.json"
    if not artefacts.exists():
        return None
    model = json.loads(artefacts.read_text()).get("rasa_model")
    return Path(model) if model and Path(model).exists() else None


def parse(model: Path, texts: list[str]) -> list[dict]:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "texts.json"
        path.write_text(json.dumps(texts, ensure_ascii=False), encoding="utf-8")
        out = subprocess.run([str(RASA_PYTHON), "-c", _PARSE, str(model), str(path)],
                             check=False, cwd=ROOT / "bot",
                             env={"PYTHONPATH": str(ROOT / "bot"), "TF_CPP_MIN_LOG_LEVEL": "3",
                                  "RASA_TELEMETRY_ENABLED": "false", "HOME": tmp},
                             capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def correct(expected: str, got: str) -> bool:
    return got in TO_RETRIEVAL if expected == "faq" else got == expected


@pytest.fixture(scope="module")
def predictions() -> list[tuple[dict, dict]]:
    if not RASA_PYTHON.exists():
        pytest.skip("no Rasa venv")
    model = trained_model()
    if model is None:
        pytest.skip("no trained Rasa model (run `make setup`)")
    probes = load_probes()
    return list(zip(probes, parse(model, [p["text"] for p in probes])))


def test_probes_cover_every_diagnosis_intent_in_english_and_traditional():
    probes = load_probes()
    have = Counter((p["intent"], p["lang"]) for p in probes)
    for intent in DIAGNOSIS_INTENTS | {"faq"}:
        assert have[(intent, "en")] >= 2 and have[(intent, "zh-hant")] >= 2, intent


def test_probes_are_not_training_examples():
    import yaml

    from retrieval.text import match_key
    nlu = yaml.safe_load((ROOT / "bot" / "data" / "nlu.yml").read_text(encoding="utf-8"))["nlu"]
    trained = {match_key(line.strip()[2:]) for block in nlu if "intent" in block
               for line in block["examples"].splitlines() if line.strip()}
    assert [p["text"] for p in load_probes() if match_key(p["text"]) in trained] == []


def test_diagnosis_questions_in_english_and_traditional_get_their_intent(predictions):
    own = [(p, got) for p, got in predictions if p["intent"] != "faq"]
    wrong = [(p["text"], p["intent"], got["name"]) for p, got in own if not correct(p["intent"], got["name"])]
    # A miss or two on unseen phrasings is tolerated; the routing as a whole must hold.
    assert len(wrong) <= len(own) // 10, wrong
    for lang in ("en", "zh-hant"):
        of_lang = [(p, got) for p, got in own if p["lang"] == lang]
        assert sum(correct(p["intent"], got["name"]) for p, got in of_lang) >= 0.85 * len(of_lang), lang


def test_general_questions_on_the_same_topics_stay_with_retrieval(predictions):
    general = [(p["text"], got["name"]) for p, got in predictions if p["intent"] == "faq"]
    assert [(text, got) for text, got in general if got not in TO_RETRIEVAL] == []


def main() -> None:
    model = Path(sys.argv[1]) if len(sys.argv) > 1 else trained_model()
    if model is None:
        sys.exit("no trained Rasa model: run `make setup` or pass one")
    probes = load_probes()
    results = parse(model, [p["text"] for p in probes])
    by_group: dict[str, list[bool]] = {}
    for p, got in zip(probes, results):
        ok = correct(p["intent"], got["name"])
        group = "general (faq)" if p["intent"] == "faq" else f"diagnosis {p['lang']}"
        by_group.setdefault(group, []).append(ok)
        by_group.setdefault("all", []).append(ok)
        mark = "ok " if ok else "BAD"
        print(f"{mark} {p['intent']:<22} {got['name']:<22} {got['confidence']:.2f}  {p['text']}")
    print(f"model: {model}")
    for group, oks in sorted(by_group.items()):
        print(f"{group:<16} {sum(oks)}/{len(oks)} = {sum(oks) / len(oks):.3f}")


if __name__ == "__main__":
    main()
