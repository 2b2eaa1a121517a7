"""Look for personal data at rest: raw ID and phone numbers (and given strings, e.g. demo names)
in every file under a folder (logs, SQLite databases with their WAL, JSON) and in every table of
a database URL (PostgreSQL: the app's tables and Rasa's events).

    python -m tools.pii_scan var/                       # exit 1 when anything is found
    python -m tools.pii_scan var/ --db postgresql://…/hc --known 林小明 --known 13800138000

Files are read as bytes, not through SQLite: a deleted row, a free page or a WAL frame that
still holds a number is found too. A hit is reported by place and masked, never printed raw.
"""
from __future__ import annotations

import argparse
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

from core.pii import mask_text

# What raw numbers look like anywhere: the masking patterns themselves (core/pii.py), so "raw"
# means "something mask_text would still change".
_DIGITS = re.compile(r"[\d+][\d \t.\-]{9,24}[\dXx]")
# Machine identifiers (uuid4().hex message ids, request ids, SHA-256 digests) are lower-case hex
# of fixed lengths; eleven decimal digits in a row inside one are chance, not a phone number.
_HEX_ID = re.compile(r"(?<![0-9A-Za-z])(?=[0-9a-f]*[a-f])(?:[0-9a-f]{64}|[0-9a-f]{32}|[0-9a-f]{16}|[0-9a-f]{12})"
                     r"(?![0-9A-Za-z])")
# A SHA-256 digest (token hashes, hashed message ids) as SQLite stores it: its record header byte
# may be an ASCII letter or digit right before it, so no boundary is asked for here.
_DIGEST = re.compile(r"(?=[0-9a-f]{0,63}[a-f])[0-9a-f]{64}")
# Floats (intent confidences, timestamps) carry long digit runs after a decimal point.
_FLOAT = re.compile(r"(?<![\d.])\d+\.\d{5,}(?:[eE][-+]?\d+)?(?![\d.])")
SKIP_SUFFIXES = (".tar.gz", ".safetensors", ".faiss", ".npy", ".bin", ".pt", ".onnx")


@dataclass(frozen=True)
class Hit:
    where: str        # file path (and byte offset) or table.column
    kind: str         # "number" or "known"
    sample: str       # masked


def _raw_numbers(text: str) -> Iterator[str]:
    for m in _DIGITS.finditer(_FLOAT.sub(" ", _HEX_ID.sub(" ", _DIGEST.sub(" ", text)))):
        if mask_text(m.group(0)) != m.group(0):
            yield m.group(0)


def scan_text(text: str, where: str, known: tuple[str, ...]) -> list[Hit]:
    hits = [Hit(where, "number", mask_text(n)) for n in _raw_numbers(text)]
    hits += [Hit(where, "known", mask_text(k, (k,))) for k in known if k and k in text]
    return hits


def scan_file(path: Path, known: tuple[str, ...] = ()) -> list[Hit]:
    data = path.read_bytes()
    # UTF-8 text inside any file (SQLite stores TEXT as UTF-8); undecodable bytes split runs.
    return scan_text(data.decode("utf-8", errors="replace"), str(path), known)


def files_under(root: Path) -> Iterator[Path]:
    for path in sorted(root.rglob("*")):
        if path.is_file() and not path.is_symlink() and not path.name.endswith(SKIP_SUFFIXES):
            yield path


def scan_dir(root: Path, known: Iterable[str] = ()) -> list[Hit]:
    known = tuple(known)
    return [hit for path in files_under(root) for hit in scan_file(path, known)]


def scan_database(url: str, known: Iterable[str] = ()) -> list[Hit]:
    """Every text-ish column of every table the URL's connection sees (its search_path)."""
    from sqlalchemy import MetaData, select

    from store import get_engine

    known = tuple(known)
    engine = get_engine(url=url)
    hits: list[Hit] = []
    try:
        meta = MetaData()
        meta.reflect(engine)
        with engine.connect() as conn:
            for table in meta.sorted_tables:
                for row in conn.execute(select(table)):
                    for column, value in zip(table.columns, row):
                        if value is not None and not isinstance(value, (int, float, bool)):
                            hits += scan_text(str(value), f"{table.name}.{column.name}", known)
    finally:
        engine.dispose()
    return hits


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("paths", nargs="*", type=Path, help="folders or files to read as bytes")
    ap.add_argument("--db", action="append", default=[], help="a database URL to scan table by table")
    ap.add_argument("--known", action="append", default=[], help="a string that must not appear")
    args = ap.parse_args(argv)
    hits: list[Hit] = []
    for path in args.paths:
        hits += scan_dir(path, args.known) if path.is_dir() else scan_file(path, tuple(args.known))
    for url in args.db:
        hits += scan_database(url, args.known)
    for hit in hits:
        print(f"{hit.kind}\t{hit.where}\t{hit.sample}")
    print(f"pii_scan: {len(hits)} hit(s)")
    return 1 if hits else 0


if __name__ == "__main__":
    sys.exit(main())
