"""Reply templates: every code in zh and en, Traditional derived, facts shown, nothing personal."""
from __future__ import annotations

import re
from datetime import date

import pytest
from test_diagnosis_rules import CONTRACT_CODES, SCENARIOS, TODAY

from diagnosis.replies import HOTLINE, TEMPLATES, next_step, render, ticket_offered
from diagnosis.rules import CODES, TOPICS, Finding, diagnose, finding

PERSONAL = {"name": "林小明", "id_type": "resident_id", "id_number": "350102199001011234",
            "phone": "13800138000", "birth_date": "1990-01-01"}
RAW = ("林小明", "小明", "350102199001011234", "13800138000", "19900101", "1990-01-01",
       "林大山", "350102196001011234")

# Every (code, basis) the rules can produce, with the facts they produce it with.
ALL_FINDINGS = [
    finding("orange.origin_not_synced", color="orange", province="广东"),
    finding("orange.origin_not_synced", color="orange"),
    finding("orange.quarantine_release_pending", color="orange", quarantine_days=14,
            quarantine_end="2026-11-15", days_since_end=14),
    finding("orange.overseas_observation", basis="in_observation", color="orange"),
    finding("orange.overseas_observation", basis="just_out", color="orange"),
    finding("orange.overseas_observation", basis="tagged"),
    finding("orange.risk", basis="tags", color="orange", tags=["risk_contact", "risk_area"]),
    finding("orange.risk", basis="symptoms", color="orange", symptoms=True),
    finding("orange.risk", basis="red", color="red"),
    finding("generate.auth_level_low", auth_level="L3"),
    finding("generate.minor", age=17),
    finding("generate.origin_missing", basis="not_applied"),
    finding("generate.origin_missing", basis="not_uploaded", province="浙江"),
    finding("face.identity_mismatch"),
    finding("face.retry_other_login", failed_in_a_row=3),
    finding("face.service_error"),
    finding("name.mismatch"),
    finding("name.mismatch", basis="masked", masked_name="林**"),
    finding("family.blocked_orange", color="orange"),
    finding("family.blocked_domestic_arrival"),
    finding("family.blocked_overseas_arrival"),
    finding("family.quota_full", basis="relation", relation="parent", used=4, limit=4),
    finding("family.quota_full", basis="total", used=8, limit=8),
    finding("overseas.checkin_missing", last_checkin="2026-11-27", days_since=2),
    finding("overseas.not_eligible", observation_completed=False, registered=True),
    finding("ok", topic="orange", basis="orange", color="green"),
    finding("ok", topic="generate", basis="generate"),
    finding("ok", topic="face", basis="face_passed"),
    finding("ok", topic="face", basis="face_no_attempts"),
    finding("ok", topic="family", basis="family", free={"parent": 2, "child": 3, "spouse": 0}),
    finding("ok", topic="family", basis="family_relation", relation="child", used=1, limit=3, free=2),
    finding("ok", topic="overseas", basis="overseas"),
]


@pytest.mark.parametrize("code", sorted(CONTRACT_CODES))
def test_every_contract_code_has_zh_and_en_templates(code):
    assert set(TEMPLATES[code]) == {"zh", "en"}
    zh, en = TEMPLATES[code]["zh"], TEMPLATES[code]["en"]
    assert set(zh) == set(en), "the same variants in both languages"
    for variant in zh:
        for text in zh[variant]:
            assert re.search(r"[\u4e00-\u9fff]", text) and text.strip()
        for text in en[variant]:
            assert re.search(r"[A-Za-z]{3}", text) and text.strip()
    assert set(TEMPLATES) == set(CODES)


def test_every_variant_is_reachable_and_renders():
    covered = {(f.code, f.facts.get("basis", "default")) for f in ALL_FINDINGS}
    declared = {(code, v) for code, langs in TEMPLATES.items() for v in langs["zh"]}
    assert covered == declared


@pytest.mark.parametrize("lang", ["zh", "zh-hant", "en"])
@pytest.mark.parametrize("f", ALL_FINDINGS, ids=lambda f: f"{f.code}:{f.facts.get('basis', '')}")
def test_render_every_finding(f, lang):
    [text] = render([f], lang)
    assert "{" not in text and "}" not in text  # every placeholder filled
    assert 20 < len(text) < 700
    if lang == "en":
        names_removed = text.replace("八闽健康码", "").replace("境外入闽健康码", "")
        assert not re.search(r"[\u4e00-\u9fff]{6,}", names_removed)


def test_rules_output_renders_for_every_scenario():
    for doc, topic, rel in SCENARIOS:
        for lang in ("zh", "zh-hant", "en"):
            for text in render(diagnose(doc, topic, today=TODAY, relation=rel), lang):
                assert "{" not in text


@pytest.mark.parametrize("lang", ["zh", "zh-hant", "en"])
def test_hotline_where_staff_must_act(lang):
    for code in ("orange.quarantine_release_pending", "name.mismatch"):
        [text] = render([f for f in ALL_FINDINGS if f.code == code][:1], lang)
        assert HOTLINE in text
    [text] = render([finding("face.service_error")], lang)
    assert HOTLINE not in text


def test_replies_name_the_seed_next_steps():
    by = {(f.code, f.facts.get("basis")): f for f in ALL_FINDINGS}
    zh = lambda code, basis=None: render([by[(code, basis)]], "zh")[0]  # noqa: E731
    en = lambda code, basis=None: render([by[(code, basis)]], "en")[0]  # noqa: E731
    assert "证明材料" in zh("orange.quarantine_release_pending")
    assert "proof" in en("orange.quarantine_release_pending")
    assert "注销账号后重新注册" in zh("face.identity_mismatch")
    assert "deregister" in en("face.identity_mismatch")
    assert "支付宝" in zh("face.retry_other_login") and "小程序" in zh("face.retry_other_login")
    assert "Alipay" in en("face.retry_other_login") and "mini-program" in en("face.retry_other_login")
    assert "为家人申领" in zh("generate.minor") and "family member" in en("generate.minor")
    for text in (zh("family.quota_full", "relation"), zh("family.quota_full", "total")):
        assert "4名父母（含配偶父母）、3名子女和1名配偶" in text
    quota_en = "4 parents (including the spouse's parents), 3 children and 1 spouse"
    assert quota_en in en("family.quota_full", "total")
    assert "健康打卡" in zh("overseas.checkin_missing") and "check-in" in en("overseas.checkin_missing")
    assert "集中医学观察" in zh("overseas.not_eligible")
    assert "境外入闽人员健康数据管理平台" in zh("overseas.not_eligible")
    assert "全国一体化政务服务平台" in zh("orange.origin_not_synced")
    assert "National Integrated Government Service Platform" in en("generate.origin_missing", "not_uploaded")
    assert "L4" in zh("generate.auth_level_low")


def test_facts_appear_in_the_text():
    q = finding("orange.quarantine_release_pending", color="orange", quarantine_days=15,
                quarantine_end="2026-11-16", days_since_end=13)
    for lang in ("zh", "en"):
        [text] = render([q], lang)
        assert "15" in text and "2026-11-16" in text and "13" in text
    quota = finding("family.quota_full", basis="relation", relation="child", used=3, limit=3)
    assert "3名子女" in render([quota], "zh")[0]
    assert "3 children" in render([quota], "en")[0]
    assert "广东" in render([finding("orange.origin_not_synced", province="广东")], "zh")[0]
    [risk] = render([finding("orange.risk", basis="tags", color="red", tags=["risk_contact"])], "zh")
    assert "红色" in risk and "密切接触" in risk


def test_traditional_is_derived_from_simplified():
    f = finding("family.quota_full", basis="total", used=8, limit=8)
    zh, hant = render([f], "zh")[0], render([f], "zh-hant")[0]
    assert hant != zh and len(hant) == len(zh)
    assert "申領" in hant and "健康碼" in hant and "申领" not in hant
    [hotline] = render([finding("name.mismatch")], "zh-hant")
    assert HOTLINE in hotline and "熱線" in hotline


@pytest.mark.parametrize("topic", TOPICS)
@pytest.mark.parametrize("lang", ["zh", "zh-hant", "en"])
def test_no_raw_personal_data_in_any_reply(topic, lang):
    docs = [
        {**PERSONAL, "code": {"color": "orange", "reasons": ["quarantine", "risk_contact"]},
         "quarantine": {"start": "2026-11-01", "end": "2026-11-15", "symptoms": False},
         "arrival": "domestic",
         "origin": {"province": "广东", "on_national_platform": False, "color": "none"},
         "auth_level": "L3", "identity_check": "mismatch",
         "family": [{"relation": "parent", "name": "林大山", "id_number": "350102196001011234"}] * 4},
        {**PERSONAL, "id_type": "passport", "identity_check": "match",
         "face_attempts": [{"ok": False, "reason": "liveness"}] * 3,
         "overseas": {"checkin_date": "2026-11-01", "observation_completed": False, "registered": False}},
    ]
    for doc in docs:
        found = diagnose(doc, topic, today=date(2026, 11, 29), relation="parent")
        text = " ".join(render(found, lang))
        for raw in RAW:
            assert raw not in text
        if topic == "name":
            assert "林**" in text


def test_render_keeps_order_one_paragraph_per_finding():
    found = [finding("orange.quarantine_release_pending", color="orange", quarantine_days=14,
                     quarantine_end="2026-11-15", days_since_end=3),
             finding("orange.risk", basis="red", color="red")]
    out = render(found, "en")
    assert len(out) == 2 and "quarantine" in out[0] and "red" in out[1]
    assert render([], "zh") == []


def test_unknown_language_is_an_error():
    with pytest.raises(ValueError, match="language"):
        render([finding("face.service_error")], "fr")


@pytest.mark.parametrize("lang", ["zh", "zh-hant", "en"])
def test_next_step_for_follow_ups(lang):
    assert HOTLINE in next_step("orange.quarantine_release_pending", lang)
    step = next_step("face.retry_other_login", lang)
    assert ("Alipay" if lang == "en" else "支付") in step
    assert next_step("generate.origin_missing", "zh", {"basis": "not_applied"}) == \
        "省外人员来闽需要先申领出发地的健康码，再申请“八闽健康码”。"
    # Without facts a coded variant falls back to one of its own steps, never an error.
    for code in CODES:
        assert next_step(code, lang)
    # The step is part of the full reply.
    f = Finding("face.identity_mismatch", 0, "self_service", {})
    assert render([f], lang)[0].endswith(next_step(f.code, lang))


def test_ticket_offered_only_where_staff_act():
    assert {c for c in CODES if ticket_offered(c)} == {"orange.quarantine_release_pending", "name.mismatch",
                                                       "orange.risk"}
