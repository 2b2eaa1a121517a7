"""Demo accounts, one per diagnosis family, loaded only when HC_DEMO=1.

Every document is fictitious and says so in `demo_label` (unknown fields are kept by the store),
and every user id starts with "demo-". Neither makes an account a demo one: the store's is_demo
flag, set only by `load`, does. Dates are relative to today so the cases stay true.
"""
from __future__ import annotations

from datetime import date, timedelta

from accounts import service
from diagnosis.account import parse_account

PREFIX = "demo-"


def _base(user_id: str, label: str, name: str, **fields) -> dict:
    doc = {
        "user_id": user_id, "demo_label": f"演示账户(虚构数据): {label}",
        "name": name, "id_type": "resident_id", "id_number": "350102199001010000",
        "phone": "13800000000", "birth_date": "1990-01-01", "auth_level": "L4",
        "identity_check": "match", "face_attempts": [], "arrival": "none",
        "code": {"color": "green", "reasons": []}, "family": [],
    }
    doc.update(fields)
    return doc


def documents(today: date) -> list[dict]:
    d = lambda days: (today - timedelta(days=days)).isoformat()  # noqa: E731
    t = lambda days: f"{d(days)}T09:30:00+08:00"  # noqa: E731
    return [
        _base("demo-orange-quarantine", "隔离14天已结束无症状,仍为橙码", "演示甲",
              code={"color": "orange", "reasons": ["quarantine"], "since": t(20)},
              quarantine={"start": d(20), "end": d(5), "symptoms": False}),
        _base("demo-orange-origin", "省外入闽,出发地健康码未同步", "演示乙", arrival="domestic",
              origin={"province": "广东", "on_national_platform": False, "color": "green"},
              code={"color": "orange", "reasons": ["origin_not_synced"], "since": t(1)}),
        _base("demo-orange-overseas", "境外入闽,医学观察中", "演示丙", arrival="overseas",
              id_type="passport", id_number="E12345678",
              code={"color": "orange", "reasons": ["overseas_observation"], "since": t(3)},
              overseas={"checkin_date": d(0), "observation_completed": False, "registered": True}),
        _base("demo-face-mismatch", "L3实名信息与权威记录不一致", "演示丁", auth_level="L3",
              identity_check="mismatch",
              face_attempts=[{"at": t(1), "ok": False, "reason": "identity_mismatch"}]),
        _base("demo-face-retry", "信息相符但人脸识别屡次失败", "演示戊", auth_level="L3",
              face_attempts=[{"at": t(1), "ok": False, "reason": "liveness"},
                             {"at": t(0), "ok": False, "reason": "poor_image"}]),
        _base("demo-minor", "未成年人", "演示己", auth_level="L2", birth_date=d(365 * 12),
              code={"color": "none"}),
        _base("demo-family-full", "为家人申领:子女名额已满", "演示庚",
              family=[{"relation": "child", "name": f"演示子女{i}", "id_number": "350102201001010000"}
                      for i in range(1, 4)]),
        _base("demo-overseas-checkin", "境外入闽,今日未健康打卡", "演示辛", arrival="overseas",
              code={"color": "none"},
              overseas={"checkin_date": d(1), "observation_completed": True, "registered": True}),
    ]


def load(today: date) -> list[str]:
    """Create or replace the demo accounts, flagged as demo in the store (the only accounts demo
    sign-in opens); returns the user ids stored. An id that a real account holds (an admin stored
    it) is left alone and not returned."""
    ids = []
    for doc in documents(today):
        if service.put_demo_account(doc["user_id"], parse_account(doc)) is not None:
            ids.append(doc["user_id"])
    return ids
