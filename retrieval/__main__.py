"""Command line: build the index, try a search, measure on a labelled set.

  python -m retrieval build --kb kb/faq_zh.md --model DIR --out DIR
  python -m retrieval search "健康码能截图吗" [--k 3] [--index DIR --model DIR | --bm25-only]
  python -m retrieval eval --dev PATH [--index DIR --model DIR | --bm25-only] [--misses] [--report DIR]
  python -m retrieval report [--since DAYS] [--limit N] [--json]   # what users asked that the KB lacks
  python -m retrieval export-onnx --index DIR --model DIR   # add model.onnx to an older index

search and eval take --engine auto|onnx|torch (auto: onnxruntime when the index has model.onnx).

Without --index, search and eval build a calibrated retriever in memory (slower start).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path


def _defaults():
    """Settings, with the model and index `make setup` built as defaults (var/artifacts.json)."""
    from core.artifacts import load_artifacts
    from core.settings import get_settings

    settings = get_settings()
    return settings, load_artifacts(settings)


def _retriever(args):
    from retrieval import index as idx
    from retrieval.kb import load_kb

    kb = load_kb(args.kb)
    if args.bm25_only:
        return idx.build_retriever(kb, None, bm25_only=True)
    if args.model is None:
        sys.exit("error: --model DIR is required (or --bm25-only); HC_MODEL_DIR also works")
    if args.index is not None:
        return idx.load_retriever(args.index, args.kb, args.model, kb=kb, engine=args.engine)
    return idx.build_retriever(kb, idx._encoder(args.model))


def cmd_build(args) -> int:
    from retrieval import index as idx

    if args.model is None:
        sys.exit("error: --model DIR is required")
    t0 = time.perf_counter()
    out = idx.build_index(args.kb, args.model, args.out)
    meta = idx.read_meta(out)
    print(f"index written to {out} in {time.perf_counter() - t0:.1f} s "
          f"({meta['phrasings']} phrasings, kb {meta['kb_version']}, model {meta['model']})")
    print(json.dumps(meta["params"], ensure_ascii=False, indent=2))
    return 0


def cmd_export_onnx(args) -> int:
    from retrieval import onnx_export

    if args.model is None or args.index is None:
        sys.exit("error: --index DIR and --model DIR are required")
    t0 = time.perf_counter()
    info = onnx_export.add_to_index(args.index, args.model)
    print(f"{Path(args.index) / info['file']} written in {time.perf_counter() - t0:.1f} s "
          f"({info['bytes'] / 1e6:.0f} MB, min probe cosine {info['min_probe_cosine']})")
    return 0


def cmd_search(args) -> int:
    retriever = _retriever(args)
    res = retriever.search(args.text, k=args.k)
    print(json.dumps({"query": res.query, "decision": res.decision, "abstain": res.abstain,
                      "results": [h.__dict__ for h in res.results]}, ensure_ascii=False, indent=2))
    return 0


def cmd_eval(args) -> int:
    from retrieval import evaluate

    retriever = _retriever(args)
    outcomes = evaluate.run(retriever, evaluate.load_cases(args.dev), k=3)
    rep = evaluate.report(outcomes)
    mode = "bm25-only" if retriever.params.bm25_only else "bm25+dense"
    if args.json:
        print(json.dumps(rep, indent=2))
    else:
        print(f"{args.dev} ({mode})")
        print(evaluate.format_report(rep))
    if args.misses:
        print("\n".join(evaluate.misses(outcomes)))
    if args.report:
        from retrieval.report_html import write_report

        html_path, json_path = write_report(outcomes, retriever, args.report, dev_path=str(args.dev),
                                            mode=mode)
        print(f"report: {html_path.resolve()} (data: {json_path.resolve()})", file=sys.stderr if args.json else sys.stdout)
    return 0


def cmd_cascade(args) -> int:
    from retrieval import evaluate

    retriever = _retriever(args)
    sets = {path.stem: evaluate.load_cases(path) for path in args.dev}
    for row in evaluate.cascade_sweep(retriever, sets):
        cells = [f"cheap answer ≥ {row['cheap_t_answer']:.2f}, lead ≥ {row['cheap_margin']:.2f}"
                 + (" (calibrated)" if row["calibrated"] else "")]
        for name in sets:
            r = row[name]
            cells.append(f"{name}: hit@1 {r['hit@1']:.3f}, wrong {r['wrong_answer']:.3f}, "
                         f"reached e5 {r['reached_e5']:.0%}")
        print(" | ".join(cells))
    return 0


def cmd_report(args) -> int:
    """The questions the bot could not answer (stored by assistant.feedback), grouped."""
    from assistant import feedback
    from retrieval import gaps

    rows = feedback.unanswered(args.since)
    groups = gaps.group_questions(rows, threshold=args.similarity)
    bad = feedback.not_helpful_by_entry(args.since)
    if args.json:
        print(json.dumps({"since_days": args.since, "questions": len(rows),
                          "groups": [g.to_dict() for g in groups[:args.limit or None]],
                          "not_helpful": [b.__dict__ for b in bad]}, ensure_ascii=False, indent=2))
        return 0
    period = f"the last {args.since:g} days" if args.since is not None else "all time"
    print(f"Questions the bot could not answer, {period}: {len(rows)} in {len(groups)} groups "
          f"(database {feedback.database_label()})")
    if groups:
        shown = min(len(groups), args.limit) if args.limit else len(groups)
        print(f"most frequent first{f', top {shown}' if shown < len(groups) else ''}:\n")
        print(gaps.format_groups(groups, args.limit))
    if bad:
        print("\nAnswers marked not helpful (entry: not helpful / all presses):")
        for b in bad:
            print(f"  {b.faq_id or '(no entry)'}: {b.not_helpful} / {b.total}")
    return 0


def main(argv: list[str] | None = None) -> int:
    s, art = _defaults()
    parser = argparse.ArgumentParser(prog="python -m retrieval", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True)

    def common(p, index: bool = True):
        p.add_argument("--kb", type=Path, default=s.kb_path)
        p.add_argument("--model", type=Path, default=art.model_dir)
        if index:
            p.add_argument("--index", type=Path, default=art.index_dir)
            p.add_argument("--bm25-only", action="store_true", help="lexical baseline, no encoder")
            p.add_argument("--engine", choices=("auto", "onnx", "torch"), default="auto",
                           help="e5 runtime for --index (auto: onnxruntime if the index has model.onnx)")

    p = sub.add_parser("build", help="encode the KB, calibrate, write the index")
    common(p, index=False)
    p.add_argument("--out", type=Path, required=True)
    p.set_defaults(func=cmd_build)

    p = sub.add_parser("search", help="search one question")
    common(p)
    p.add_argument("text")
    p.add_argument("--k", type=int, default=3)
    p.set_defaults(func=cmd_search)

    p = sub.add_parser("eval", help="hit@k, answer/abstain rates and latency on a labelled set")
    common(p)
    p.add_argument("--dev", type=Path, required=True)
    p.add_argument("--json", action="store_true")
    p.add_argument("--misses", action="store_true", help="list the questions it got wrong")
    p.add_argument("--report", type=Path, metavar="DIR",
                   help="also write DIR/eval.html (charts inline) and DIR/eval.json")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("cascade", help="what-if: lower cheap-stage thresholds, e5 share vs wrong answers")
    common(p)
    p.add_argument("--dev", type=Path, action="append", required=True, help="a labelled set (repeatable)")
    p.set_defaults(func=cmd_cascade)

    p = sub.add_parser("export-onnx", help="add model.onnx (the index's fine-tuned e5) to an index")
    p.add_argument("--index", type=Path, default=art.index_dir)
    p.add_argument("--model", type=Path, default=art.model_dir)
    p.set_defaults(func=cmd_export_onnx)

    p = sub.add_parser("report", help="questions the bot could not answer, grouped, most frequent first")
    p.add_argument("--since", type=float, metavar="DAYS", help="only the last DAYS days (default: all)")
    p.add_argument("--limit", type=int, default=30, metavar="N", help="groups to show (0: all; default 30)")
    p.add_argument("--similarity", type=float, default=0.6,
                   help="character-bigram Dice at which two texts count as one question (default 0.6)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_report)

    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
