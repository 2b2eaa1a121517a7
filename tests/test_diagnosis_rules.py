"""Diagnosis rules: every code, the edge cases, the order of several reasons, unknown data."""
from __future__ import annotations

from datetime import date, timedelta

import pytest

from diagnosis.account import parse_account
from diagnosis.rules import CODES, TOPICS, Finding, codes, diagnose

TODAY = date(2026, 11, 29)

# The contract's diagnosis-code table (shared/CONTRACT.md), copied so a rename fails here.
CONTRACT_CODES = {
    "orange.origin_not_synced", "orange.quarantine_release_pending", "orange.overseas_observation",
    "orange.risk", "generate.auth_level_low", "generate.minor", "generate.origin_missing",
    "face.identity_mismatch", "face.retry_other_login", "face.service_error", "name.mismatch",
    "family.blocked_orange", "family.blocked_domestic_arrival", "family.blocked_overseas_arrival",
    "family.quota_full", "overseas.checkin_missing", "overseas.not_eligible", "ok",
}


def dx(doc, topic, relation=None, today=TODAY):
    return codes(diagnose(doc, topic, today=today, relation=relation))


def one(doc, topic, code, relation=None, today=TODAY) -> Finding:
    found = [f for f in diagnose(doc, topic, today=today, relation=relation) if f.code == code]
    assert len(found) == 1, found
    return found[0]


def quarantined(days=14, ended_days_ago=1, symptoms=False, color="orange", reasons=("quarantine",)):
    end = TODAY - timedelta(days=ended_days_ago)
    return {"code": {"color": color, "reasons": list(reasons) if reasons is not None else None},
            "quarantine": {"start": (end - timedelta(days=days)).isoformat(), "end": end.isoformat(),
                           "symptoms": symptoms}}


def test_codes_are_exactly_the_contract_table():
    assert set(CODES) == CONTRACT_CODES and len(CODES) == len(CONTRACT_CODES)


def test_every_contract_code_is_produced_by_some_account():
    produced = set()
    for doc, topic, rel in SCENARIOS:
        produced |= set(dx(doc, topic, rel))
    assert produced == CONTRACT_CODES


# One account per code (and the topic whose rule reports it).
SCENARIOS = [
    ({"arrival": "domestic", "origin": {"on_national_platform": False}, "code": {"color": "orange"}},
     "orange", None),
    (quarantined(), "orange", None),
    ({"arrival": "overseas", "overseas": {"observation_completed": False}, "code": {"color": "orange"}},
     "orange", None),
    ({"code": {"color": "orange", "reasons": ["risk_contact"]}}, "orange", None),
    ({"birth_date": "1990-01-01", "auth_level": "L3"}, "generate", None),
    ({"birth_date": "2015-06-01"}, "generate", None),
    ({"arrival": "domestic", "origin": {"on_national_platform": False}}, "generate", None),
    ({"identity_check": "mismatch"}, "face", None),
    ({"identity_check": "match", "face_attempts": [{"ok": False}, {"ok": False}]}, "face", None),
    ({"face_attempts": [{"ok": False, "reason": "service_error"}]}, "face", None),
    ({}, "name", None),
    ({"code": {"color": "orange"}}, "family", None),
    ({"arrival": "domestic"}, "family", None),
    ({"arrival": "overseas"}, "family", None),
    ({"family": [{"relation": "spouse"}]}, "family", "spouse"),
    ({"overseas": {"checkin_date": "2026-11-28"}}, "overseas", None),
    ({"id_type": "passport", "overseas": {"checkin_date": TODAY.isoformat(), "registered": False}},
     "overseas", None),
    ({"code": {"color": "green"}}, "orange", None),
]


@pytest.mark.parametrize("doc, topic, rel", SCENARIOS)
def test_scenarios_yield_one_finding(doc, topic, rel):
    assert len(dx(doc, topic, rel)) == 1


def test_unknown_topic_and_relation_are_errors():
    with pytest.raises(ValueError, match="topic"):
        diagnose({}, "weather", today=TODAY)
    with pytest.raises(ValueError, match="relation"):
        diagnose({}, "family", today=TODAY, relation="cousin")


# --- missing and unknown data --------------------------------------------------------------------

@pytest.mark.parametrize("topic", TOPICS)
def test_empty_account_never_crashes_and_is_never_ok(topic):
    got = dx({}, topic)
    assert "ok" not in got
    assert got == (["name.mismatch"] if topic == "name" else [])


@pytest.mark.parametrize("topic", TOPICS)
def test_partial_sub_documents_never_crash(topic):
    doc = {"code": {}, "origin": {}, "quarantine": {}, "overseas": {}, "family": [{}],
           "face_attempts": [{}], "arrival": "domestic"}
    assert "ok" not in dx(doc, topic)


@pytest.mark.parametrize("topic", TOPICS)
def test_unknown_extra_fields_change_nothing(topic):
    base = dict(SCENARIOS[1][0])
    extra = {**base, "loyalty": {"tier": "gold"}, "code": {**base["code"], "tint": "amber"}}
    assert dx(extra, topic) == dx(base, topic)


def test_accepts_a_parsed_account_or_a_plain_document():
    doc = quarantined()
    assert dx(parse_account(doc), "orange") == dx(doc, "orange") == ["orange.quarantine_release_pending"]


def test_findings_are_frozen_and_hold_no_personal_data():
    doc = {**quarantined(), "name": "林小明", "id_number": "350102199001011234", "phone": "13800138000",
           "family": [{"relation": "parent", "name": "林大山", "id_number": "350102196001011234"}] * 4}
    found = [f for t in TOPICS for f in diagnose(doc, t, today=TODAY, relation="parent")]
    with pytest.raises(AttributeError):
        found[0].code = "ok"
    text = repr([f.as_dict() for f in found])
    for raw in ("林小明", "小明", "350102199001011234", "13800138000", "林大山", "350102196001011234"):
        assert raw not in text


# --- orange --------------------------------------------------------------------------------------

def test_quarantine_of_14_days_is_release_pending_13_is_not():
    f = one(quarantined(days=14), "orange", "orange.quarantine_release_pending")
    assert f.facts["quarantine_days"] == 14 and f.facts["days_since_end"] == 1
    assert f.action == "hotline"
    assert dx(quarantined(days=13), "orange") == []


def test_quarantine_must_have_ended_before_today():
    assert dx(quarantined(ended_days_ago=0), "orange") == []  # the end day is still quarantine
    assert dx(quarantined(ended_days_ago=-3), "orange") == []
    f = one(quarantined(days=20, ended_days_ago=13), "orange", "orange.quarantine_release_pending")
    assert f.facts["days_since_end"] == 13
    assert f.facts["quarantine_end"] == (TODAY - timedelta(days=13)).isoformat()


def test_symptoms_are_not_release_pending_but_a_status_the_user_cannot_clear():
    f = one(quarantined(symptoms=True), "orange", "orange.risk")
    assert f.facts["basis"] == "symptoms"
    assert "orange.quarantine_release_pending" not in dx(quarantined(symptoms=True), "orange")


def test_unknown_symptoms_or_dates_give_no_quarantine_finding():
    doc = quarantined()
    doc["quarantine"].pop("symptoms")
    assert dx(doc, "orange") == []
    doc = quarantined()
    doc["quarantine"].pop("start")
    assert dx(doc, "orange") == []


def test_release_pending_needs_the_code_still_orange():
    assert dx(quarantined(color="green"), "orange") == ["ok"]
    assert dx(quarantined(color="red"), "orange") == ["orange.risk"]  # red: not a pending release
    doc = quarantined()
    doc["code"].pop("color")
    assert dx(doc, "orange") == []


def test_release_pending_ignores_a_quarantine_the_tags_rule_out():
    assert dx(quarantined(reasons=["risk_area"]), "orange") == ["orange.risk"]
    assert dx(quarantined(reasons=None), "orange") == ["orange.quarantine_release_pending"]  # tags unknown


def test_origin_not_synced_from_the_platform_flag_or_the_tag():
    assert dx({"arrival": "domestic", "origin": {"province": "广东", "on_national_platform": False},
               "code": {"color": "orange"}}, "orange") == ["orange.origin_not_synced"]
    assert dx({"code": {"color": "orange", "reasons": ["origin_not_synced"]}}, "orange") == \
        ["orange.origin_not_synced"]
    f = one({"arrival": "domestic", "origin": {"province": "广东", "on_national_platform": False}},
            "orange", "orange.origin_not_synced")
    assert f.facts["province"] == "广东"
    # Synced origin, or a non-arrival: not this cause.
    assert dx({"arrival": "domestic", "origin": {"on_national_platform": True}, "code": {"color": "orange"}},
              "orange") == []
    assert dx({"arrival": "none", "origin": {"on_national_platform": False}, "code": {"color": "orange"}},
              "orange") == []


@pytest.mark.parametrize("overseas, tags, basis", [
    ({"observation_completed": False}, [], "in_observation"),
    ({"observation_completed": True}, ["overseas_observation"], "just_out"),
    ({}, ["overseas_observation"], "tagged"),
])
def test_overseas_observation(overseas, tags, basis):
    doc = {"arrival": "overseas", "overseas": overseas, "code": {"color": "orange", "reasons": tags}}
    assert one(doc, "orange", "orange.overseas_observation").facts["basis"] == basis


def test_overseas_observation_done_and_untagged_is_not_a_cause():
    doc = {"arrival": "overseas", "overseas": {"observation_completed": True},
           "code": {"color": "orange", "reasons": []}}
    assert dx(doc, "orange") == []


def test_risk_tags_reported_once_with_both_tags():
    f = one({"code": {"color": "orange", "reasons": ["risk_area", "risk_contact"]}}, "orange", "orange.risk")
    assert f.facts["tags"] == ["risk_area", "risk_contact"] and f.facts["basis"] == "tags"
    doc = {**quarantined(symptoms=True, reasons=["quarantine", "risk_contact"])}
    assert dx(doc, "orange") == ["orange.risk"]


def test_red_code_is_handled_by_the_orange_question():
    assert one({"code": {"color": "red"}}, "orange", "orange.risk").facts["basis"] == "red"
    got = diagnose({"code": {"color": "red", "reasons": ["risk_contact"]}}, "orange", today=TODAY)
    assert [(f.code, f.facts["basis"], f.facts["color"]) for f in got] == [("orange.risk", "tags", "red")]


def test_green_is_ok_and_never_generated_says_nothing():
    assert dx({"code": {"color": "green", "reasons": ["risk_area"]}}, "orange") == ["ok"]
    assert dx({"code": {"color": "none"}}, "orange") == []


def test_several_orange_reasons_all_reported_most_actionable_first():
    doc = quarantined(reasons=["risk_area", "overseas_observation", "quarantine", "origin_not_synced"])
    doc["arrival"] = "domestic"
    got = diagnose(doc, "orange", today=TODAY)
    assert codes(got) == ["orange.quarantine_release_pending", "orange.origin_not_synced",
                          "orange.overseas_observation", "orange.risk"]
    assert [f.action for f in got] == ["hotline", "wait", "none", "none"]
    assert [f.priority for f in got] == sorted(f.priority for f in got)


# --- generate ------------------------------------------------------------------------------------

def test_minor_from_the_birth_date_18th_birthday_exactly_is_adult():
    birthday18 = date(TODAY.year - 18, TODAY.month, TODAY.day)
    adult = {"birth_date": birthday18.isoformat(), "auth_level": "L2"}
    assert dx(adult, "generate") == ["generate.auth_level_low"]
    minor = {"birth_date": (birthday18 + timedelta(days=1)).isoformat(), "auth_level": "L2"}
    f = one(minor, "generate", "generate.minor")
    assert f.facts["age"] == 17
    assert dx(minor, "generate") == ["generate.minor"]  # not told to reach L4


def test_minor_from_the_resident_id_when_no_birth_date():
    doc = {"id_type": "resident_id", "id_number": "350102201501011234", "auth_level": "L1"}
    assert dx(doc, "generate") == ["generate.minor"]


def test_29_february_birthday_turns_18_on_1_march():
    doc = {"birth_date": "2008-02-29", "auth_level": "L4", "arrival": "none"}
    assert dx(doc, "generate", today=date(2026, 2, 28)) == ["generate.minor"]
    assert dx(doc, "generate", today=date(2026, 3, 1)) == ["ok"]


def test_auth_level_low_needs_the_age_known():
    assert dx({"auth_level": "L3"}, "generate") == []
    assert one({"birth_date": "1990-01-01", "auth_level": "L3"}, "generate",
               "generate.auth_level_low").facts == {"auth_level": "L3"}


@pytest.mark.parametrize("origin, basis", [
    ({"color": "none"}, "not_applied"),
    ({"color": "green", "on_national_platform": False, "province": "浙江"}, "not_uploaded"),
])
def test_origin_missing(origin, basis):
    f = one({"arrival": "domestic", "origin": origin}, "generate", "generate.origin_missing")
    assert f.facts["basis"] == basis


def test_generate_several_reasons_and_ok():
    doc = {"birth_date": "1990-01-01", "auth_level": "L3", "arrival": "domestic",
           "origin": {"on_national_platform": False}}
    assert dx(doc, "generate") == ["generate.auth_level_low", "generate.origin_missing"]
    assert dx({"birth_date": "1990-01-01", "auth_level": "L4", "arrival": "none"}, "generate") == ["ok"]
    assert dx({"code": {"color": "orange"}, "arrival": "none"}, "generate") == ["ok"]
    # Adult at L4 but the arrival unknown: the origin cannot be vouched for.
    assert dx({"birth_date": "1990-01-01", "auth_level": "L4"}, "generate") == []
    assert dx({"birth_date": "1990-01-01", "auth_level": "L4", "arrival": "domestic",
               "origin": {"on_national_platform": True, "color": "green"}}, "generate") == ["ok"]


# --- face ----------------------------------------------------------------------------------------

def att(*spec):
    return [{"ok": ok, "reason": reason} if reason else {"ok": ok} for ok, reason in spec]


def test_identity_mismatch_wins_over_retries_and_service_errors():
    doc = {"identity_check": "mismatch",
           "face_attempts": att((False, "liveness"), (False, "liveness"), (False, "service_error"))}
    assert dx(doc, "face") == ["face.identity_mismatch"]


def test_service_reason_identity_mismatch_counts_only_when_the_check_is_unknown():
    doc = {"face_attempts": att((False, "identity_mismatch"))}
    assert dx(doc, "face") == ["face.identity_mismatch"]
    doc["identity_check"] = "match"
    assert dx(doc, "face") == []  # one ordinary failure


def test_keeps_failing_means_the_last_two_attempts_failed():
    match = {"identity_check": "match"}
    assert dx({**match, "face_attempts": att((False, "liveness"))}, "face") == []
    assert dx({**match, "face_attempts": att((False, "liveness"), (False, "poor_image"))}, "face") == \
        ["face.retry_other_login"]
    # An older failure separated by a success does not count.
    assert dx({**match, "face_attempts": att((False, "liveness"), (True, None), (False, "liveness"))},
              "face") == []
    f = one({**match, "face_attempts": att((False, None), (False, "liveness"), (False, "photo_mismatch"))},
            "face", "face.retry_other_login")
    assert f.facts["failed_in_a_row"] == 3


def test_retry_other_login_needs_the_identity_confirmed():
    assert dx({"face_attempts": att((False, "liveness"), (False, "liveness"))}, "face") == []


def test_service_error_only_when_the_newest_failure_is_one():
    match = {"identity_check": "match"}
    assert dx({**match, "face_attempts": att((False, "service_error"), (False, "liveness"))}, "face") == []
    assert dx({**match, "face_attempts": att((False, "liveness"), (False, "service_error"))}, "face") == \
        ["face.service_error"]
    assert dx({**match, "face_attempts": att((False, "service_error"), (True, None))}, "face") == ["ok"]


def test_face_failures_around_a_service_error_still_keep_failing():
    doc = {"identity_check": "match",
           "face_attempts": att((False, "liveness"), (False, "liveness"), (False, "service_error"))}
    assert dx(doc, "face") == ["face.retry_other_login", "face.service_error"]


def test_newest_attempt_of_unknown_outcome_says_nothing():
    doc = {"identity_check": "match",
           "face_attempts": att((False, "liveness"), (False, "liveness"), (None, None))}
    assert dx(doc, "face") == []


def test_face_ok_only_with_identity_confirmed_and_no_open_failure():
    assert dx({"identity_check": "match", "face_attempts": []}, "face") == ["ok"]
    recovered = att((False, "liveness"), (True, None))
    assert dx({"identity_check": "match", "face_attempts": recovered}, "face") == ["ok"]
    assert dx({"identity_check": "match"}, "face") == []  # attempts unknown
    assert dx({"face_attempts": []}, "face") == []  # identity unknown


# --- name ----------------------------------------------------------------------------------------

def test_name_mismatch_always_with_the_masked_name():
    f = one({"name": "林小明"}, "name", "name.mismatch")
    assert f.facts["masked_name"] == "林**" and "小明" not in repr(f)
    assert one({}, "name", "name.mismatch").facts == {}


# --- family --------------------------------------------------------------------------------------

def fam(parents=0, children=0, spouses=0):
    return ([{"relation": "parent"}] * parents + [{"relation": "child"}] * children
            + [{"relation": "spouse"}] * spouses)


@pytest.mark.parametrize("relation, limit", [("parent", 4), ("child", 3), ("spouse", 1)])
def test_quota_per_relation(relation, limit):
    counts = {"parent": 0, "child": 0, "spouse": 0}
    counts[relation] = limit - 1
    doc = {"arrival": "none", "code": {"color": "green"},
           "family": fam(counts["parent"], counts["child"], counts["spouse"])}
    assert dx(doc, "family", relation) == ["ok"]
    doc["family"] = doc["family"] + [{"relation": relation}]
    f = one(doc, "family", "family.quota_full", relation)
    assert f.facts == {"basis": "relation", "relation": relation, "used": limit, "limit": limit}


def test_quota_of_one_relation_does_not_block_another():
    doc = {"arrival": "none", "code": {"color": "green"}, "family": fam(parents=4, spouses=1)}
    assert dx(doc, "family", "child") == ["ok"]
    assert dx(doc, "family", "parent") == ["family.quota_full"]
    # No relation named: only all eight slots taken is "full"; otherwise ok with what is free.
    f = one(doc, "family", "ok")
    assert f.facts["free"] == {"parent": 0, "child": 3, "spouse": 0}
    doc["family"] = fam(4, 3, 1)
    assert one(doc, "family", "family.quota_full").facts == {"basis": "total", "used": 8, "limit": 8}


def test_family_blocked_by_own_code_and_arrival_all_reported():
    doc = {"arrival": "overseas", "code": {"color": "red"}, "family": fam(spouses=1)}
    assert dx(doc, "family", "spouse") == ["family.blocked_orange", "family.quota_full",
                                           "family.blocked_overseas_arrival"]
    assert one(doc, "family", "family.blocked_orange", "spouse").facts["color"] == "red"
    assert dx({"arrival": "domestic", "code": {"color": "orange"}}, "family") == \
        ["family.blocked_orange", "family.blocked_domestic_arrival"]


def test_family_ok_needs_every_condition_known():
    good = {"arrival": "none", "code": {"color": "green"}, "family": []}
    assert dx(good, "family") == ["ok"]
    assert dx({**good, "code": {"color": "none"}}, "family") == ["ok"]
    for missing in ("arrival", "code", "family"):
        doc = {k: v for k, v in good.items() if k != missing}
        assert dx(doc, "family") == [], missing


def test_family_member_without_relation_is_not_counted():
    doc = {"arrival": "none", "code": {"color": "green"}, "family": fam(spouses=0) + [{"name": "x"}]}
    assert dx(doc, "family", "spouse") == ["ok"]


# --- overseas ------------------------------------------------------------------------------------

def test_checkin_is_daily():
    f = one({"overseas": {"checkin_date": "2026-11-28"}}, "overseas", "overseas.checkin_missing")
    assert f.facts == {"last_checkin": "2026-11-28", "days_since": 1}
    today = TODAY.isoformat()
    assert dx({"id_type": "resident_id", "overseas": {"checkin_date": today}}, "overseas") == ["ok"]
    assert dx({"id_type": "resident_id", "overseas": {"checkin_date": "2026-11-30"}}, "overseas") == ["ok"]
    assert dx({"id_type": "resident_id", "overseas": {}}, "overseas") == []  # unknown check-in


@pytest.mark.parametrize("obs, reg, expected", [
    (False, True, ["overseas.not_eligible"]),
    (True, False, ["overseas.not_eligible"]),
    (False, False, ["overseas.not_eligible"]),
    (True, True, ["ok"]),
    (None, True, []),
])
def test_foreign_passport_needs_observation_and_registration(obs, reg, expected):
    ov = {"checkin_date": TODAY.isoformat(), "registered": reg}
    if obs is not None:
        ov["observation_completed"] = obs
    assert dx({"id_type": "passport", "overseas": ov}, "overseas") == expected


def test_not_eligible_applies_to_passports_only():
    ov = {"checkin_date": TODAY.isoformat(), "observation_completed": False, "registered": False}
    assert dx({"id_type": "hk_macau_pass", "overseas": ov}, "overseas") == ["ok"]
    assert dx({"overseas": ov}, "overseas") == []  # id type unknown


def test_overseas_several_reasons_checkin_first():
    doc = {"id_type": "passport", "overseas": {"checkin_date": "2026-11-20", "observation_completed": False}}
    assert dx(doc, "overseas") == ["overseas.checkin_missing", "overseas.not_eligible"]


def test_an_invalid_document_is_a_clear_error_not_a_crash():
    from diagnosis.account import AccountInvalid

    with pytest.raises(AccountInvalid, match=r"code\.color"):
        diagnose({"code": {"color": "purple"}}, "orange", today=TODAY)
