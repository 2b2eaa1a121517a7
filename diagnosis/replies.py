"""What the assistant says about each finding: the cause in plain words, then the next step.

Every text is grounded in the seed FAQ's answers (hotline 0591-62623959 with proof, deregister and
register again, Alipay login or the 闽政通 mini-program, the 4/3/1 family quota, the daily check-in,
observation + registration for foreign passports, the national platform's upload); nothing
beyond it is promised. Simplified Chinese and English are written here; Traditional Chinese is
derived from the simplified text with opencc (s2t) when rendering, so there is one Chinese text
to maintain.

Templates are keyed code → language → variant, the variant being the finding's `basis` fact
(or "default"); each variant is a (cause, next step) pair of format strings over the finding's
facts plus the display labels `_labels` derives from them. Facts hold no raw personal data
(the rules see to that), so a rendered reply cannot carry any either.
"""
from __future__ import annotations

from functools import lru_cache
from typing import Any

from diagnosis.rules import Finding

HOTLINE = "0591-62623959"
LANGS = ("zh", "zh-hant", "en")
# Findings where a person has to act (or may help): their replies offer the 转人工/登记工单 button.
TICKET_CODES = frozenset({"orange.quarantine_release_pending", "name.mismatch", "orange.risk"})

_Variants = dict[str, tuple[str, str]]

_ZH_HOTLINE_TICKET = "我也可以为您登记热线工单，由客服人员跟进。"
_EN_HOTLINE_TICKET = "I can also open a hotline ticket for you so that customer service follows it up."
_ZH_FAMILY_OTHER = ("家人可以自己注册闽政通账户并完成L4级实名认证后自行生成健康码，"
                    "也可以由其他家人（如子女或配偶）为其申领。")
_EN_FAMILY_OTHER = ("Your family member can register a Min Zheng Tong (闽政通) account, complete L4 "
                    "real-name authentication and generate the code themselves, or another family member "
                    "(such as a child or the spouse) can apply for them.")

TEMPLATES: dict[str, dict[str, _Variants]] = {
    "orange.origin_not_synced": {
        "zh": {"default": (
            "您是省外入闽人员，{origin_label}还没有把您的健康码信息上传到全国一体化政务服务平台，"
            "闽政通获取不到，所以“八闽健康码”显示为{color_label}。这是数据同步问题。",
            "请确认已申领出发地的健康码；健康码状态以全国一体化政务服务平台的数据同步时间为准，"
            "出发地上传并同步后状态会更新。")},
        "en": {"default": (
            "You came to Fujian from another province and {origin_label} has not uploaded your health code "
            "information to the National Integrated Government Service Platform, so Min Zheng Tong (闽政通) "
            "cannot obtain it and your \"Bamin Health Code (八闽健康码)\" shows {color_label}. This is a "
            "data synchronisation problem.",
            "Make sure you have applied for the health code of your place of departure; your code's status "
            "follows the platform's synchronisation time and updates once the data has been uploaded and "
            "synchronised.")},
    },
    "orange.quarantine_release_pending": {
        "zh": {"default": (
            "您的隔离期为{quarantine_days}天，已于{quarantine_end}结束（已过去{days_since_end}天）且无症状，"
            "但健康码仍显示为橙色，说明解除隔离的信息还没有更新到您的健康码上。",
            f"请拨打{HOTLINE}客服热线反馈，并提供隔离期满的证明材料，客服人员会收集材料反馈给相关部门。"
            + _ZH_HOTLINE_TICKET)},
        "en": {"default": (
            "Your quarantine lasted {quarantine_days} days and ended on {quarantine_end} ({days_since_end} "
            "days ago) without symptoms, but your code is still orange: the end of your quarantine has not "
            "reached your health code yet.",
            f"Please call the customer service hotline {HOTLINE} and provide supporting documents as proof "
            "that your quarantine is over; customer service staff will collect them and pass them on to the "
            "relevant departments. " + _EN_HOTLINE_TICKET)},
    },
    "orange.overseas_observation": {
        "zh": {
            "in_observation": (
                "您是境外入闽人员，入境后的集中医学观察还没有完成，所以健康码显示为{color_label}。",
                "完成集中医学观察、健康数据登记到境外入闽人员健康数据管理平台后，健康码状态才会更新。"),
            "just_out": (
                "您已完成集中医学观察，但健康码上的境外入闽医学观察标记还没有解除。",
                "状态以健康数据在境外入闽人员健康数据管理平台中的登记为准；"
                f"如果迟迟没有更新，请拨打{HOTLINE}客服热线反馈。"),
            "tagged": (
                "您的健康码带有境外入闽医学观察的标记，所以显示为{color_label}。",
                "入境后完成集中医学观察、健康数据登记到境外入闽人员健康数据管理平台后，健康码状态才会更新。"),
        },
        "en": {
            "in_observation": (
                "You came to Fujian from abroad and your centralised medical observation after entry has not "
                "been completed yet, so your code shows {color_label}.",
                "Your code's status changes once the observation is completed and your health data is "
                "registered in the health data management platform for overseas arrivals in Fujian."),
            "just_out": (
                "You have completed centralised medical observation, but the observation tag on your health "
                "code has not been cleared yet.",
                "The status follows the registration of your health data in the health data management "
                "platform for overseas arrivals in Fujian; if it does not update, please call the customer "
                f"service hotline {HOTLINE}."),
            "tagged": (
                "Your health code carries the overseas arrivals medical observation tag, so it shows "
                "{color_label}.",
                "Your code's status changes once centralised medical observation after entry is completed "
                "and your health data is registered in the health data management platform for overseas "
                "arrivals in Fujian."),
        },
    },
    "orange.risk": {
        "zh": {
            "tags": (
                "您的健康码因{tags_label}显示为{color_label}，这类风险标记无法由本人自行解除。",
                "是否需要隔离等以当地政策规定为准，建议咨询当地相关部门。"),
            "symptoms": (
                "您隔离期间有症状，不属于“已隔离14天且无症状”可以反馈解除的情况，所以健康码仍显示为{color_label}，"
                "这一状态无法由本人自行解除。",
                "请按当地政策规定处理，建议咨询当地相关部门。"),
            "red": (
                "您的健康码为红色，这一状态无法由本人自行解除。",
                "请按当地政策规定处理，建议咨询当地相关部门。"),
        },
        "en": {
            "tags": (
                "Your code shows {color_label} because of {tags_label}; you cannot clear this kind of risk "
                "tag yourself.",
                "Whether you need to quarantine is determined by local policy; we suggest consulting the "
                "relevant local authorities."),
            "symptoms": (
                "You had symptoms during your quarantine, so this is not the \"quarantined for 14 days "
                "without symptoms\" case that can be reported for release; your code stays {color_label} and "
                "you cannot clear it yourself.",
                "Please follow local policy; we suggest consulting the relevant local authorities."),
            "red": (
                "Your health code is red; you cannot clear this status yourself.",
                "Please follow local policy; we suggest consulting the relevant local authorities."),
        },
    },
    "generate.auth_level_low": {
        "zh": {"default": (
            "您的实名认证等级是{auth_level}，成年人需要达到L4级并进行人脸识别认证才能生成健康码。",
            "请在闽政通App中完成L4级实名认证（人脸识别），再进入首页“八闽健康码”服务点击生成。")},
        "en": {"default": (
            "Your real-name authentication level is {auth_level}; adults need level L4, with face "
            "recognition, to generate a health code.",
            "Complete L4 real-name authentication (face recognition) in the Min Zheng Tong (闽政通) app, "
            "then open the \"Bamin Health Code (八闽健康码)\" service on the home page and tap "
            "\"Generate\".")},
    },
    "generate.minor": {
        "zh": {"default": (
            "您还未满18周岁（{age}岁），未成年人的健康码由家人代为申领。",
            "请家人登录闽政通App，进入“八闽健康码”服务，选择“为家人申领”，按要求填写您的身份信息和健康信息。")},
        "en": {"default": (
            "You are under 18 ({age}); a minor's health code is applied for by a family member.",
            "Ask a family member to log in to the Min Zheng Tong (闽政通) app, open the \"Bamin Health Code "
            "(八闽健康码)\" service, choose \"Apply for family (为家人申领)\" and fill in your identity and "
            "health information as required.")},
    },
    "generate.origin_missing": {
        "zh": {
            "not_applied": (
                "您是省外入闽人员，系统没有获取到{origin_label}的健康码。",
                "省外人员来闽需要先申领出发地的健康码，再申请“八闽健康码”。"),
            "not_uploaded": (
                "您是省外入闽人员，{origin_label}还没有把您的信息上传到全国一体化政务服务平台共享库，"
                "闽政通获取不到，所以暂时无法申领“八闽健康码”。",
                "健康码生成时间以出发地省份数据上传到全国一体化政务服务平台的时间为准，上传后即可申领。"),
        },
        "en": {
            "not_applied": (
                "You came to Fujian from another province and no health code from {origin_label} could be "
                "found.",
                "People coming to Fujian from other provinces first apply for the health code of their place "
                "of departure, then for the \"Bamin Health Code (八闽健康码)\"."),
            "not_uploaded": (
                "You came to Fujian from another province and {origin_label} has not uploaded your "
                "information to the shared database of the National Integrated Government Service Platform, "
                "so Min Zheng Tong (闽政通) cannot obtain it and the \"Bamin Health Code (八闽健康码)\" "
                "cannot be applied for yet.",
                "When the code can be generated depends on when your province of departure uploads its data "
                "to the platform; apply again after that."),
        },
    },
    "face.identity_mismatch": {
        "zh": {"default": (
            "您账户的L3实名认证身份信息与权威记录不一致，所以L4人脸识别无法通过。",
            "可在闽政通“我的”—个人用户资料—身份信息中核对姓名和证件号码（部分已脱敏）；"
            "如果信息不符，建议注销账号后重新注册并进行实名认证。")},
        "en": {"default": (
            "The L3 real-name identity on your account does not match the authority's record, so L4 face "
            "recognition cannot pass.",
            "Check the name and ID number under \"Me (我的)\" — personal user profile — identity information "
            "(partly masked); if they do not match, deregister the account, register again and complete "
            "real-name authentication.")},
    },
    "face.retry_other_login": {
        "zh": {"default": (
            "您的实名身份信息核对一致，但最近连续{failed_in_a_row}次人脸识别都没有通过。",
            "建议登录时切换登录方式，使用支付宝登录辅助认证；或者使用支付宝、微信中的“闽政通”小程序登录后，"
            "再返回闽政通App操作。")},
        "en": {"default": (
            "Your real-name identity matches, but face recognition failed {failed_in_a_row} times in a row.",
            "Switch the login method and log in with Alipay to assist the authentication, or log in through "
            "the \"Min Zheng Tong (闽政通)\" mini-program in Alipay or WeChat and then return to the app.")},
    },
    "face.service_error": {
        "zh": {"default": (
            "您最近一次人脸识别失败是因为人脸识别服务本身出现异常，不是您的原因。",
            "请稍后再试。")},
        "en": {"default": (
            "Your latest face recognition failed because the face recognition service itself had an error, "
            "not because of you.",
            "Please try again later.")},
    },
    "name.mismatch": {
        "zh": {
            "default": (
                "健康码上的姓名与本人不一致，需要客服人员核实处理。",
                f"请拨打{HOTLINE}客服热线反馈，客服人员会跟进处理。" + _ZH_HOTLINE_TICKET),
            "masked": (
                "健康码上的姓名与本人不一致，需要客服人员核实处理。您账户登记的姓名是“{masked_name}”（已脱敏），"
                "可以先对照一下。",
                f"请拨打{HOTLINE}客服热线反馈，客服人员会跟进处理。" + _ZH_HOTLINE_TICKET),
        },
        "en": {
            "default": (
                "A name on the health code that differs from yours has to be checked by customer service.",
                f"Please call the customer service hotline {HOTLINE}; customer service staff will follow up. "
                + _EN_HOTLINE_TICKET),
            "masked": (
                "A name on the health code that differs from yours has to be checked by customer service. "
                "The name on your account is \"{masked_name}\" (masked), for you to compare.",
                f"Please call the customer service hotline {HOTLINE}; customer service staff will follow up. "
                + _EN_HOTLINE_TICKET),
        },
    },
    "family.blocked_orange": {
        "zh": {"default": (
            "您本人的健康码目前是{color_label}，个人健康码为橙码的用户暂不支持为家人申领健康码。",
            "请先处理本人健康码的问题（可以问我“我的健康码为什么是橙色”），恢复正常后再为家人申领。"
            + _ZH_FAMILY_OTHER)},
        "en": {"default": (
            "Your own health code is currently {color_label}; users whose own code is orange cannot apply "
            "for family members for the time being.",
            "Sort out your own code first (ask me \"why is my code orange\"), then apply for your family. "
            + _EN_FAMILY_OTHER)},
    },
    "family.blocked_domestic_arrival": {
        "zh": {"default": (
            "您的账户登记为省外入闽人员，省外入闽人员暂不支持为家人申领健康码。",
            _ZH_FAMILY_OTHER)},
        "en": {"default": (
            "Your account is registered as having come to Fujian from another province; such users cannot "
            "apply for family members for the time being.",
            _EN_FAMILY_OTHER)},
    },
    "family.blocked_overseas_arrival": {
        "zh": {"default": (
            "您的账户登记为境外入闽人员，境外入闽人员暂不支持为家人申领健康码。",
            _ZH_FAMILY_OTHER)},
        "en": {"default": (
            "Your account is registered as having come to Fujian from abroad; such users cannot apply for "
            "family members for the time being.",
            _EN_FAMILY_OTHER)},
    },
    "family.quota_full": {
        "zh": {
            "relation": (
                "您已为{used}名{relation_label}申领健康码，{relation_label}最多{limit}名，名额已满。"
                "每个用户最多可为8名家人申领：4名父母（含配偶父母）、3名子女和1名配偶。",
                _ZH_FAMILY_OTHER),
            "total": (
                "您已为{used}名家人申领健康码，达到上限。"
                "每个用户最多可为8名家人申领：4名父母（含配偶父母）、3名子女和1名配偶。",
                _ZH_FAMILY_OTHER),
        },
        "en": {
            "relation": (
                "You have already applied for {used} {relation_label}, the most allowed ({limit}), so no "
                "slot is left. Each user can apply for at most 8 family members: 4 parents (including the "
                "spouse's parents), 3 children and 1 spouse.",
                _EN_FAMILY_OTHER),
            "total": (
                "You have already applied for {used} family members, the most allowed. Each user can apply "
                "for at most 8 family members: 4 parents (including the spouse's parents), 3 children and 1 "
                "spouse.",
                _EN_FAMILY_OTHER),
        },
    },
    "overseas.checkin_missing": {
        "zh": {"default": (
            "您今天还没有完成健康打卡（上次打卡是{last_checkin}），所以生成不了“境外入闽健康码”。",
            "每天首次进入“境外入闽健康码”服务页面时，需要按真实、完整的信息进行健康打卡，"
            "提交成功后即可生成。请现在进入服务页面完成打卡。")},
        "en": {"default": (
            "You have not done today's health check-in yet (the last one was on {last_checkin}), so the "
            "\"Overseas Arrivals Health Code (境外入闽健康码)\" cannot be generated.",
            "Every day, the first time you enter the service page you must complete a health check-in with "
            "true and complete information; the code is generated once it has been submitted. Please open "
            "the service page and check in now.")},
    },
    "overseas.not_eligible": {
        "zh": {"default": (
            "您持外国护照申领，目前{missing_label}。",
            "持外国护照的人员需入境后已完成集中医学观察、且健康数据已登记在境外入闽人员健康数据管理平台中，"
            "才能申领“境外入闽健康码”；其他情况暂时无法申领。")},
        "en": {"default": (
            "You are applying with a foreign passport, and {missing_label}.",
            "Foreign passport holders can apply for the \"Overseas Arrivals Health Code (境外入闽健康码)\" "
            "once they have completed centralised medical observation after entry and their health data is "
            "registered in the health data management platform for overseas arrivals in Fujian; in other "
            "cases it cannot be applied for yet.")},
    },
    "ok": {
        "zh": {
            "orange": (
                "您的账户显示健康码当前为绿色，没有发现导致橙码的原因。",
                "请重新打开“八闽健康码”页面查看最新状态（健康码有效期为1分钟，截图不能代表当前状态）。"),
            "generate": (
                "您的账户满足生成健康码的条件，没有发现阻碍生成的原因。",
                "请登录闽政通App，进入首页“八闽健康码”服务，点击生成即可。"),
            "face_passed": (
                "您的实名身份信息核对一致，最近一次人脸识别已经通过。",
                "可以直接进入“八闽健康码”服务继续操作。"),
            "face_no_attempts": (
                "您的实名身份信息核对一致，账户中没有人脸识别失败的记录。",
                "可以在闽政通App中进行L4人脸识别认证；如果多次不通过，可以切换支付宝登录辅助认证。"),
            "family": (
                "您的账户目前可以为家人申领健康码（{free_label}）。",
                "登录闽政通App—进入“八闽健康码”服务—选择“为家人申领”—按要求填写家人身份信息和健康信息。"),
            "family_relation": (
                "您的账户目前可以为{relation_label}申领健康码（已申领{used}名，最多{limit}名）。",
                "登录闽政通App—进入“八闽健康码”服务—选择“为家人申领”—按要求填写家人身份信息和健康信息。"),
            "overseas": (
                "您今天已完成健康打卡，账户中没有发现无法申领“境外入闽健康码”的原因。",
                "请进入首页“境外入闽健康码”服务查看。"),
        },
        "en": {
            "orange": (
                "Your account shows that your code is green now; nothing on it would make the code orange.",
                "Open the \"Bamin Health Code (八闽健康码)\" page again to see the current status (a code is "
                "valid for 1 minute, so a screenshot does not show the current status)."),
            "generate": (
                "Your account meets the conditions for generating a health code; nothing on it blocks "
                "generation.",
                "Log in to the Min Zheng Tong (闽政通) app, open the \"Bamin Health Code (八闽健康码)\" "
                "service on the home page and tap \"Generate\"."),
            "face_passed": (
                "Your real-name identity matches and your latest face recognition passed.",
                "You can go straight on in the \"Bamin Health Code (八闽健康码)\" service."),
            "face_no_attempts": (
                "Your real-name identity matches and your account shows no failed face recognition.",
                "You can do L4 face recognition in the Min Zheng Tong (闽政通) app; if it keeps failing, "
                "switch to Alipay login to assist the authentication."),
            "family": (
                "Your account can apply for family members now ({free_label}).",
                "Log in to the Min Zheng Tong (闽政通) app — open the \"Bamin Health Code (八闽健康码)\" "
                "service — choose \"Apply for family (为家人申领)\" — fill in your family member's identity "
                "and health information as required."),
            "family_relation": (
                "Your account can apply for a {relation_one} now ({used} of {limit} used).",
                "Log in to the Min Zheng Tong (闽政通) app — open the \"Bamin Health Code (八闽健康码)\" "
                "service — choose \"Apply for family (为家人申领)\" — fill in your family member's identity "
                "and health information as required."),
            "overseas": (
                "You have done today's health check-in and nothing on your account stops the \"Overseas "
                "Arrivals Health Code (境外入闽健康码)\".",
                "Open the \"Overseas Arrivals Health Code (境外入闽健康码)\" service on the home page."),
        },
    },
}

_COLOR = {"zh": {"green": "绿色", "orange": "橙色", "red": "红色"},
          "en": {"green": "green", "orange": "orange", "red": "red"}}
_RELATION = {"zh": {"parent": "父母", "child": "子女", "spouse": "配偶"},
             "en": {"parent": "parents", "child": "children", "spouse": "spouse"}}
_RELATION_ONE = {"parent": "parent", "child": "child", "spouse": "spouse"}
_TAG = {"zh": {"risk_contact": "密切接触风险", "risk_area": "到访风险地区"},
        "en": {"risk_contact": "a risk contact", "risk_area": "a stay in a risk area"}}


def _labels(facts: dict[str, Any], lang: str) -> dict[str, Any]:
    """Facts turned into words of the template's language (colour, relation, tags, …)."""
    zh = lang == "zh"
    out = dict(facts)
    out["color_label"] = _COLOR[lang].get(facts.get("color") or "orange", facts.get("color"))
    province = facts.get("province")
    if zh:
        out["origin_label"] = f"出发地（{province}）" if province else "出发地"
    else:
        out["origin_label"] = "your place of departure" + (f" ({province})" if province else "")
    if facts.get("relation"):
        out["relation_label"] = _RELATION[lang][facts["relation"]]
        out["relation_one"] = _RELATION_ONE[facts["relation"]]
    tags = [_TAG[lang][t] for t in facts.get("tags", ())]
    out["tags_label"] = ("、" if zh else " and ").join(tags)
    free = facts.get("free")
    if isinstance(free, dict):
        if zh:
            parts = [f"{_RELATION['zh'][r]}{n}名" for r, n in free.items()]
            out["free_label"] = "还可申领：" + "、".join(parts)
        else:
            parts = [f"{n} for {_RELATION['en'][r]}" for r, n in free.items()]
            out["free_label"] = "slots left: " + ", ".join(parts)
    missing = []
    if facts.get("observation_completed") is False:
        missing.append("尚未完成入境后的集中医学观察" if zh else
                       "your centralised medical observation after entry is not completed")
    if facts.get("registered") is False:
        missing.append("健康数据尚未登记在境外入闽人员健康数据管理平台中" if zh else
                       "your health data is not registered in the health data management platform "
                       "for overseas arrivals in Fujian")
    out["missing_label"] = ("，" if zh else ", and ").join(missing)
    return out


@lru_cache(maxsize=1)
def _s2t():
    import opencc  # opencc-python-reimplemented: pure Python, built once on first Traditional reply

    return opencc.OpenCC("s2t")


def _template(code: str, lang: str, basis: str | None) -> tuple[str, str]:
    if lang not in LANGS:
        raise ValueError(f"unknown language {lang!r}; expected one of {', '.join(LANGS)}")
    variants = TEMPLATES[code]["en" if lang == "en" else "zh"]
    if basis in variants:
        return variants[basis]
    return variants.get("default") or next(iter(variants.values()))


def _finish(text: str, lang: str) -> str:
    return _s2t().convert(text) if lang == "zh-hant" else text


def render_one(f: Finding, lang: str) -> str:
    cause, step = _template(f.code, lang, f.facts.get("basis"))
    facts = _labels(dict(f.facts), "en" if lang == "en" else "zh")
    sep = " " if lang == "en" else ""
    return _finish(cause.format(**facts) + sep + step.format(**facts), lang)


def render(findings: list[Finding], lang: str) -> list[str]:
    """One short paragraph per finding (cause + next step), in the findings' order."""
    return [render_one(f, lang) for f in findings]


def next_step(code: str, lang: str, facts: dict[str, Any] | None = None) -> str:
    """Only the next step, for follow-ups on a finding (「那我该怎么办」「要多久」)."""
    facts = dict(facts or {})
    _cause, step = _template(code, lang, facts.get("basis"))
    return _finish(step.format(**_labels(facts, "en" if lang == "en" else "zh")), lang)


def ticket_offered(code: str) -> bool:
    """Whether the reply offers a hotline ticket (staff must act: quarantine release, wrong name;
    or may help: a risk tag the user cannot clear)."""
    return code in TICKET_CODES
