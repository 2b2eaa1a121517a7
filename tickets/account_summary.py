"""The masked account summary the assist panel shows beside a ticket: a few labelled lines in
plain Chinese, every personal value masked (3501**********1234, 139****1234, 林**).

Built from the account as the agent's read returns it (audited by the caller); fields the
document does not have are left out rather than shown as "unknown"."""
from __future__ import annotations

from diagnosis.account import Account
from core.pii import mask_id_number, mask_name, mask_phone

COLORS = {"green": "绿码", "orange": "橙码", "red": "红码", "none": "未申领"}
ID_TYPES = {"resident_id": "居民身份证", "passport": "护照", "hk_macau_pass": "港澳通行证",
            "taiwan_pass": "台湾居民来往大陆通行证"}
ARRIVALS = {"none": "无", "domestic": "省外来闽", "overseas": "境外入闽"}
CODE_REASONS = {"quarantine": "隔离", "origin_not_synced": "来源地码未同步", "overseas_observation": "入境医学观察",
                "risk_contact": "风险接触", "risk_area": "风险地区"}
FACE_REASONS = {"liveness": "活体检测未通过", "photo_mismatch": "照片比对不符", "identity_mismatch": "身份信息不一致",
                "poor_image": "图像质量差", "service_error": "人脸服务故障"}
RELATIONS = {"parent": "父母", "child": "子女", "spouse": "配偶"}


def _day(value) -> str:
    return value.isoformat()[:10] if value is not None else ""


def summary(account: Account | None) -> list[dict[str, str]] | None:
    """[{"label", "value"}], or None when there is no account (anonymous, or none found)."""
    if account is None:
        return None
    lines: list[tuple[str, str | None]] = [
        ("姓名", mask_name(account.name)),
        ("证件", " ".join(v for v in (ID_TYPES.get(account.id_type or ""), mask_id_number(account.id_number)) if v)),
        ("手机", mask_phone(account.phone)),
        ("出生年份", str(account.birth_date.year) if account.birth_date else None),
        ("实名等级", account.auth_level),
        ("身份核验", {"match": "一致", "mismatch": "不一致"}.get(account.identity_check or "")),
    ]
    if account.code is not None and account.code.color:
        reasons = "、".join(CODE_REASONS.get(r, r) for r in account.code.reasons or ())
        since = f"自 {_day(account.code.since)}" if account.code.since else ""
        lines.append(("健康码", " ".join(v for v in (COLORS.get(account.code.color, account.code.color),
                                                    f"({reasons})" if reasons else "", since) if v)))
    if account.arrival:
        lines.append(("行程", ARRIVALS.get(account.arrival, account.arrival)))
    if account.origin is not None and account.origin.province:
        synced = {True: "已在全国平台", False: "未在全国平台"}.get(account.origin.on_national_platform, "")
        lines.append(("来源地", " ".join(v for v in (account.origin.province,
                                                   COLORS.get(account.origin.color or "", ""), synced) if v)))
    if account.quarantine is not None and (account.quarantine.start or account.quarantine.end):
        symptoms = {True: "有症状", False: "无症状"}.get(account.quarantine.symptoms, "")
        lines.append(("隔离", " ".join(v for v in (f"{_day(account.quarantine.start)} 至 {_day(account.quarantine.end)}",
                                                  symptoms) if v)))
    if account.overseas is not None:
        parts = [f"今日打卡 {'已' if account.overseas.checkin_date else '未'}打卡" if account.overseas.checkin_date is not None else "",
                 {True: "医学观察已完成", False: "医学观察未完成"}.get(account.overseas.observation_completed, ""),
                 {True: "已登记", False: "未登记"}.get(account.overseas.registered, "")]
        if any(parts):
            lines.append(("境外", " ".join(p for p in parts if p)))
    if account.face_attempts:
        recent = account.face_attempts[-5:]
        failed = [a for a in recent if a.ok is False]
        last = recent[-1]
        text = f"最近 {len(recent)} 次 失败 {len(failed)} 次"
        if last.ok is False and last.reason:
            text += f",最近一次:{FACE_REASONS.get(last.reason, last.reason)}"
        lines.append(("人脸核验", text))
    if account.family is not None:
        members = ", ".join(f"{RELATIONS.get(m.relation or '', '家人')} {mask_name(m.name) or ''}".strip()
                            for m in account.family)
        lines.append(("家人申领", members or "无"))
    return [{"label": label, "value": value} for label, value in lines if value]
