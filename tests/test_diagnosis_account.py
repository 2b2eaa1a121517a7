"""The account document's declaration: every field optional, unknown fields kept, clear errors."""
from __future__ import annotations

from datetime import date, datetime

import pytest

from diagnosis.account import Account, AccountInvalid, effective_birth_date, parse_account

CONTRACT_EXAMPLE = {
    "user_id": "demo-0001",
    "name": "林小明",
    "id_type": "resident_id",
    "id_number": "350102199001011234",
    "phone": "13800138000",
    "birth_date": "1990-01-01",
    "auth_level": "L4",
    "identity_check": "match",
    "face_attempts": [{"at": "2026-11-26T09:30:00+08:00", "ok": False, "reason": "liveness"}],
    "arrival": "none",
    "origin": {"province": "广东", "on_national_platform": True, "color": "green",
               "synced_at": "2026-11-26T08:00:00+08:00"},
    "code": {"color": "orange", "reasons": ["quarantine"], "since": "2026-11-01T10:00:00+08:00"},
    "quarantine": {"start": "2026-11-01", "end": "2026-11-15", "symptoms": False},
    "overseas": {"checkin_date": "2026-11-27", "observation_completed": True, "registered": True},
    "family": [{"relation": "parent", "name": "林大山", "id_number": "350102196001011234"}],
}


def test_contract_example_parses_with_typed_dates():
    a = parse_account(CONTRACT_EXAMPLE)
    assert a.birth_date == date(1990, 1, 1)
    assert a.quarantine.end == date(2026, 11, 15)
    at = a.face_attempts[0].at
    assert isinstance(at, datetime) and at.utcoffset().seconds == 8 * 3600
    assert a.overseas.checkin_date == date(2026, 11, 27)


def test_document_round_trips_unchanged():
    assert parse_account(CONTRACT_EXAMPLE).document() == CONTRACT_EXAMPLE


def test_empty_document_is_all_unknown():
    a = parse_account({})
    assert a.code is None and a.family is None and a.face_attempts is None
    assert a.document() == {}


def test_unknown_fields_are_kept_at_every_level():
    doc = {"user_id": "u1", "vip": True, "code": {"color": "green", "level": 3},
           "family": [{"relation": "child", "nickname": "x"}],
           "face_attempts": [{"ok": True, "device": "ios"}]}
    out = parse_account(doc).document()
    assert out == doc


def test_empty_lists_differ_from_unknown():
    a = parse_account({"family": [], "face_attempts": []})
    assert a.family == [] and a.face_attempts == []
    assert parse_account({}).family is None


@pytest.mark.parametrize("doc, where", [
    ({"id_type": "driving_licence"}, "id_type"),
    ({"auth_level": "L5"}, "auth_level"),
    ({"identity_check": "maybe"}, "identity_check"),
    ({"face_attempts": [{"ok": False, "reason": "blurry"}]}, "face_attempts[0].reason"),
    ({"arrival": "abroad"}, "arrival"),
    ({"code": {"color": "yellow"}}, "code.color"),
    ({"code": {"reasons": ["quarantine", "unknown_tag"]}}, "code.reasons[1]"),
    ({"origin": {"color": "blue"}}, "origin.color"),
    ({"family": [{"relation": "parent"}, {"relation": "cousin"}]}, "family[1].relation"),
    ({"birth_date": "1990-02-30"}, "birth_date"),
    ({"quarantine": {"start": "2026-11-10", "end": "2026-11-01"}}, "quarantine"),
    ({"overseas": {"checkin_date": "yesterday"}}, "overseas.checkin_date"),
    ({"family": {"relation": "parent"}}, "family"),
])
def test_invalid_documents_name_the_field(doc, where):
    with pytest.raises(AccountInvalid) as exc:
        parse_account(doc)
    assert any(m.startswith(where + ":") for m in exc.value.messages), exc.value.messages


def test_error_messages_never_echo_the_value():
    # An ID number in the wrong type must not come back in the 422 body.
    with pytest.raises(AccountInvalid) as exc:
        parse_account({"id_number": 350102199001011234, "family": [{"relation": "亲戚 350102196001011234"}]})
    text = str(exc.value)
    assert "350102199001011234" not in text and "350102196001011234" not in text
    assert "id_number" in text and "family[0].relation" in text


def test_not_an_object_is_an_error():
    with pytest.raises(AccountInvalid, match="document"):
        parse_account(["not", "a", "dict"])


def test_masked_document_hides_personal_data_and_keeps_the_rest():
    m = parse_account(CONTRACT_EXAMPLE).masked_document()
    text = repr(m)
    for raw in ("林小明", "350102199001011234", "13800138000", "林大山", "350102196001011234"):
        assert raw not in text
    assert m["name"] == "林**" and m["phone"] == "138****8000"
    assert m["family"][0]["relation"] == "parent"
    assert m["code"] == CONTRACT_EXAMPLE["code"]


# Personal data in places the old deny-list never looked: a family phone, unknown fields at any
# depth, in lists and dicts, as strings and as numbers, even in a key.
HIDDEN = {
    "family": [{"relation": "parent", "name": "林大山", "id_number": "350102196001011234",
                "phone": "13700137000", "nickname": "阿山哥"}],
    "emergency_contact": {"name": "王芳", "phone": "13912345678", "id_number": 350102197001011234},
    "notes": "身份证350102199001011234",
    "contacts": [{"who": "陈建国", "tel": "13612345678",
                  "ids": ["350102198001011234", {"deep": ["张伟伟", 13512345670]}]}],
    "13512345678": "键里的手机号",
    "face_attempts": [{"at": "2026-11-26T09:30:00+08:00", "ok": False, "reason": "liveness",
                       "operator": "李四光"}],
    "code": {"color": "orange", "reasons": ["quarantine"], "since": "2026-11-01T10:00:00+08:00",
             "issued_to": "林小明"},
    "vip": True, "visits": 3,
}
HIDDEN_RAW = ("林小明", "350102199001011234", "13800138000", "林大山", "350102196001011234",
              "13700137000", "阿山哥", "王芳", "13912345678", "350102197001011234", "陈建国",
              "13612345678", "350102198001011234", "张伟伟", "13512345670", "13512345678",
              "键里的手机号", "李四光", "1990-01-01")


def hidden_document() -> dict:
    return {**CONTRACT_EXAMPLE, **HIDDEN}


def test_masked_document_masks_every_personal_value_wherever_it_is():
    import json

    m = parse_account(hidden_document()).masked_document()
    text = json.dumps(m, ensure_ascii=False)
    for raw in HIDDEN_RAW:
        assert raw not in text, raw
    # Known kinds keep their usual masks, also where the contract does not declare them.
    assert m["family"][0]["phone"] == "137****7000"
    assert m["emergency_contact"] == {"name": "王*", "phone": "139****5678",
                                      "id_number": "3501**********1234"}
    # Anything else undeclared is only a hint: it could be a bare name.
    assert m["family"][0]["nickname"] == "阿**" and m["notes"] == "身**"
    assert m["contacts"][0]["who"] == "陈**" and m["code"]["issued_to"] == "林**"
    assert m["face_attempts"][0]["operator"] == "李**"
    assert m["birth_date"] == "1990-**-**"
    assert m["vip"] is True and m["visits"] == 3           # flags and counts may stay


def test_masked_document_keeps_every_key_and_the_non_personal_values():
    doc = hidden_document()
    m = parse_account(doc).masked_document()
    assert set(m) - {"135****5678"} == set(doc) - {"13512345678"} and "135****5678" in m
    assert set(m["emergency_contact"]) == {"name", "phone", "id_number"}
    assert set(m["contacts"][0]) == {"who", "tel", "ids"} and len(m["contacts"][0]["ids"]) == 2
    for key in ("user_id", "id_type", "auth_level", "identity_check", "arrival", "origin",
                "quarantine", "overseas"):
        assert m[key] == CONTRACT_EXAMPLE[key], key
    assert {k: m["code"][k] for k in ("color", "reasons", "since")} == CONTRACT_EXAMPLE["code"]
    attempt = m["face_attempts"][0]
    assert {k: attempt[k] for k in ("at", "ok", "reason")} == CONTRACT_EXAMPLE["face_attempts"][0]
    assert m["family"][0]["relation"] == "parent"


def test_a_field_of_the_wrong_shape_is_not_half_shown():
    """mask_phone keeps 7 characters: a name written in a phone field must not keep them."""
    m = parse_account({"phone": "王芳母亲的手机号码", "family": [{"phone": "Wang Fang mobile"}],
                       "id_number": "林小明的身份证号码"}).masked_document()
    assert m == {"phone": "王**", "family": [{"phone": "W**"}], "id_number": "林**"}


def test_every_declared_field_is_in_the_admin_view():
    """A field added to the declaration must be classified (clear or masked) on purpose."""
    from diagnosis.account import ADMIN_VIEW, Code, FaceAttempt, FamilyMember, Origin, Overseas, Quarantine

    assert set(Account.model_fields) <= set(ADMIN_VIEW)
    for key, model in (("origin", Origin), ("code", Code), ("quarantine", Quarantine),
                       ("overseas", Overseas)):
        assert set(model.model_fields) <= set(ADMIN_VIEW[key]), key
    assert set(FaceAttempt.model_fields) <= set(ADMIN_VIEW["face_attempts"][0])
    assert set(FamilyMember.model_fields) <= set(ADMIN_VIEW["family"][0])


def test_assignment_is_validated():
    a = Account()
    with pytest.raises(ValueError):
        a.auth_level = "L9"


@pytest.mark.parametrize("doc, expected", [
    ({"birth_date": "2010-05-06", "id_number": "350102199001011234"}, date(2010, 5, 6)),  # declared wins
    ({"id_type": "resident_id", "id_number": "35010220080229123X"}, date(2008, 2, 29)),
    ({"id_number": "350102200801011234"}, date(2008, 1, 1)),  # id_type unknown, resident-ID shape
    ({"id_type": "passport", "id_number": "350102200801011234"}, None),
    ({"id_type": "resident_id", "id_number": "350102200813011234"}, None),  # month 13
    ({"id_type": "resident_id", "id_number": "12345"}, None),
    ({}, None),
])
def test_effective_birth_date(doc, expected):
    assert effective_birth_date(parse_account(doc)) == expected
