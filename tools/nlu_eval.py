"""Held-out NLU figures for a Rasa pipeline, so two configs can be compared on the same split.

Run in the Rasa venv, from the repository root:
    PYTHONPATH=$PWD/bot .venv-rasa/bin/python tools/nlu_eval.py --config bot/config.yml [--config other.yml]

A fixed, seeded split of bot/data/nlu.yml (our own NLU data, never ../shared/eval): 20 % of each
intent's examples held out, chosen by a seeded shuffle per intent, so the split does not move when
another intent gains examples. Regexes, lookup tables and synonyms stay in the training part (they
are the extractor's knowledge, not examples). Each config is trained on the train part, loaded with
Agent.load and asked every held-out message; printed per config: intent accuracy (strict, and
"routed", where faq and nlu_fallback count as the same since rules.yml sends both to
action_answer_faq), macro F1, entity F1 (exact type+span, and type+value after synonyms: what the
actions read), CPU ms per parse (time.process_time around agent.parse_message, one thread, the
median of --repeats parses of each message), the Agent.load time and a sweep of FallbackClassifier
thresholds over the classifier's own confidences. That load time is in the process that just
trained (its imports done), so it understates a server's start-up: for that, time `rasa run`
until /webhooks/hc/ answers.

The split is plain Python (no Rasa import) so tests/test_nlu_eval.py runs it in the app venv.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Tuple

ROOT = Path(__file__).resolve().parent.parent
BOT = ROOT / "bot"
NLU = BOT / "data" / "nlu.yml"
FALLBACK = "nlu_fallback"
TO_RETRIEVAL = {"faq", FALLBACK}   # rules.yml answers both with action_answer_faq
METADATA_ENTITIES = {"lang"}        # from message metadata, never from the text


# ---------------------------------------------------------------------------- the split (no Rasa)

def split_examples(examples: Dict[str, List[str]], test_fraction: float = 0.2,
                   seed: int = 42) -> Tuple[Dict[str, List[str]], Dict[str, List[str]]]:
    """Per intent, a seeded shuffle; the first round(n * fraction) go to test (at least one when the
    intent has two or more examples, never all of them). Seeded by intent name too, so adding an
    example to one intent leaves every other intent's split as it was."""
    train: Dict[str, List[str]] = {}
    test: Dict[str, List[str]] = {}
    for intent in sorted(examples):
        items = list(dict.fromkeys(examples[intent]))    # a duplicate must not sit on both sides
        random.Random(f"{seed}:{intent}").shuffle(items)
        n_test = min(max(1, round(len(items) * test_fraction)), len(items) - 1) if len(items) > 1 else 0
        test[intent] = items[:n_test]
        train[intent] = items[n_test:]
    return train, test


def read_nlu(path: Path = NLU) -> Tuple[Dict[str, List[str]], list]:
    """The intents' examples (annotated text, as written) and the other blocks (regex, lookup,
    synonym), from a Rasa YAML NLU file."""
    import yaml

    blocks = yaml.safe_load(path.read_text(encoding="utf-8"))["nlu"]
    examples: Dict[str, List[str]] = {}
    others = []
    for block in blocks:
        if "intent" in block:
            lines = [ln.strip()[2:] for ln in block["examples"].splitlines() if ln.strip().startswith("- ")]
            examples.setdefault(block["intent"], []).extend(lines)
        else:
            others.append(block)
    return examples, others


def write_nlu(path: Path, examples: Dict[str, List[str]], others: list) -> None:
    import yaml

    blocks = [{"intent": intent, "examples": "".join(f"- {ex}\n" for ex in exs)}
              for intent, exs in examples.items() if exs]
    blocks += others

    class _Literal(yaml.SafeDumper):   # examples as block literals, the way Rasa writes them
        pass

    def _str(dumper, data):
        style = "|" if "\n" in data else None
        return dumper.represent_scalar("tag:yaml.org,2002:str", data, style=style)

    _Literal.add_representer(str, _str)
    path.write_text(yaml.dump({"version": "3.1", "nlu": blocks}, Dumper=_Literal, allow_unicode=True,
                              sort_keys=False), encoding="utf-8")


# ---------------------------------------------------------------------------- metrics (no Rasa)

def macro_f1(gold: List[str], pred: List[str]) -> float:
    labels = sorted(set(gold))
    scores = []
    for label in labels:
        tp = sum(g == label and p == label for g, p in zip(gold, pred))
        fp = sum(g != label and p == label for g, p in zip(gold, pred))
        fn = sum(g == label and p != label for g, p in zip(gold, pred))
        scores.append(2 * tp / (2 * tp + fp + fn) if tp else 0.0)
    return sum(scores) / len(scores)


def set_f1(gold: List[set], pred: List[set]) -> float:
    tp = sum(len(g & p) for g, p in zip(gold, pred))
    fp = sum(len(p - g) for g, p in zip(gold, pred))
    fn = sum(len(g - p) for g, p in zip(gold, pred))
    return 2 * tp / (2 * tp + fp + fn) if tp else (1.0 if not fp and not fn else 0.0)


def with_fallback(ranking: List[dict], threshold: float, ambiguity: float) -> str:
    """What FallbackClassifier would answer, from the classifier's own ranking."""
    ranking = [r for r in ranking if r["name"] != FALLBACK]
    top = ranking[0]["confidence"]
    second = ranking[1]["confidence"] if len(ranking) > 1 else 0.0
    if top < threshold or top - second < ambiguity:
        return FALLBACK
    return ranking[0]["name"]


def percentile(values: List[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


# ---------------------------------------------------------------------------- Rasa side

def _one_thread() -> None:
    # One thread for TensorFlow and BLAS: per-parse CPU is then what one Rasa worker spends, and
    # process_time is not inflated by a pool spinning on the other core.
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
                "TF_INTRA_OP_PARALLELISM_THREADS", "TF_INTER_OP_PARALLELISM_THREADS"):
        os.environ.setdefault(var, "1")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("RASA_TELEMETRY_ENABLED", "false")


def evaluate(config: Path, train_file: Path, test_file: Path, out: Path, repeats: int = 3) -> dict:
    import asyncio
    import logging

    from rasa.core.agent import Agent
    from rasa.model_training import train_nlu
    from rasa.shared.nlu.training_data.loading import load_data
    from rasa.utils.log_utils import configure_structlog

    # Rasa's structlog prints every parse at debug level unless configured (its CLI does this).
    configure_structlog(logging.WARNING)
    logging.getLogger().setLevel(logging.WARNING)

    started = time.perf_counter()
    model = train_nlu(str(config), str(train_file), str(out), fixed_model_name=config.stem,
                      domain=str(BOT / "domain.yml"))
    train_s = time.perf_counter() - started
    if not model:
        raise SystemExit(f"training {config} failed")
    started = time.perf_counter()
    agent = Agent.load(model)
    load_s = time.perf_counter() - started

    messages = load_data(str(test_file)).intent_examples
    gold_intents = [m.get("intent") for m in messages]
    gold_spans, gold_values = [], []
    for m in messages:
        ents = [e for e in m.get("entities", []) if e["entity"] not in METADATA_ENTITIES]
        gold_spans.append({(e["entity"], e["start"], e["end"]) for e in ents})
        gold_values.append({(e["entity"], str(e["value"])) for e in ents})

    async def parse_all():
        for m in messages[:5]:            # warm-up: DIET traces its predict function on first use
            await agent.parse_message(m.get("text"))
        results, cpu_ms = [], []
        for m in messages:
            times = []
            for _ in range(repeats):   # the median of a few: the box is shared, one-offs are noise
                t0 = time.process_time()
                parsed = await agent.parse_message(m.get("text"))
                times.append((time.process_time() - t0) * 1000)
            cpu_ms.append(sorted(times)[len(times) // 2])
            results.append(parsed)
        return results, cpu_ms

    parsed, cpu_ms = asyncio.run(parse_all())
    pred = [p["intent"]["name"] for p in parsed]
    ents = [[e for e in p.get("entities", []) if e["entity"] not in METADATA_ENTITIES] for p in parsed]
    pred_spans = [{(e["entity"], e["start"], e["end"]) for e in es} for es in ents]
    pred_values = [{(e["entity"], str(e["value"])) for e in es} for es in ents]
    routed = [p if not (g == "faq" and p in TO_RETRIEVAL) else g for g, p in zip(gold_intents, pred)]
    wrong = [(m.get("text"), g, p) for m, g, p in zip(messages, gold_intents, pred) if g != p]
    # Raw classifier confidences (FallbackClassifier puts nlu_fallback on top of the ranking and
    # keeps the rest), so thresholds can be swept without retraining.
    sweep = {}
    for threshold in (0.0, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.5, 0.6, 0.7):
        for ambiguity in (0.0, 0.05, 0.1):
            got = [with_fallback(p.get("intent_ranking") or [p["intent"]], threshold, ambiguity)
                   for p in parsed]
            ok = sum(g == q or (g == "faq" and q in TO_RETRIEVAL) for g, q in zip(gold_intents, got))
            # Confidently wrong: a wrong intent the bot acts on (a fallback goes to retrieval, which
            # abstains when nothing is close): the harm a higher threshold buys down.
            bad = sum(g != q and q != FALLBACK for g, q in zip(gold_intents, got))
            sweep[f"{threshold:.2f}/{ambiguity:.2f}"] = [ok, bad]
    return {
        "config": str(config), "n": len(messages),
        "intent_acc": sum(g == p for g, p in zip(gold_intents, pred)) / len(messages),
        "intent_acc_routed": sum(g == p for g, p in zip(gold_intents, routed)) / len(messages),
        "macro_f1": macro_f1(gold_intents, routed),
        "entity_f1_span": set_f1(gold_spans, pred_spans),
        "entity_f1_value": set_f1(gold_values, pred_values),
        "entity_gold": sum(map(len, gold_spans)),
        "cpu_ms_mean": sum(cpu_ms) / len(cpu_ms), "cpu_ms_p95": percentile(cpu_ms, 0.95),
        "train_s": train_s, "load_s": load_s, "model": model,
        "wrong": wrong, "fallback_sweep_correct": sweep,
        "entity_errors": [(m.get("text"), sorted(g), sorted(p))
                          for m, g, p in zip(messages, gold_values, pred_values) if g != p],
    }


def main(argv: List[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", action="append", type=Path, required=True,
                    help="a Rasa config (repeat to compare several on the same split)")
    ap.add_argument("--nlu", type=Path, default=NLU)
    ap.add_argument("--test-fraction", type=float, default=0.2)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--repeats", type=int, default=3, help="parses per message; its median CPU time counts")
    ap.add_argument("--out", type=Path, default=None, help="where models go (default: a temp dir)")
    ap.add_argument("--json", type=Path, default=None, help="also write the full results here")
    args = ap.parse_args(argv)
    _one_thread()

    configs = [c.resolve() for c in args.config]
    examples, others = read_nlu(args.nlu.resolve())
    train, test = split_examples(examples, args.test_fraction, args.seed)
    work = Path(tempfile.mkdtemp(prefix="nlu-eval-")) if args.out is None else args.out.resolve()
    work.mkdir(parents=True, exist_ok=True)
    write_nlu(work / "train.yml", train, others)
    write_nlu(work / "test.yml", test, [])
    print(f"split: {sum(map(len, train.values()))} train / {sum(map(len, test.values()))} held out "
          f"(seed {args.seed}, fraction {args.test_fraction}); files in {work}", flush=True)

    os.chdir(BOT)                      # config paths (../kb/jieba) are relative to bot/
    sys.path.insert(0, str(BOT))       # components.lang_metadata
    results = [evaluate(c, work / "train.yml", work / "test.yml", work / "models", args.repeats)
               for c in configs]

    for r in results:
        print(f"\n== {r['config']}  (n={r['n']}, {r['entity_gold']} gold entities)")
        for text, gold, got in r["wrong"]:
            print(f"   intent  {gold:<22} -> {got:<22} {text}")
        for text, gold, got in r["entity_errors"]:
            print(f"   entity  {gold} -> {got}  {text}")
        print(f"   fallback sweep, threshold/ambiguity: routed-correct/confidently-wrong of {r['n']}:")
        items = list(r["fallback_sweep_correct"].items())
        for i in range(0, len(items), 6):
            print("     " + "  ".join(f"{k} {ok}/{bad}" for k, (ok, bad) in items[i:i + 6]))
    # Train time is left out: Rasa's training cache (bot/.rasa) skips what an earlier run trained.
    print("\n| config | intent acc | routed acc | macro F1 | entity F1 span | entity F1 value "
          "| CPU ms/parse mean | p95 | Agent.load s |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in results:
        print(f"| {Path(r['config']).name} | {r['intent_acc']:.3f} | {r['intent_acc_routed']:.3f} "
              f"| {r['macro_f1']:.3f} | {r['entity_f1_span']:.3f} | {r['entity_f1_value']:.3f} "
              f"| {r['cpu_ms_mean']:.2f} | {r['cpu_ms_p95']:.2f} | {r['load_s']:.2f} |")
    if args.json:
        args.json.write_text(json.dumps(results, ensure_ascii=False, indent=1), encoding="utf-8")


if __name__ == "__main__":
    main()
