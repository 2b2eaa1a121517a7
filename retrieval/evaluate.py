"""Scoring a retriever on a labelled question set (JSON lines: {"q", "accept": [ids], "lang"}).

accept lists every entry that answers the question; an empty list marks an out-of-scope question
the retriever must not answer. The set is only measured against, never trained on.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from retrieval.retriever import Retriever
from retrieval.text import detect_lang

LANGS = ("zh", "zh-hant", "en")


@dataclass(frozen=True)
class Case:
    q: str
    accept: tuple[str, ...]
    lang: str


@dataclass(frozen=True)
class Outcome:
    case: Case
    decision: str
    ranked: tuple[str, ...]
    seconds: float
    scores: tuple[float, ...] = ()    # fused scores of `ranked`, same order
    path: str | None = None           # the cascade's way (Retriever.paths): exact, cheap_*, full, ...

    @property
    def top_score(self) -> float:
        # No hits at all (greetings, noise) is as far from answering as a score can be.
        return self.scores[0] if self.scores else 0.0

    @property
    def in_scope(self) -> bool:
        return bool(self.case.accept)

    def hit(self, k: int) -> bool:
        return any(i in self.case.accept for i in self.ranked[:k])

    @property
    def answered(self) -> bool:
        return self.decision == "answer"

    @property
    def answered_correct(self) -> bool:
        return self.answered and self.hit(1)


def load_cases(path: str | Path) -> list[Case]:
    cases = []
    for n, line in enumerate(Path(path).read_text("utf-8").splitlines(), 1):
        if not line.strip():
            continue
        row = json.loads(line)
        cases.append(Case(row["q"], tuple(row.get("accept") or ()), row.get("lang") or detect_lang(row["q"])))
    return cases


def run(retriever: Retriever, cases: list[Case], k: int = 3) -> list[Outcome]:
    out = []
    for case in cases:
        before = dict(retriever.paths)
        t0 = time.perf_counter()
        res = retriever.search(case.q, k=k)
        dt = time.perf_counter() - t0
        went = [name for name, n in retriever.paths.items() if n > before.get(name, 0)]
        out.append(Outcome(case, res.decision, tuple(h.faq_id for h in res.results), dt,
                           tuple(float(h.score) for h in res.results), went[0] if len(went) == 1 else None))
    return out


# The cascade's ways, as Retriever.paths names them: which ones needed e5.
E5_PATHS = {"full"}


# The cheap stage's answer thresholds (cheap_t_answer, cheap_margin) tried by cascade_sweep,
# from the calibrated ones (None) down: how much of e5's work each would save, at what cost.
SWEEP = (None, (0.62, 0.15), (0.58, 0.12), (0.54, 0.09), (0.50, 0.06))


def cascade_sweep(retriever: Retriever, sets: dict[str, list[Case]], grid=SWEEP) -> list[dict]:
    """For each cheap-stage setting: every labelled set's hit@1, wrong-answer rate and share of
    searches that reached e5 (a what-if on the loaded index; nothing is changed)."""
    import dataclasses

    rows = []
    for point in grid:
        params = retriever.params if point is None else dataclasses.replace(
            retriever.params, cheap_t_answer=point[0], cheap_margin=point[1])
        probe = retriever.with_params(params)
        probe.warm_up()
        row = {"cheap_t_answer": params.cheap_t_answer, "cheap_margin": params.cheap_margin,
               "calibrated": point is None}
        for name, cases in sets.items():
            out = run(probe, cases)
            m, c = metrics(out), cascade_share(out)
            row[name] = {"hit@1": m["hit@1"], "wrong_answer": m["wrong_answer"],
                         "reached_e5": c.get("reached_e5")}
        rows.append(row)
    return rows


def cascade_share(outcomes: list[Outcome]) -> dict:
    """How the searches went: the share of each way and the share that needed e5 at all."""
    known = [o.path for o in outcomes if o.path is not None]
    if not known:
        return {}
    counts: dict[str, int] = {}
    for path in known:
        counts[path] = counts.get(path, 0) + 1
    shares = {path: n / len(known) for path, n in sorted(counts.items())}
    return {"n": len(known), "shares": shares, "reached_e5": sum(counts.get(p, 0) for p in E5_PATHS) / len(known)}


def metrics(outcomes: list[Outcome]) -> dict:
    ins = [o for o in outcomes if o.in_scope]
    oos = [o for o in outcomes if not o.in_scope]
    rate = lambda num, den: (num / den) if den else float("nan")  # noqa: E731
    return {
        "n": len(outcomes),
        "n_in_scope": len(ins),
        "n_oos": len(oos),
        "hit@1": rate(sum(o.hit(1) for o in ins), len(ins)),
        "hit@3": rate(sum(o.hit(3) for o in ins), len(ins)),
        "answered_correct": rate(sum(o.answered_correct for o in ins), len(ins)),
        # Over every question: an in-scope one answered with a wrong entry, or an out-of-scope
        # one answered at all. This is the rate of confidently wrong replies users would see.
        "wrong_answer": rate(sum(o.answered and not o.answered_correct for o in outcomes),
                             len(outcomes)),
        "oos_abstain": rate(sum(not o.answered for o in oos), len(oos)),
    }


def report(outcomes: list[Outcome]) -> dict:
    groups = {"all": outcomes}
    for lang in LANGS:
        groups[lang] = [o for o in outcomes if o.case.lang == lang]
    result = {name: metrics(group) for name, group in groups.items() if group}
    ms = np.array([o.seconds * 1000 for o in outcomes]) if outcomes else np.zeros(1)
    result["latency_ms"] = {"p50": float(np.percentile(ms, 50)), "p95": float(np.percentile(ms, 95))}
    cascade = cascade_share(outcomes)
    if cascade:
        result["cascade"] = cascade
    return result


def format_report(rep: dict) -> str:
    cols = ("n", "hit@1", "hit@3", "answered_correct", "wrong_answer", "oos_abstain")
    lines = [f"{'':8}" + "".join(f"{c:>18}" for c in cols)]
    for name, m in rep.items():
        if name in ("latency_ms", "cascade"):
            continue
        cells = []
        for c in cols:
            v = m[c]
            if c == "n":
                cells.append(f"{v:>4} ({m['n_in_scope']} in, {m['n_oos']} oos)".rjust(18))
            else:
                cells.append(("-" if v != v else f"{v:.3f}").rjust(18))
        lines.append(f"{name:8}" + "".join(cells))
    lat = rep["latency_ms"]
    lines.append(f"latency  p50 {lat['p50']:.1f} ms   p95 {lat['p95']:.1f} ms  (sequential)")
    if "cascade" in rep:
        c = rep["cascade"]
        ways = ", ".join(f"{path} {share:.1%}" for path, share in c["shares"].items())
        lines.append(f"cascade  reached e5: {c['reached_e5']:.1%} of {c['n']} searches  ({ways})")
    return "\n".join(lines)


def misses(outcomes: list[Outcome]) -> list[str]:
    """One line per question that was not answered correctly (for looking into, not tuning on)."""
    out = []
    for o in outcomes:
        if o.in_scope and o.answered_correct:
            continue
        if not o.in_scope and not o.answered:
            continue
        out.append(f"[{o.decision:7}] {o.case.q!r} accept={list(o.case.accept)} got={list(o.ranked)}")
    return out


def per_entry(outcomes: list[Outcome], entry_ids: tuple[str, ...] = ()) -> list[dict]:
    """Accuracy per KB entry over the questions it answers (a question accepting two entries
    counts under both), and how often the bot answered *with* this entry wrongly."""
    ids = list(entry_ids) + sorted({i for o in outcomes for i in o.case.accept} - set(entry_ids))
    rows = []
    for faq_id in ids:
        mine = [o for o in outcomes if faq_id in o.case.accept]
        wrongly = sum(o.answered and o.ranked[:1] == (faq_id,) and faq_id not in o.case.accept
                      for o in outcomes)
        n = len(mine)
        rows.append({
            "faq_id": faq_id, "n": n,
            "hit@1": sum(o.hit(1) for o in mine) / n if n else None,
            "hit@3": sum(o.hit(3) for o in mine) / n if n else None,
            "answered_correct": sum(o.answered_correct for o in mine) / n if n else None,
            "clarified": sum(o.decision == "clarify" for o in mine),
            "none": sum(o.decision == "none" for o in mine),
            "wrongly_answered_as": wrongly,
        })
    return rows


def confusion(outcomes: list[Outcome]) -> list[dict]:
    """In-scope questions whose top-1 was wrong, grouped by (expected, got), most frequent first."""
    groups: dict[tuple[str, str], list[Outcome]] = {}
    for o in outcomes:
        if o.in_scope and o.ranked and not o.hit(1):
            groups.setdefault((" | ".join(o.case.accept), o.ranked[0]), []).append(o)
    rows = [{"expected": exp, "got": got, "count": len(os_),
             "answered": sum(o.answered for o in os_),
             "hit@3": sum(o.hit(3) for o in os_),
             "examples": [o.case.q for o in os_]}
            for (exp, got), os_ in groups.items()]
    return sorted(rows, key=lambda r: (-r["count"], -r["answered"], r["expected"], r["got"]))


def outcome_dict(o: Outcome) -> dict:
    return {"q": o.case.q, "accept": list(o.case.accept), "lang": o.case.lang,
            "decision": o.decision, "ranked": list(o.ranked), "scores": list(o.scores),
            "hit@1": o.hit(1) if o.in_scope else None, "ms": round(o.seconds * 1000, 2), "path": o.path}
