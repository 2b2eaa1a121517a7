"""Explain the signed-in user's own situation for one topic: the service behind the diagnosis actions.

The user id comes only from the message metadata the app sets from a verified session token;
anonymous users are asked to sign in and shown nothing about any account.
"""
from __future__ import annotations

import json
import logging
import re
from datetime import datetime, timedelta, timezone

from accounts import service as accounts
from accounts.source import SourceUnavailable
from assistant import runtime
from assistant.faq import entry_title
from assistant.texts import HOTLINE
from assistant.texts import text as fixed_text
from assistant.types import Button, Message, Reply
from core.logs import log_event
from diagnosis import replies, rules
from retrieval.text import normalize
from retrieval.types import KnowledgeBase

log = logging.getLogger("hc.diagnose")
CHINA = timezone(timedelta(hours=8))

# Which relation a family question is about, from the words people use (我妈 → parent, 岳父 → parent …).
_RELATION_WORDS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("parent", ("岳父", "岳母", "丈母娘", "老丈人", "公公", "婆婆", "父亲", "母亲", "爸爸", "妈妈", "爸妈",
                "父母", "老爸", "老妈", "我爸", "我妈", "老人家", "mother", "father", "mom", "mum", "dad",
                "parent", "in-law")),
    ("child", ("儿子", "女儿", "孩子", "小孩", "闺女", "娃", "宝宝", "子女", "son", "daughter", "child",
               "kid", "baby")),
    ("spouse", ("老婆", "老公", "妻子", "丈夫", "爱人", "媳妇", "配偶", "太太", "先生", "wife", "husband",
                "spouse", "partner")),
)

SIGN_IN = {
    "zh": "要查看您本人账户的情况,请先登录:在闽政通App或小程序中打开本客服并完成登录,然后再问我一次。",
    "en": "To look at your own account, please sign in first: open this chat from the Min Zheng Tong "
          "(闽政通) app or mini-program and log in, then ask me again.",
}
NO_ACCOUNT = {
    "zh": f"暂时查不到您账户的健康码数据。如需帮助,请拨打客服热线{HOTLINE}。",
    "en": f"I can't find health-code data for your account right now. For help, call the hotline {HOTLINE}.",
}
UNAVAILABLE = {
    "zh": f"账户信息暂时无法查询,请稍后再试,或拨打客服热线{HOTLINE}。",
    "en": f"Account data can't be reached right now; please try again later or call the hotline {HOTLINE}.",
}


def _pick(table: dict[str, str], lang: str) -> str:
    return table["en"] if lang == "en" else table["zh"]


def relation_in(text: str) -> str | None:
    low = text.lower()
    for relation, words in _RELATION_WORDS:
        for word in words:
            if (re.search(rf"\b{re.escape(word)}", low) if word.isascii() else word in text):
                return relation
    return None


def china_today():
    return datetime.now(CHINA).date()


def explain(user_id: str | None, topic: str, *, conversation_id: str, lang: str = "zh",
            text: str = "", relation: str | None = None) -> Reply:
    """Findings for `topic` as a reply; meta.diagnosis carries the codes (empty when none apply)."""
    if topic not in rules.TOPICS:
        raise ValueError(f"unknown diagnosis topic {topic!r}")
    if user_id is None:
        return Reply((Message(_pick(SIGN_IN, lang)),), {"diagnosis": [], "signin_required": True,
                                                      "diagnosis_topic": topic})
    try:
        account = accounts.read_account_for(user_id, conversation_id=conversation_id, actor="bot",
                                            purpose=f"diagnosis:{topic}")
    except SourceUnavailable:
        return Reply((Message(_pick(UNAVAILABLE, lang)),), {"diagnosis": [], "diagnosis_topic": topic})
    if account is None:
        return Reply((Message(_pick(NO_ACCOUNT, lang)),), {"diagnosis": [], "diagnosis_topic": topic})
    relation = relation or (relation_in(text) if topic == "family" else None)
    findings = rules.diagnose(account, topic, today=china_today(), relation=relation)
    codes = rules.codes(findings)
    log_event(log, "diagnosis", user=accounts.user_ref(user_id), topic=topic, codes=codes)
    if not findings:
        return Reply((), {"diagnosis": [], "diagnosis_topic": topic})
    # zh-hant is converted from zh at the edge (assistant.lang), like every other reply.
    paragraphs = replies.render(findings, "en" if lang == "en" else "zh")
    messages = [Message(p) for p in paragraphs]
    if any(replies.ticket_offered(c) for c in codes):
        messages[-1] = Message(messages[-1].text, (Button(fixed_text("ticket_button", lang), "/request_human"),))
    return Reply(tuple(messages), {"diagnosis": codes, "diagnosis_topic": topic})


def next_step(codes: list[str], lang: str = "zh") -> Reply:
    """A follow-up on the last finding (「那我该怎么办」「要多久」): its next step again, in short."""
    steps = [replies.next_step(c, "en" if lang == "en" else "zh") for c in codes if c != "ok"]
    if not steps:
        return Reply((), {"diagnosis": codes})
    return Reply(tuple(Message(s) for s in steps), {"diagnosis": codes})


# --- why is my code orange, when the account does not say ----------------------------------------
# Two FAQ entries explain an orange code. Unless the user's words point at one of them, neither
# may be given as *the* reason: both are offered, and signing in is what would tell which applies.
ORANGE_QUARANTINE = "personal.orange_after_quarantine"
ORANGE_MUTUAL = "domestic.mutual_orange"
ORANGE_ENTRIES = (ORANGE_QUARANTINE, ORANGE_MUTUAL)
# Words that name a cause, matched on normalize()d text (lower-case, simplified, typos fixed).
_ORANGE_CUES: dict[str, tuple[str, ...]] = {
    ORANGE_QUARANTINE: ("隔离", "14天", "十四天", "两周", "两个星期", "quarantin", "isolat", "14 days",
                        "14-day", "fourteen days", "two weeks"),
    ORANGE_MUTUAL: ("外省", "省外", "别的省", "其他省", "其它省", "两个省", "本省", "原籍", "老家", "外地",
                    "出发地", "出发省", "互认", "互通", "同步", "北京", "上海", "天津", "重庆", "广东",
                    "浙江", "江苏", "江西", "湖南", "湖北", "河南", "河北", "山东", "山西", "陕西", "安徽",
                    "四川", "贵州", "云南", "广西", "海南", "甘肃", "青海", "宁夏", "新疆", "西藏", "内蒙",
                    "黑龙江", "吉林", "辽宁",
                    "other province", "another province", "home province", "my province", "own province",
                    "departure", "origin", "mutual", "recogni", "sync", "beijing", "shanghai", "tianjin",
                    "chongqing", "guangdong", "zhejiang", "jiangsu", "jiangxi", "hunan", "hubei", "henan",
                    "hebei", "shandong", "shanxi", "shaanxi", "anhui", "sichuan", "guizhou", "yunnan",
                    "guangxi", "hainan", "gansu", "qinghai", "ningxia", "xinjiang", "tibet", "mongolia",
                    "heilongjiang", "jilin", "liaoning"),
}


def orange_cause(text: str) -> str | None:
    """The orange entry the user's own words point at (隔离14天 → after quarantine; 外省 / 出发地 /
    互认 → mutual recognition), or None when they name neither or both."""
    low = normalize(text)
    named = [faq_id for faq_id, cues in _ORANGE_CUES.items() if any(cue in low for cue in cues)]
    return named[0] if len(named) == 1 else None


def _choose_payload(faq_id: str) -> str:
    # The same payload as the FAQ service's clarification buttons (action_answer_faq_by_id).
    return "/choose_faq" + json.dumps({"faq_id": faq_id}, ensure_ascii=False, separators=(",", ":"))


def orange_causes(found: Reply, lang: str = "zh", *, kb: KnowledgeBase | None = None) -> Reply:
    """「我的码为什么是橙的」 that neither the user's words (orange_cause) nor their account settled:
    both causes in short with each entry as a button, then what `found` (explain's reply) said;
    for an anonymous user, instead of the plain sign-in message, that signing in would tell which
    cause is theirs. Decision "clarify": a 都不是 next gets the clarification's own reply."""
    if kb is None:
        kb = runtime.retriever().kb
    buttons = tuple(Button(entry_title(kb.get(faq_id), lang), _choose_payload(faq_id))
                    for faq_id in ORANGE_ENTRIES if faq_id in kb.ids)
    own = ((Message(fixed_text("orange_sign_in", lang)),) if found.meta.get("signin_required")
           else found.messages)
    meta = {**found.meta, "faq_id": None, "decision": "clarify", "kb_version": kb.version, "lang": lang,
            "candidates": list(ORANGE_ENTRIES), "diagnosis": [], "diagnosis_topic": "orange"}
    return Reply((Message(fixed_text("orange_causes", lang), buttons),) + own, meta)
