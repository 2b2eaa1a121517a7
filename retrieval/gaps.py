"""What the KB is missing: stored unanswered questions grouped, most frequent first.

Rows with the same normalised text are one question; different texts join the group of a more
frequent one when their character bigrams mostly agree (Dice ≥ threshold): 码咋是橙的 and
码咋是橙色的 land together, 健康码能截图吗 and 外国人能领码吗 do not. Character n-grams need no
model and work for Chinese without word segmentation; the example texts shown per group let the
editor spot a wrong merge.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Iterable, Protocol

DEFAULT_SIMILARITY = 0.6


class AskedRow(Protocol):
    """What grouping needs from a stored row (store.models.UnansweredQuestion has it)."""
    created_at: datetime
    conversation: str
    text_masked: str
    text_normalised: str
    decision: str
    candidates: list
    lang: str


@dataclass
class Group:
    key: str                                   # normalised text of its most frequent variant
    count: int = 0
    conversations: set[str] = field(default_factory=set)
    decisions: Counter = field(default_factory=Counter)
    langs: Counter = field(default_factory=Counter)
    candidates: Counter = field(default_factory=Counter)   # faq_id → times offered
    variants: Counter = field(default_factory=Counter)     # normalised text → count
    examples: dict[str, str] = field(default_factory=dict)  # normalised text → a masked text
    last_seen: datetime | None = None

    def to_dict(self, examples: int = 5) -> dict[str, Any]:
        return {
            "count": self.count,
            "conversations": len(self.conversations),
            "decisions": dict(self.decisions.most_common()),
            "langs": dict(self.langs.most_common()),
            "examples": [{"text": self.examples[k], "count": n}
                         for k, n in self.variants.most_common(examples)],
            "variants": len(self.variants),
            "candidates": dict(self.candidates.most_common(5)),
            "last_seen": self.last_seen.isoformat() if self.last_seen else None,
        }


def bigrams(text: str) -> Counter:
    if len(text) < 2:
        return Counter([text]) if text else Counter()
    return Counter(text[i:i + 2] for i in range(len(text) - 1))


def similarity(a: Counter, b: Counter) -> float:
    """Dice coefficient of two n-gram multisets, in [0, 1]."""
    total = sum(a.values()) + sum(b.values())
    return 2 * sum((a & b).values()) / total if total else 0.0


def group_questions(rows: Iterable[AskedRow], threshold: float = DEFAULT_SIMILARITY) -> list[Group]:
    """Exact groups by normalised text, then near-duplicates merged into more frequent ones."""
    exact: dict[str, list[AskedRow]] = {}
    for row in rows:
        key = row.text_normalised or row.text_masked
        exact.setdefault(key, []).append(row)

    # Most frequent first, so each group is named after (and compared through) its commonest form.
    keys = sorted(exact, key=lambda k: (-len(exact[k]), -_latest(exact[k]).timestamp(), k))
    groups: list[Group] = []
    grams: list[Counter] = []
    for key in keys:
        mine = bigrams(key)
        best, best_sim = None, threshold
        for i, theirs in enumerate(grams):
            sim = similarity(mine, theirs)
            if sim >= best_sim:
                best, best_sim = i, sim
        if best is None:
            groups.append(Group(key=key))
            grams.append(mine)
            best = len(groups) - 1
        _add(groups[best], key, exact[key])
    return sorted(groups, key=lambda g: (-g.count, -len(g.conversations),
                                         -(g.last_seen.timestamp() if g.last_seen else 0)))


def _latest(rows: list[AskedRow]) -> datetime:
    return max(_aware(r.created_at) for r in rows)


def _aware(value: datetime) -> datetime:
    # SQLite hands back naive datetimes; the store writes UTC.
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)


def _add(group: Group, key: str, rows: list[AskedRow]) -> None:
    newest = max(rows, key=lambda r: _aware(r.created_at))
    group.count += len(rows)
    group.variants[key] += len(rows)
    group.examples.setdefault(key, newest.text_masked)
    for row in rows:
        group.conversations.add(row.conversation)
        group.decisions[row.decision] += 1
        group.langs[row.lang] += 1
        for c in row.candidates or ():
            faq_id = c.get("faq_id") if isinstance(c, dict) else c
            if faq_id:
                group.candidates[faq_id] += 1
    seen = _aware(newest.created_at)
    group.last_seen = seen if group.last_seen is None else max(group.last_seen, seen)


def format_groups(groups: list[Group], limit: int | None = None, examples: int = 3) -> str:
    lines = []
    shown = groups[:limit] if limit else groups
    width = len(str(len(shown)))
    for n, g in enumerate(shown, 1):
        d = g.to_dict(examples)
        decisions = ", ".join(f"{k} {v}" for k, v in d["decisions"].items())
        lines.append(f"{n:>{width}}. ×{g.count}  ({len(g.conversations)} conversation"
                     f"{'s' if len(g.conversations) != 1 else ''}; {decisions}; "
                     f"last {g.last_seen:%Y-%m-%d})")
        for ex in d["examples"]:
            lines.append(f"{'':{width}}    “{ex['text']}” ×{ex['count']}")
        if d["variants"] > len(d["examples"]):
            lines.append(f"{'':{width}}    … {d['variants'] - len(d['examples'])} more variants")
        # For "clarify"/"none" the entries offered as buttons; for "not_helpful" the answer given.
        shown_ = ", ".join(f"{k} ×{v}" for k, v in d["candidates"].items()) or "nothing"
        lines.append(f"{'':{width}}    entries shown: {shown_}")
    return "\n".join(lines)
