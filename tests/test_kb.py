"""The knowledge base file is faithful to the seed, and the parser rejects malformed files."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from retrieval.kb import CONTRACT_IDS, DIAGNOSIS_TOPICS, KBError, load_kb, main, parse_kb

REPO = Path(__file__).resolve().parent.parent
KB_PATH = REPO / "kb" / "faq_zh.md"
SHARED = REPO.parent / "shared"
SEED_DIR = SHARED / "seed"
DEV_SET = SHARED / "eval" / "faq_dev.jsonl"
HOTLINE = "0591-62623959"


@pytest.fixture(scope="module")
def kb():
    return load_kb(KB_PATH)


def read_seed(folder: Path) -> list[dict]:
    """(section, question, answer) of every seed item, read from the seed's plain layout:
    a section title line, "01", the how-to heading and its steps, "02", a heading, then Q/A."""
    items = []
    for path in sorted(folder.glob("*.txt")):
        lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
        lines = [line for line in lines if line]
        section = None
        i = 0
        while i < len(lines):
            if i + 1 < len(lines) and lines[i + 1] == "01":
                section = lines[i]
                items.append({"section": section, "question": lines[i + 2],
                              "answer": lines[i + 3]})
                assert lines[i + 4] == "02", f"unexpected seed layout near {lines[i + 3]!r}"
                i += 6                              # skip "02" and the FAQ heading
                continue
            if lines[i] == "Q":
                question = lines[i + 1]
                assert lines[i + 2] == "A"
                j = i + 3
                answer = []
                while j < len(lines) and lines[j] != "Q" and not (
                        j + 1 < len(lines) and lines[j + 1] == "01"):
                    answer.append(lines[j])
                    j += 1
                items.append({"section": section, "question": question,
                              "answer": "\n".join(answer)})
                i = j
                continue
            raise AssertionError(f"unexpected seed line {lines[i]!r}")
    return items


@pytest.fixture(scope="module")
def seed():
    if not SEED_DIR.is_dir():
        pytest.skip(f"seed folder {SEED_DIR} is absent")
    return read_seed(SEED_DIR)


# --- the real file -------------------------------------------------------------------------

def test_real_kb_holds_exactly_the_contract_ids(kb):
    assert sorted(kb.ids) == sorted(CONTRACT_IDS)
    assert len(CONTRACT_IDS) == 22 == len(set(CONTRACT_IDS))
    assert len(kb.version) == 12 and re.fullmatch(r"[0-9a-f]{12}", kb.version)


def test_version_is_the_hash_of_the_file_bytes(kb):
    import hashlib
    assert kb.version == hashlib.sha256(KB_PATH.read_bytes()).hexdigest()[:12]
    assert parse_kb(KB_PATH.read_text(encoding="utf-8")).version == kb.version


def test_every_seed_question_and_answer_is_verbatim(kb, seed):
    assert len(seed) == len(kb.entries) == 22
    by_question = {e.question: e for e in kb.entries}
    for item in seed:
        entry = by_question.get(item["question"])
        assert entry is not None, f"seed question missing: {item['question']}"
        assert entry.answer == item["answer"], entry.id
        assert entry.section_title == item["section"], entry.id


def test_ids_match_the_contract_table():
    contract = SHARED / "CONTRACT.md"
    if not contract.is_file():
        pytest.skip("CONTRACT.md is absent")
    table = contract.read_text("utf-8").split("## The knowledge base", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| `([a-z_]+\.[a-z_]+)` \| (.+?) \|$", table, re.M)
    assert len(rows) == 22
    entries = {e.id: e for e in load_kb(KB_PATH).entries}
    for faq_id, question in rows:
        assert entries[faq_id].question == question.strip(), faq_id


def test_hotline_is_kept_where_the_seed_has_it(kb, seed):
    seed_with_hotline = {i["question"] for i in seed if HOTLINE in i["answer"]}
    assert len(seed_with_hotline) == 2
    assert {e.question for e in kb.entries if HOTLINE in e.answer} == seed_with_hotline
    for entry in kb.entries:
        assert (HOTLINE in entry.answer_en) == (HOTLINE in entry.answer), entry.id


def test_english_keeps_every_number(kb):
    # Limits (1 minute, 14 days, 55, 8/4/3/1 relatives, L3/L4) must survive translation.
    for entry in kb.entries:
        for zh, en in ((entry.question, entry.question_en), (entry.answer, entry.answer_en)):
            for number in re.findall(r"[A-Z]?\d+(?:-\d+)*", zh):
                assert re.search(rf"(?<![\d-]){number}(?!\d)", en), (entry.id, number)


def test_english_names_the_app_and_the_code(kb):
    for entry in kb.entries:
        if "闽政通" in entry.answer:
            assert "Min Zheng Tong (闽政通)" in entry.answer_en, entry.id
        if "八闽健康码" in entry.answer:
            assert "Bamin Health Code (八闽健康码)" in entry.answer_en, entry.id


def test_entries_are_well_furnished(kb):
    for entry in kb.entries:
        assert 12 <= len(entry.alternates) <= 20, entry.id
        assert 5 <= len(entry.alternates_en) <= 8, entry.id
        assert len(entry.title) <= 14, entry.id
        assert set(entry.diagnosis) <= DIAGNOSIS_TOPICS
    sections = {e.section: e.section_title for e in load_kb(KB_PATH).entries}
    assert sections == {"personal": "在闽人员申领健康码", "family": "为家人申领健康码",
                        "domestic": "省外入闽人员申领健康码",
                        "overseas": "境外入闽人员申领健康码"}


def test_diagnosis_links(kb):
    expected = {
        "personal.face_fail": ("face",), "personal.name_mismatch": ("name",),
        "personal.cannot_generate": ("generate",),
        "personal.orange_after_quarantine": ("orange",), "domestic.mutual_orange": ("orange",),
        "domestic.origin_applied_still_fail": ("generate",),
        "domestic.origin_not_found": ("generate",),
        "family.not_allowed": ("family",), "family.quota": ("family",),
        "overseas.cannot_apply": ("overseas",), "overseas.foreign_passport": ("overseas",),
    }
    for faq_id, topics in expected.items():
        assert kb.get(faq_id).diagnosis == topics, faq_id
    assert kb.get("personal.screenshot").diagnosis == ()


def _norm(text: str) -> str:
    return re.sub(r"[\s\W_]+", "", text.casefold())


def test_no_alternate_copies_a_dev_question(kb):
    if not DEV_SET.is_file():
        pytest.skip(f"dev set {DEV_SET} is absent")
    dev = {_norm(json.loads(line)["q"]) for line in DEV_SET.read_text("utf-8").splitlines()
           if line.strip()}
    for entry in kb.entries:
        for alternate in (*entry.alternates, *entry.alternates_en):
            assert _norm(alternate) not in dev, (entry.id, alternate)


def test_cli_summary_and_failure(tmp_path, capsys):
    assert main([str(KB_PATH)]) == 0
    assert "22 entries" in capsys.readouterr().out
    bad = tmp_path / "bad.md"
    bad.write_text("## personal: 在闽人员申领健康码\nhello\n", encoding="utf-8")
    assert main([str(bad)]) == 1
    assert f"{bad}:2: " in capsys.readouterr().err
    assert main([str(tmp_path / "missing.md")]) == 1


# --- malformed files -----------------------------------------------------------------------

def entry_text(faq_id="personal.a", *, skip=(), extra="", alternates=("甲问法", "乙问法")):
    fields = {
        "问": "问: 官方问题?",
        "答": "答:\n> 第一行\n> 第二行",
        "标题": "标题: 标题",
        "Q": "Q: Question?",
        "A": "A:\n> Answer.",
        "同义": "同义:\n" + "\n".join(f"- {a}" for a in alternates),
    }
    body = "\n".join(v for k, v in fields.items() if k not in skip)
    return f"### {faq_id}\n{body}\n{extra}"


HEAD = "# 知识库\n<!-- a\ncomment -->\n\n## personal: 在闽人员申领健康码\nEnglish: Applying in Fujian\n\n"
# HEAD occupies lines 1-7, so an entry appended right after it starts on line 8:
#  8 ### id, 9 问, 10 答:, 11-12 >, 13 标题, 14 Q, 15 A:, 16 >, 17 同义:, 18-19 -, 20 extra


def test_a_minimal_file_parses():
    kb = parse_kb(HEAD + entry_text(extra="诊断: orange, face\n"))
    (entry,) = kb.entries
    assert entry.id == "personal.a" and entry.line == 8
    assert entry.section == "personal" and entry.section_title == "在闽人员申领健康码"
    assert entry.answer == "第一行\n第二行" and entry.answer_en == "Answer."
    assert entry.alternates == ("甲问法", "乙问法") and entry.alternates_en == ()
    assert entry.diagnosis == ("orange", "face")
    assert entry.phrasings()[:2] == ("官方问题?", "Question?")


def test_full_width_colon_and_inline_answer_are_accepted():
    text = HEAD + "### personal.b\n问：问题\n答: 一行答案\n标题：题\nQ: q\nA: a\n"
    (entry,) = parse_kb(text).entries
    assert entry.question == "问题" and entry.answer == "一行答案" and entry.answer_en == "a"


def test_crlf_and_bom_are_tolerated():
    text = "\ufeff" + (HEAD + entry_text()).replace("\n", "\r\n")
    assert parse_kb(text).entries[0].answer == "第一行\n第二行"


def expect_error(text: str, line: int, fragment: str, **kwargs):
    with pytest.raises(KBError) as info:
        parse_kb(text, source="kb.md", **kwargs)
    message = str(info.value)
    assert message.startswith(f"kb.md:{line}: "), message
    assert fragment in message, message
    assert info.value.line == line


@pytest.mark.parametrize("field", ["问", "答", "标题", "Q", "A"])
def test_missing_field_points_at_the_entry_heading(field):
    expect_error(HEAD + entry_text(skip=(field,)), 8, f"'{field}:'")


def test_unknown_field():
    expect_error(HEAD + entry_text(extra="备注: 随便\n"), 20, "unknown field '备注'")


def test_unknown_section_field():
    expect_error("## personal: 在闽\n中文: 标题\n", 2, "unknown section field")


def test_duplicate_field():
    expect_error(HEAD + entry_text(extra="标题: 又一个\n"), 20, "duplicate field '标题'")


def test_duplicate_id():
    text = HEAD + entry_text() + entry_text(alternates=("丙", "丁"))
    expect_error(text, 20, "duplicate id 'personal.a' (first at line 8)")


@pytest.mark.parametrize("faq_id", ["personal", "Personal.A", "personal.a.b", "personal.a-b"])
def test_id_not_section_dot_name(faq_id):
    expect_error(HEAD + entry_text(faq_id), 8, "not of the form section.name")


def test_id_prefix_must_match_its_section():
    expect_error(HEAD + entry_text("family.a"), 8, "does not start with its section 'personal'")


def test_entry_before_any_section():
    expect_error("# 知识库\n\n" + entry_text(), 3, "entry before any")


def test_field_before_any_section():
    expect_error("问: 什么\n", 1, "before any")


def test_empty_answer():
    text = HEAD + "### personal.a\n问: 问\n答:\n标题: 题\nQ: q\nA:\n> a\n"
    expect_error(text, 10, "empty answer '答:'")
    text = HEAD + "### personal.a\n问: 问\n答:\n>\n>\n标题: 题\nQ: q\nA: a\n"
    expect_error(text, 10, "empty answer")


def test_unknown_diagnosis_topic():
    expect_error(HEAD + entry_text(extra="诊断: orange, weather\n"), 20,
                 "unknown diagnosis topic 'weather'")


def test_alternate_outside_a_list():
    text = HEAD + "### personal.a\n问: 问\n- 漂着的问法\n"
    expect_error(text, 10, "belongs in a '同义:' or 'Also:' list")
    # A list ends at the next field: an item after 标题 is outside it.
    text = HEAD + "### personal.a\n同义:\n- 甲\n标题: 题\n- 乙\n"
    expect_error(text, 12, "belongs in a '同义:' or 'Also:' list")
    expect_error("## personal: 在闽\n- 甲\n", 2, "list")


def test_quote_outside_an_answer():
    expect_error(HEAD + "### personal.a\n问: 问\n> 乱放的引用\n", 10, "'>' line")


def test_duplicate_alternate_within_an_entry():
    expect_error(HEAD + entry_text(alternates=("甲", "乙", "甲")), 20, "duplicate alternate '甲'")
    # Case and spacing do not make a different phrasing, nor does repeating the question.
    text = HEAD + entry_text(alternates=("Tell me", "tell  ME"))
    expect_error(text, 19, "duplicate alternate")
    expect_error(HEAD + entry_text(alternates=("官方问题?",)), 18, "duplicate alternate")


def test_same_phrasing_under_two_entries():
    text = HEAD + entry_text() + entry_text("personal.b", alternates=("乙问法",))
    expect_error(text, 20, "also a phrasing of personal.a")


def test_stray_text_line():
    expect_error(HEAD + entry_text(extra="这是一句没有格式的话\n"), 20, "unexpected line")


def test_title_too_long():
    text = HEAD + "### personal.a\n标题: 这是一个非常非常非常非常长的标题\n"
    expect_error(text, 9, "at most 14")


def test_unclosed_comment():
    expect_error(HEAD + "<!-- never closed\n" + entry_text(), 8, "never closed")


def test_bad_section_heading():
    expect_error("## personal 在闽\n", 1, "section heading")
    expect_error("## Personal: 在闽\n", 1, "lowercase")
    expect_error("## personal: 甲\n## personal: 乙\n", 2, "duplicate section")


def test_contract_ids_required_when_asked():
    text = HEAD + entry_text("personal.howto")
    expect_error(text, 5, "contract id 'personal.screenshot' is missing",
                 require_contract_ids=True)
    expect_error(HEAD + entry_text("personal.extra"), 8, "not one of the contract ids",
                 require_contract_ids=True)
    assert parse_kb(text).ids == ("personal.howto",)


def test_load_kb_requires_contract_ids_by_default(tmp_path):
    path = tmp_path / "kb.md"
    path.write_text(HEAD + entry_text(), encoding="utf-8")
    with pytest.raises(KBError, match="not one of the contract ids"):
        load_kb(path)
    assert load_kb(path, require_contract_ids=False).ids == ("personal.a",)


def test_not_utf8(tmp_path):
    path = tmp_path / "kb.md"
    path.write_bytes(HEAD.encode("utf-8") + "### personal.a\n".encode("gbk") + "问: 问\n".encode("gbk"))
    with pytest.raises(KBError, match=r"kb.md:9: not valid UTF-8"):
        load_kb(path)
