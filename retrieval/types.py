"""Data shapes of the knowledge base and of a search, declared once and reused everywhere."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

Decision = Literal["answer", "clarify", "none"]


@dataclass(frozen=True)
class FaqEntry:
    id: str                      # contract id, e.g. "personal.screenshot"
    section: str                 # "personal" | "family" | "domestic" | "overseas"
    section_title: str           # seed section heading, e.g. "在闽人员申领健康码"
    question: str                # the seed question, verbatim
    answer: str                  # the seed answer, verbatim (lines joined with "\n")
    title: str                   # short readable Chinese title for buttons
    question_en: str
    answer_en: str
    alternates: tuple[str, ...] = ()      # our own Chinese phrasings
    alternates_en: tuple[str, ...] = ()   # our own English phrasings
    diagnosis: tuple[str, ...] = ()       # diagnosis topics that personalise this entry
    line: int = 0                         # line of the entry heading in the KB file

    def phrasings(self) -> tuple[str, ...]:
        """Every question text that should retrieve this entry."""
        return (self.question, self.question_en, *self.alternates, *self.alternates_en)


@dataclass(frozen=True)
class KnowledgeBase:
    entries: tuple[FaqEntry, ...]
    version: str                 # short content hash of the KB file

    def get(self, faq_id: str) -> FaqEntry:
        for entry in self.entries:
            if entry.id == faq_id:
                return entry
        raise KeyError(faq_id)

    @property
    def ids(self) -> tuple[str, ...]:
        return tuple(e.id for e in self.entries)


@dataclass(frozen=True)
class Hit:
    faq_id: str
    question: str
    score: float                 # fused, calibrated to [0, 1]: higher is more confident


@dataclass(frozen=True)
class SearchResult:
    query: str
    decision: Decision           # answer outright, ask back with the top hits, or nothing close
    results: tuple[Hit, ...] = field(default_factory=tuple)
    kb_version: str = ""

    @property
    def abstain(self) -> bool:
        return self.decision != "answer"

    @property
    def top(self) -> Hit | None:
        return self.results[0] if self.results else None
