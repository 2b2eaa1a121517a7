"""tools.pii_scan finds raw numbers and known strings at rest, and not machine identifiers."""
from __future__ import annotations

import sqlite3
import uuid

from tools import pii_scan


def test_finds_raw_numbers_in_logs_and_sqlite_files(tmp_path):
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "api.log").write_text('{"msg": "call +86 138 1234 5678"}\n{"msg": "ok 138****5678"}\n')
    db = sqlite3.connect(tmp_path / "t.db")
    db.execute("CREATE TABLE t (x TEXT)")
    db.execute("INSERT INTO t VALUES ('ID350102199001011234')")
    db.commit()
    db.close()
    hits = pii_scan.scan_dir(tmp_path)
    where = sorted({h.where.rsplit("/", 1)[-1] for h in hits})
    assert where == ["api.log", "t.db"]
    assert all("*" in h.sample for h in hits)               # never printed raw


def test_masked_values_hotline_and_hex_ids_are_not_hits(tmp_path):
    ids = " ".join(uuid.uuid4().hex for _ in range(3000))
    (tmp_path / "a.log").write_text(f"3501**********1234 138****5678 0591-62623959 1764573169.8812342 {ids}")
    assert pii_scan.scan_dir(tmp_path) == []


def test_known_strings(tmp_path):
    (tmp_path / "a.log").write_text("用户林小明来电")
    [hit] = pii_scan.scan_dir(tmp_path, known=["林小明"])
    assert hit.kind == "known" and "林小明" not in hit.sample


def test_cli_exit_status(tmp_path, capsys):
    (tmp_path / "a.log").write_text("fine")
    assert pii_scan.main([str(tmp_path)]) == 0
    (tmp_path / "b.log").write_text("13812345678")
    assert pii_scan.main([str(tmp_path)]) == 1
    assert "13812345678" not in capsys.readouterr().out


def test_floats_are_not_numbers_but_dotted_phones_are(tmp_path):
    (tmp_path / "a.log").write_text('"confidence": 0.005812345678903962, "timestamp": 1764573169.8812342')
    assert pii_scan.scan_dir(tmp_path) == []
    (tmp_path / "b.log").write_text("call 138.1234.5678")
    assert len(pii_scan.scan_dir(tmp_path)) == 1


def test_a_digest_right_after_a_record_header_byte_is_not_a_number(tmp_path):
    import hashlib

    # A SHA-256 hex digest with a 15-digit decimal run inside, glued to an alphanumeric byte as a
    # SQLite record header can be: a hash, not an old ID number.
    digest = next(d for d in (hashlib.sha256(str(i).encode()).hexdigest() for i in range(200000))
                  if any(len(run) >= 15 for run in __import__("re").findall(r"\d+", d)))
    (tmp_path / "hc.db-wal").write_bytes(b"\x00\x01Q" + digest.encode() + b"7\x00")
    assert pii_scan.scan_dir(tmp_path) == []
    (tmp_path / "leak.log").write_text("Q350102199001011234 and 13812345678")
    assert len(pii_scan.scan_dir(tmp_path)) == 2
