"""The evaluation as something to look at: one self-contained HTML page (PNG charts inline) + JSON.

    paths = write_report(outcomes, retriever, "reports", dev_path=..., mode="bm25+dense")

Charts use matplotlib's Agg canvas directly (no pyplot, no display, no global state) and ASCII
labels only (entry ids, not Chinese titles) so they read the same wherever no CJK font exists.
"""
from __future__ import annotations

import base64
import html
import io
import json
import math
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from retrieval import evaluate
from retrieval.evaluate import Outcome

COLOURS = {"right": "#2a9d5c", "wrong": "#d1495b", "oos": "#5470c6"}


def thresholds(retriever) -> dict:
    p = retriever.params
    return {name: getattr(p, name, None) for name in ("t_answer", "t_clarify", "margin")}


def build(outcomes: list[Outcome], retriever, *, dev_path: str = "", mode: str = "") -> dict:
    """Everything the page shows, as plain data (also written as eval.json)."""
    kb = retriever.kb
    return {
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "dev_set": str(dev_path),
        "mode": mode,
        "kb_version": kb.version,
        "thresholds": thresholds(retriever),
        "metrics": evaluate.report(outcomes),
        "per_entry": evaluate.per_entry(outcomes, kb.ids),
        "confusion": evaluate.confusion(outcomes),
        "questions": [evaluate.outcome_dict(o) for o in outcomes],
    }


def write_report(outcomes: list[Outcome], retriever, out_dir: str | Path, *, dev_path: str = "",
                 mode: str = "") -> tuple[Path, Path]:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    data = build(outcomes, retriever, dev_path=dev_path, mode=mode)
    charts = {
        "scores": png(score_chart(outcomes, data["thresholds"])),
        "entries": png(entry_chart(data["per_entry"])),
    }
    html_path, json_path = out / "eval.html", out / "eval.json"
    json_path.write_text(json.dumps(_jsonable(data), ensure_ascii=False, indent=2), "utf-8")
    html_path.write_text(render(data, charts), "utf-8")
    return html_path, json_path


def _jsonable(value):
    """NaN (a rate over zero questions) is not JSON: null."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


# --- charts -------------------------------------------------------------------------------------
def _figure(w: float, h: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(w, h), dpi=110, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


DECISION_MARKERS = {
    "answer": {"marker": "o", "filled": True, "label": "answered"},
    "clarify": {"marker": "o", "filled": False, "label": "asked back"},
    "none": {"marker": "x", "filled": True, "label": "no answer"},
}


def score_groups(outcomes: list[Outcome]) -> dict[str, list[Outcome]]:
    return {
        "in scope, top-1 right": [o for o in outcomes if o.in_scope and o.hit(1)],
        "in scope, top-1 wrong": [o for o in outcomes if o.in_scope and not o.hit(1)],
        "out of scope": [o for o in outcomes if not o.in_scope],
    }


def _marker(style: dict, colour: str) -> dict:
    kw = {"s": 26, "marker": style["marker"], "linewidths": 1.2}
    if style["marker"] == "x":      # a line marker: it has a colour, not a face and an edge
        return {**kw, "color": colour}
    return {**kw, "facecolors": colour if style["filled"] else "none", "edgecolors": colour}


def score_chart(outcomes: list[Outcome], th: dict):
    """Top-1 scores of in-scope (right / wrong top-1) and out-of-scope questions, thresholds marked.

    Upper panel: stacked histogram. Lower panel: every question as a dot, because with a few
    dozen questions the histogram hides which side of a threshold each one fell."""
    from matplotlib.ticker import MaxNLocator

    groups = score_groups(outcomes)
    colours = [COLOURS["right"], COLOURS["wrong"], COLOURS["oos"]]
    fig = _figure(8.5, 5.6)
    top, bottom = fig.subplots(2, 1, sharex=True, height_ratios=(3, 2))
    bins = np.linspace(0, 1, 26)
    top.hist([[o.top_score for o in g] for g in groups.values()], bins=bins, stacked=True, color=colours,
             label=[f"{k} (n={len(v)})" for k, v in groups.items()], edgecolor="white", linewidth=0.5)
    top.set_ylabel("questions")
    top.yaxis.set_major_locator(MaxNLocator(integer=True))
    top.set_title("Top-1 fused score: in-scope vs out-of-scope questions")
    # Dots show what the bot did with each question: the margin rule sends some high scores to
    # "asked back", which the histogram alone cannot show.
    rng = np.random.default_rng(0)   # fixed jitter: the same run draws the same picture
    for row, ((name, members), colour) in enumerate(zip(groups.items(), colours)):
        y = row + rng.uniform(-0.2, 0.2, size=len(members))
        x = np.array([o.top_score for o in members])
        for decision, style in DECISION_MARKERS.items():
            pick = np.array([o.decision == decision for o in members], dtype=bool)
            if pick.any():
                bottom.scatter(x[pick], y[pick], alpha=0.9, **_marker(style, colour))
    for decision, style in DECISION_MARKERS.items():
        bottom.scatter([], [], label=style["label"], **_marker(style, "#444444"))
    bottom.legend(fontsize=8, loc="upper left", frameon=False, bbox_to_anchor=(0.0, 1.0))
    bottom.set_yticks(range(len(groups)), [k.replace(", ", "\n") for k in groups], fontsize=8)
    bottom.set_ylim(len(groups) - 0.5, -0.5)
    bottom.set_xlabel("top-1 score (0 = no candidate at all)")
    bottom.set_xlim(-0.02, 1.02)
    t_clarify, t_answer = th.get("t_clarify"), th.get("t_answer")
    for ax in (top, bottom):
        if t_clarify is not None:
            ax.axvline(t_clarify, color="#e09f3e", linestyle="--", linewidth=1.5)
        if t_answer is not None:
            ax.axvline(t_answer, color="#333333", linestyle="-", linewidth=1.5)
        if t_clarify is not None and t_answer is not None:
            ax.axvspan(t_clarify, t_answer, color="#e09f3e", alpha=0.08)
    handles, labels = top.get_legend_handles_labels()
    if t_clarify is not None:
        handles.append(top.lines[0])
        labels.append(f"t_clarify = {t_clarify:.3f} (below: no answer)")
    if t_answer is not None:
        handles.append(top.lines[-1])
        labels.append(f"t_answer = {t_answer:.3f} (above, with margin: answer)")
    top.legend(handles, labels, fontsize=8, loc="upper left", frameon=False)
    return fig


def entry_chart(per_entry: list[dict]):
    rows = [r for r in per_entry if r["n"]]
    fig = _figure(8.5, 0.28 * len(rows) + 1.3)
    ax = fig.subplots()
    y = np.arange(len(rows))
    hit1 = [r["hit@1"] for r in rows]
    answered = [r["answered_correct"] for r in rows]
    ax.barh(y - 0.2, hit1, height=0.4, color="#5470c6", label="hit@1")
    ax.barh(y + 0.2, answered, height=0.4, color=COLOURS["right"], label="answered correctly")
    ax.set_yticks(y, [f"{r['faq_id']} (n={r['n']})" for r in rows], fontsize=8)
    ax.set_ylim(len(rows) - 0.5, -0.7)
    ax.set_xlim(0, 1.0)
    ax.set_xlabel("share of the entry's questions")
    ax.set_title("Per-entry accuracy", loc="left")
    ax.grid(axis="x", alpha=0.3)
    ax.legend(fontsize=8, loc="lower right", bbox_to_anchor=(1.0, 1.0), ncols=2, frameon=False)
    return fig


# --- page ---------------------------------------------------------------------------------------
_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI","PingFang SC","Noto Sans CJK SC",sans-serif;
  margin:2rem auto;max-width:1100px;padding:0 1rem;color:#222}
h1{font-size:1.5rem} h2{font-size:1.15rem;margin-top:2rem;border-bottom:1px solid #ddd}
table{border-collapse:collapse;font-size:.85rem;margin:.5rem 0}
th,td{border:1px solid #ddd;padding:.25rem .5rem;text-align:right;vertical-align:top}
th{background:#f4f4f4} td.l,th.l{text-align:left}
.bad{background:#fbe3e6} .warn{background:#fdf3dc} .ok{background:#e3f4ea}
img{max-width:100%;height:auto} .meta{color:#555;font-size:.9rem}
"""


def _fmt(v, digits: int = 3) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return html.escape(str(v))


def _table(header: list[str], rows: list[list], left: int = 1, classes: list[str] | None = None) -> str:
    head = "".join(f"<th class='l'>{html.escape(h)}</th>" if i < left else f"<th>{html.escape(h)}</th>"
                   for i, h in enumerate(header))
    body = []
    for n, row in enumerate(rows):
        cls = f" class='{classes[n]}'" if classes and classes[n] else ""
        cells = "".join(f"<td class='l'>{c}</td>" if i < left else f"<td>{c}</td>" for i, c in enumerate(row))
        body.append(f"<tr{cls}>{cells}</tr>")
    return f"<table><tr>{head}</tr>{''.join(body)}</table>"


def _img(data: bytes, alt: str) -> str:
    return f"<img alt='{html.escape(alt)}' src='data:image/png;base64,{base64.b64encode(data).decode()}'>"


def render(data: dict, charts: dict[str, bytes]) -> str:
    th = data["thresholds"]
    metrics = data["metrics"]
    cols = ("n", "hit@1", "hit@3", "answered_correct", "wrong_answer", "oos_abstain")
    summary = _table(
        ["", "n (in / oos)", "hit@1", "hit@3", "answered-correct", "wrong-answer", "out-of-scope abstain"],
        [[html.escape(name), f"{m['n']} ({m['n_in_scope']} / {m['n_oos']})",
          *(_fmt(m[c]) for c in cols[1:])]
         for name, m in metrics.items() if name not in ("latency_ms", "cascade")])
    lat = metrics["latency_ms"]
    cascade = (f" Searches that needed e5 (the cascade's second stage): {metrics['cascade']['reached_e5']:.1%}."
               if metrics.get("cascade") else "")

    entries = data["per_entry"]
    entry_rows, entry_cls = [], []
    for r in entries:
        entry_rows.append([html.escape(r["faq_id"]), r["n"], _fmt(r["hit@1"]), _fmt(r["hit@3"]),
                           _fmt(r["answered_correct"]), r["clarified"], r["none"], r["wrongly_answered_as"]])
        worst = r["hit@1"] if r["hit@1"] is not None else 1.0
        entry_cls.append("bad" if r["wrongly_answered_as"] or worst < 0.5
                         else "warn" if worst < 1.0 else "")
    entry_table = _table(["entry", "questions", "hit@1", "hit@3", "answered-correct", "clarified",
                          "no answer", "answered wrongly as this"], entry_rows, classes=entry_cls)

    conf = data["confusion"]
    if conf:
        conf_table = _table(
            ["expected", "top-1 given", "count", "answered (wrongly)", "right one in top 3", "questions"],
            [[html.escape(r["expected"]), html.escape(r["got"]), r["count"], r["answered"], r["hit@3"],
              "<br>".join(html.escape(q) for q in r["examples"])] for r in conf],
            left=2, classes=["bad" if r["answered"] else "" for r in conf])
    else:
        conf_table = "<p>No wrong top-1 among the in-scope questions.</p>"

    missed = [q for q in data["questions"]
              if (q["accept"] and not (q["decision"] == "answer" and q["hit@1"]))
              or (not q["accept"] and q["decision"] == "answer")]
    miss_rows = [[html.escape(q["q"]), html.escape(q["lang"]), html.escape(" | ".join(q["accept"]) or "(out of scope)"),
                  html.escape(q["decision"]),
                  html.escape(", ".join(f"{i} {s:.3f}" for i, s in zip(q["ranked"], q["scores"])))]
                 for q in missed]
    miss_cls = ["bad" if q["decision"] == "answer" else "" for q in missed]
    miss_table = (_table(["question", "lang", "accept", "decision", "ranked (score)"], miss_rows,
                         left=5, classes=miss_cls)
                  if missed else "<p>Every question was handled as it should be.</p>")

    return f"""<!doctype html>
<html lang="zh-CN"><head><meta charset="utf-8">
<title>FAQ retrieval evaluation</title><style>{_CSS}</style></head><body>
<h1>FAQ retrieval evaluation</h1>
<p class="meta">{html.escape(data['dev_set'])} · {html.escape(data['mode'])} · KB {html.escape(data['kb_version'])}
 · {html.escape(data['created'])}<br>
thresholds (from the index's calibrated params): answer ≥ {_fmt(th['t_answer'])} with a lead of
 ≥ {_fmt(th['margin'])}; clarify ≥ {_fmt(th['t_clarify'])}; below: no answer.
 Latency p50 {lat['p50']:.1f} ms, p95 {lat['p95']:.1f} ms (sequential).{cascade}</p>
<h2>Summary</h2>{summary}
<p class="meta"><i>answered-correct</i>: answered outright with an accepted entry (share of in-scope
questions). <i>wrong-answer</i>: answered outright and wrong, over all questions.</p>
<h2>Score distributions</h2>{_img(charts['scores'], 'score distributions')}
<h2>Per entry</h2>{_img(charts['entries'], 'per-entry accuracy')}
<p class="meta">A question that accepts two entries counts under both. Red: the bot answered some
question wrongly with this entry, or hit@1 &lt; 0.5; yellow: hit@1 &lt; 1.</p>{entry_table}
<h2>Wrong top-1 (confusions)</h2>{conf_table}
<h2>Questions not handled as they should be</h2>
<p class="meta">In-scope questions not answered outright and right, and out-of-scope questions answered.
Red rows were answered wrongly.</p>{miss_table}
</body></html>
"""
