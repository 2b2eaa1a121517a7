"""Read and validate kb/faq_zh.md, the hand-edited FAQ knowledge base (format: see its header).

The file is edited by people, so every mistake is reported as `source:line: message` and
nothing is silently dropped: a line the parser does not understand is an error, not prose.
"""
from __future__ import annotations

import argparse
import hashlib
import re
import sys
from pathlib import Path

from retrieval.types import FaqEntry, KnowledgeBase

# Topics a FAQ entry may hand over to the account diagnosis (the prefix of its codes).
DIAGNOSIS_TOPICS = frozenset({"orange", "generate", "face", "name", "family", "overseas"})

# The ids outside tests rely on (CONTRACT.md); renaming one is a contract change.
CONTRACT_IDS = (
    "personal.howto",
    "personal.screenshot",
    "personal.face_fail",
    "personal.name_mismatch",
    "personal.cannot_generate",
    "personal.other_province",
    "personal.orange_after_quarantine",
    "family.howto",
    "family.not_allowed",
    "family.elderly",
    "family.quota",
    "family.switch",
    "domestic.howto",
    "domestic.how_apply",
    "domestic.origin_applied_still_fail",
    "domestic.origin_not_found",
    "domestic.green_quarantine",
    "domestic.mutual_orange",
    "overseas.howto",
    "overseas.cannot_apply",
    "overseas.foreign_passport",
    "overseas.foreigner_bamin",
)

# Clarification buttons show the title; longer ones wrap badly in the mini-programs.
TITLE_MAX_CHARS = 14

_SCALAR_FIELDS = {"问": "question", "标题": "title", "Q": "question_en", "诊断": "diagnosis"}
_BLOCK_FIELDS = {"答": "answer", "A": "answer_en"}
_LIST_FIELDS = {"同义": "alternates", "Also": "alternates_en"}
_REQUIRED = ("问", "答", "标题", "Q", "A")
_SECTION_FIELDS = {"English"}

_TITLE_RE = re.compile(r"^#\s+\S")
_SECTION_RE = re.compile(r"^##\s+(?P<key>[^\s:：]+)\s*[:：]\s*(?P<title>.*?)\s*$")
_ENTRY_RE = re.compile(r"^###\s+(?P<id>.*?)\s*$")
_ID_RE = re.compile(r"^(?P<section>[a-z][a-z0-9_]*)\.[a-z][a-z0-9_]*$")
_KEY_RE = re.compile(r"^[a-z][a-z0-9_]*$")
# A field name is a short word before a colon; longer text before a colon is a stray line.
_FIELD_RE = re.compile(r"^(?P<name>[A-Za-z\u4e00-\u9fff]{1,10})\s*[:：]\s*(?P<value>.*?)\s*$")
_TOPIC_SPLIT_RE = re.compile(r"[\s,，、]+")


class KBError(ValueError):
    """A malformed knowledge base; the message starts with `source:line: `."""

    def __init__(self, source: str, line: int, message: str):
        super().__init__(f"{source}:{line}: {message}")
        self.source = source
        self.line = line


def load_kb(path: str | Path, *, require_contract_ids: bool = True) -> KnowledgeBase:
    path = Path(path)
    data = path.read_bytes()
    source = str(path)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise KBError(source, line, "not valid UTF-8") from exc
    return _parse(text, source, _version(data), require_contract_ids)


def parse_kb(text: str, source: str = "faq_zh.md", *,
             require_contract_ids: bool = False) -> KnowledgeBase:
    return _parse(text, source, _version(text.encode("utf-8")), require_contract_ids)


def _version(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:12]


def _parse(text: str, source: str, version: str, require_contract_ids: bool) -> KnowledgeBase:
    def fail(line: int, message: str) -> KBError:
        return KBError(source, line, message)

    sections: dict[str, dict] = {}      # key -> {"title", "line", "english"}
    entries: list[FaqEntry] = []
    seen_ids: dict[str, int] = {}
    section: dict | None = None
    entry: dict | None = None
    open_field: str | None = None       # the 答/A/同义/Also field that following lines extend
    comment_start = 0
    saw_title = False

    lines = text.split("\n")
    if lines and lines[0].startswith("\ufeff"):
        lines[0] = lines[0][1:]
    for lineno, raw in enumerate(lines, start=1):
        line = raw.rstrip("\r").rstrip()
        stripped = line.strip()

        if comment_start:
            if "-->" in stripped:
                comment_start = 0
                if stripped.split("-->", 1)[1].strip():
                    raise fail(lineno, "text after the end of an HTML comment")
            continue
        if stripped.startswith("<!--"):
            rest = stripped[4:]
            if "-->" in rest:
                if rest.split("-->", 1)[1].strip():
                    raise fail(lineno, "text after the end of an HTML comment")
            else:
                comment_start = lineno
            continue
        if not stripped:
            # Blank lines are layout only: a list or quote may be spaced out freely.
            continue

        if line.startswith("###"):
            if line.startswith("####"):
                raise fail(lineno, "only #, ## and ### headings are allowed")
            match = _ENTRY_RE.match(line)
            if section is None:
                raise fail(lineno, "entry before any '## key: title' section")
            if entry is not None:
                entries.append(_finish_entry(entry, fail))
            faq_id = match.group("id") if match else line[3:].strip()
            id_match = _ID_RE.match(faq_id)
            if id_match is None:
                raise fail(lineno, f"entry id {faq_id!r} is not of the form section.name "
                                   "(lowercase letters, digits, _)")
            if id_match.group("section") != section["key"]:
                raise fail(lineno, f"entry id {faq_id!r} does not start with its section "
                                   f"{section['key']!r}")
            if faq_id in seen_ids:
                raise fail(lineno, f"duplicate id {faq_id!r} (first at line {seen_ids[faq_id]})")
            seen_ids[faq_id] = lineno
            entry = {"id": faq_id, "line": lineno, "section": section, "fields": {}}
            open_field = None
            continue

        if line.startswith("##"):
            match = _SECTION_RE.match(line)
            if match is None or not match.group("title"):
                raise fail(lineno, "a section heading reads '## key: 中文标题'")
            key = match.group("key")
            if not _KEY_RE.match(key):
                raise fail(lineno, f"section key {key!r} must be lowercase letters, digits, _")
            if key in sections:
                raise fail(lineno, f"duplicate section {key!r} (first at line "
                                   f"{sections[key]['line']})")
            if entry is not None:
                entries.append(_finish_entry(entry, fail))
                entry = None
            section = {"key": key, "title": match.group("title"), "line": lineno, "english": None}
            sections[key] = section
            open_field = None
            continue

        if line.startswith("#"):
            if not _TITLE_RE.match(line) or saw_title or section is not None:
                raise fail(lineno, "the '# title' heading may appear once, before any section")
            saw_title = True
            continue

        if stripped.startswith(">"):
            if entry is None or open_field not in _BLOCK_FIELDS:
                raise fail(lineno, "a '>' line belongs right under '答:' or 'A:'")
            entry["fields"][open_field]["lines"].append(stripped[1:].strip())
            continue

        if stripped.startswith("- ") or stripped == "-":
            if entry is None or open_field not in _LIST_FIELDS:
                raise fail(lineno, "an alternate '- ' line belongs in a '同义:' or 'Also:' list")
            item = stripped[1:].strip()
            if not item:
                raise fail(lineno, "empty alternate")
            entry["fields"][open_field]["items"].append((item, lineno))
            continue

        match = _FIELD_RE.match(stripped)
        if match is None:
            raise fail(lineno, "unexpected line (answer lines start with '> ', alternates "
                               "with '- ', fields read 'name: value')")
        name, value = match.group("name"), match.group("value")
        if section is None:
            raise fail(lineno, f"field {name!r} before any '## key: title' section")
        if entry is None:
            if name not in _SECTION_FIELDS:
                raise fail(lineno, f"unknown section field {name!r} (allowed: English)")
            if section["english"] is not None:
                raise fail(lineno, "duplicate field 'English' in this section")
            if not value:
                raise fail(lineno, "empty field 'English'")
            section["english"] = value
            continue
        open_field = _add_field(entry, name, value, lineno, fail)

    if comment_start:
        raise fail(comment_start, "HTML comment is never closed with '-->'")
    if entry is not None:
        entries.append(_finish_entry(entry, fail))
    if not entries:
        raise fail(1, "no entries")

    _check_cross_entry_alternates(entries, fail)
    if require_contract_ids:
        _check_contract_ids(entries, sections, fail)
    return KnowledgeBase(entries=tuple(entries), version=version)


def _add_field(entry: dict, name: str, value: str, lineno: int, fail) -> str | None:
    """Record one `name: value` line of an entry; return the field later lines may extend."""
    fields = entry["fields"]
    if name not in _SCALAR_FIELDS and name not in _BLOCK_FIELDS and name not in _LIST_FIELDS:
        known = "、".join([*_SCALAR_FIELDS, *_BLOCK_FIELDS, *_LIST_FIELDS])
        raise fail(lineno, f"unknown field {name!r} in entry {entry['id']} (known: {known})")
    if name in fields:
        raise fail(lineno, f"duplicate field {name!r} in entry {entry['id']} "
                           f"(first at line {fields[name]['line']})")
    if name in _SCALAR_FIELDS:
        if not value and name != "诊断":
            raise fail(lineno, f"empty field {name!r}")
        if name == "标题" and len(value) > TITLE_MAX_CHARS:
            raise fail(lineno, f"标题 has {len(value)} characters, at most {TITLE_MAX_CHARS}")
        if name == "诊断":
            topics = [t for t in _TOPIC_SPLIT_RE.split(value) if t]
            for topic in topics:
                if topic not in DIAGNOSIS_TOPICS:
                    raise fail(lineno, f"unknown diagnosis topic {topic!r} (known: "
                                       f"{', '.join(sorted(DIAGNOSIS_TOPICS))})")
            value = tuple(dict.fromkeys(topics))
        fields[name] = {"line": lineno, "value": value}
        return None
    if name in _BLOCK_FIELDS:
        # "答: text" is accepted as the first line, so a one-line answer needs no quote.
        fields[name] = {"line": lineno, "lines": [value] if value else []}
        return name
    if value:
        raise fail(lineno, f"items of {name!r} go on their own lines, each starting with '- '")
    fields[name] = {"line": lineno, "items": []}
    return name


def _finish_entry(entry: dict, fail) -> FaqEntry:
    fields = entry["fields"]
    for name in _REQUIRED:
        if name not in fields:
            raise fail(entry["line"], f"entry {entry['id']} has no '{name}:' field")
    texts = {}
    for name in _BLOCK_FIELDS:
        lines = list(fields[name]["lines"])
        while lines and not lines[0]:
            lines.pop(0)
        while lines and not lines[-1]:
            lines.pop()
        if not lines:
            raise fail(fields[name]["line"], f"empty answer '{name}:' in entry {entry['id']}")
        texts[name] = "\n".join(lines)

    # An alternate repeating the question or another alternate only skews retrieval weights.
    seen: dict[str, int] = {}
    for name in ("问", "Q"):
        seen.setdefault(_norm(fields[name]["value"]), fields[name]["line"])
    lists = {}
    for name in _LIST_FIELDS:
        items = fields.get(name, {"items": []})["items"]
        for item, lineno in items:
            key = _norm(item)
            if key in seen:
                raise fail(lineno, f"duplicate alternate {item!r} in entry {entry['id']} "
                                   f"(already at line {seen[key]})")
            seen[key] = lineno
        lists[name] = tuple(item for item, _ in items)

    diagnosis = fields.get("诊断", {"value": ()})["value"]
    return FaqEntry(
        id=entry["id"],
        section=entry["section"]["key"],
        section_title=entry["section"]["title"],
        question=fields["问"]["value"],
        answer=texts["答"],
        title=fields["标题"]["value"],
        question_en=fields["Q"]["value"],
        answer_en=texts["A"],
        alternates=lists["同义"],
        alternates_en=lists["Also"],
        diagnosis=tuple(diagnosis),
        line=entry["line"],
    )


def _norm(text: str) -> str:
    return " ".join(text.casefold().split())


def _check_cross_entry_alternates(entries: list[FaqEntry], fail) -> None:
    # The same phrasing under two entries makes retrieval a coin toss between them.
    owner: dict[str, str] = {}
    for entry in entries:
        for phrasing in entry.phrasings():
            key = _norm(phrasing)
            other = owner.setdefault(key, entry.id)
            if other != entry.id:
                raise fail(entry.line, f"phrasing {phrasing!r} of {entry.id} is also a "
                                       f"phrasing of {other}")


def _check_contract_ids(entries: list[FaqEntry], sections: dict[str, dict], fail) -> None:
    present = {e.id: e.line for e in entries}
    for faq_id, line in present.items():
        if faq_id not in CONTRACT_IDS:
            raise fail(line, f"id {faq_id!r} is not one of the contract ids (CONTRACT.md)")
    for faq_id in CONTRACT_IDS:
        if faq_id not in present:
            section = sections.get(faq_id.split(".", 1)[0])
            raise fail(section["line"] if section else 1, f"contract id {faq_id!r} is missing")


def _summary(kb: KnowledgeBase) -> str:
    zh = sum(len(e.alternates) for e in kb.entries)
    en = sum(len(e.alternates_en) for e in kb.entries)
    sections = len({e.section for e in kb.entries})
    return (f"{len(kb.entries)} entries in {sections} sections, "
            f"{sum(len(e.phrasings()) for e in kb.entries)} phrasings "
            f"({zh} zh + {en} en alternates), version {kb.version}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m retrieval.kb",
                                     description="Validate a FAQ knowledge base file.")
    parser.add_argument("path", type=Path)
    parser.add_argument("--any-ids", action="store_true",
                        help="do not require exactly the contract ids")
    args = parser.parse_args(argv)
    try:
        kb = load_kb(args.path, require_contract_ids=not args.any_ids)
    except KBError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"error: {args.path}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    print(f"{args.path}: {_summary(kb)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
