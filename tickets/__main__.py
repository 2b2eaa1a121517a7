"""Command line: the hotline figures, as GET /api/v1/admin/stats gives them.

  python -m tickets report [--since 2026-12-01] [--until 2026-12-02] [--json]

Dates are Beijing days (since inclusive, until exclusive); ISO 8601 times work too. Without
--since: the DEFAULT_DAYS days before --until (default: now). The database is HC_DATABASE_URL's
(default: the SQLite file under var/).
"""
from __future__ import annotations

import argparse
import json
import sys


def cmd_report(args) -> int:
    from tickets import stats

    try:
        since, until = stats.period(args.since, args.until)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    rep = stats.report(since, until)
    print(json.dumps(rep, ensure_ascii=False, indent=2) if args.json else stats.format_report(rep))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tickets", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    rep = sub.add_parser("report", help="the hotline figures for a period")
    rep.add_argument("--since", help="first day (YYYY-MM-DD, Beijing) or ISO time")
    rep.add_argument("--until", help="day after the last (YYYY-MM-DD, Beijing) or ISO time")
    rep.add_argument("--json", action="store_true", help="the same figures as JSON")
    rep.set_defaults(func=cmd_report)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
