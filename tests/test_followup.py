"""Follow-up detection and the FAQ service's decisions, with a scripted retriever (no model)."""
from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from assistant import faq, feedback, followup, runtime
from retrieval.types import Hit, SearchResult
from tests._retrieval_fakes import entry
from retrieval.types import KnowledgeBase

KB = KnowledgeBase(entries=(
    entry("family.howto", "为家人申领健康码操作流程", "登录后点为家人申领。", question_en="Applying for family"),
    entry("family.elderly", "超过55周岁的人员要如何生成使用健康码?", "家人代为申领。",
          question_en="People over 55", answer_en="A family member applies."),
    entry("family.quota", "一个人能为几个家人申领健康码?", "最多8名。", question_en="How many family members?"),
    entry("personal.screenshot", "健康码可以截图使用吗?", "不能。", question_en="Screenshot?",
          answer_en="No."),
    entry("overseas.foreigner_bamin", "外籍人士可以申领八闽健康码吗?", "可以申领境外入闽健康码。",
          question_en="Foreigners?"),
), version="kb-test")


@dataclass
class Params:
    margin: float = 0.15
    t_suggest: float = 0.2


@dataclass
class ScriptedRetriever:
    """search(q) returns what the script says for q (all entries, best first); else "none"."""
    script: dict[str, tuple[str, list[tuple[str, float]]]]
    kb: KnowledgeBase = KB
    params: Params = field(default_factory=Params)
    asked: list[str] = field(default_factory=list)

    def search(self, query: str, k: int = 3) -> SearchResult:
        self.asked.append(query)
        decision, scored = self.script.get(query, ("none", []))
        hits = tuple(Hit(i, self.kb.get(i).question, s) for i, s in scored)[:k]
        return SearchResult(query=query, decision=decision, results=hits, kb_version=self.kb.version)


@pytest.fixture
def recorded(monkeypatch):
    calls = []
    monkeypatch.setattr(feedback, "record_unanswered", lambda *a: calls.append(a), raising=False)
    return calls


def use(monkeypatch, script) -> ScriptedRetriever:
    retriever = ScriptedRetriever(script)
    monkeypatch.setattr(runtime, "_retriever", retriever)
    return retriever


# --- the detector ------------------------------------------------------------------------------
@pytest.mark.parametrize("text", ["那最多几个?", "老人呢?", "那外国人呢", "截图呢", "还有别的办法吗",
                                  "如果还是橙码呢", "what about elderly people?", "and how many at most?",
                                  "What if it is still orange", "How about screenshots"])
def test_elliptical_follow_ups_are_detected(text):
    assert followup.is_followup(text)


@pytest.mark.parametrize("text", ["健康码可以截图吗", "怎么为家人申领", "你好", "谢谢", "hello", "thanks",
                                  "can I use a screenshot of my code",
                                  "那个健康码到底要怎么样才能够在闽政通里面申领出来呢",   # long: own topic
                                  "/choose_faq{\"faq_id\":\"family.quota\"}", "",
                                  "and then I tried again and again but the face check failed every time"])
def test_full_questions_greetings_and_payloads_are_not_follow_ups(text):
    assert not followup.is_followup(text)


# --- follow-ups through the service ------------------------------------------------------------
def test_follow_up_takes_a_confident_enriched_result(monkeypatch, recorded):
    r = use(monkeypatch, {
        "那最多几个?": ("clarify", [("family.quota", 0.30), ("family.howto", 0.2)]),
        f"{KB.get('family.howto').title} 那最多几个?": ("answer", [("family.quota", 0.8), ("family.howto", 0.4)]),
    })
    reply = faq.answer("那最多几个?", "zh", previous_faq_id="family.howto", conversation_id="c1")
    assert r.asked == ["那最多几个?", f"{KB.get('family.howto').title} 那最多几个?"]
    assert reply.meta["faq_id"] == "family.quota"
    assert reply.meta["followup_of"] == "family.howto"
    assert reply.meta["kb_version"] == "kb-test"
    assert reply.messages[0].text == "最多8名。"
    assert recorded == []


def test_enriched_result_that_only_repeats_the_previous_entry_is_not_taken(monkeypatch, recorded):
    use(monkeypatch, {
        "截图呢": ("clarify", [("personal.screenshot", 0.3), ("family.howto", 0.25)]),
        f"{KB.get('family.howto').title} 截图呢":
            ("answer", [("family.howto", 0.9), ("personal.screenshot", 0.3)]),
    })
    reply = faq.answer("截图呢", "zh", previous_faq_id="family.howto", conversation_id="c1")
    # The title's own words pulled towards family.howto; the bare question did not: ask back.
    assert reply.meta["decision"] == "clarify"
    assert recorded and recorded[0][2] == "clarify"


def test_enriched_previous_entry_is_taken_when_the_bare_question_agrees(monkeypatch, recorded):
    use(monkeypatch, {
        "配偶呢": ("none", [("family.quota", 0.1)]),
        f"{KB.get('family.quota').title} 配偶呢": ("answer", [("family.quota", 0.7), ("family.howto", 0.2)]),
    })
    reply = faq.answer("配偶呢", "zh", previous_faq_id="family.quota", conversation_id="c1")
    assert reply.meta["faq_id"] == "family.quota"


def test_same_topic_close_call_is_answered(monkeypatch, recorded):
    # 老人呢: the bare question ranks family.elderly first but below the answer threshold; it is
    # in the previous entry's section and leads the rest of that section by the margin.
    use(monkeypatch, {"老人呢?": ("clarify", [("family.elderly", 0.36), ("family.howto", 0.19),
                                              ("personal.screenshot", 0.18)])})
    reply = faq.answer("老人呢?", "en", previous_faq_id="family.howto", conversation_id="c1")
    assert reply.meta["faq_id"] == "family.elderly"
    assert reply.messages[0].text == "A family member applies."   # English answer for "en"


@pytest.mark.parametrize("script, previous", [
    # the lead inside the section is below the margin
    ({"老人呢?": ("clarify", [("family.elderly", 0.30), ("family.quota", 0.2)])}, "family.howto"),
    # the best entry is in another section than the previous answer
    ({"老人呢?": ("clarify", [("personal.screenshot", 0.36), ("family.quota", 0.1)])}, "family.howto"),
    # nothing close at all stays "none"
    ({"老人呢?": ("none", [("family.elderly", 0.05)])}, "family.howto"),
    # an id the (reloaded) KB no longer has
    ({"老人呢?": ("clarify", [("family.elderly", 0.36), ("family.howto", 0.1)])}, "family.gone"),
])
def test_follow_up_without_enough_evidence_is_not_answered(monkeypatch, recorded, script, previous):
    use(monkeypatch, script)
    reply = faq.answer("老人呢?", "zh", previous_faq_id=previous, conversation_id="c1")
    assert reply.meta["faq_id"] is None
    assert "followup_of" not in reply.meta


def test_confident_question_ignores_the_previous_topic(monkeypatch, recorded):
    r = use(monkeypatch, {"那外国人呢": ("answer", [("overseas.foreigner_bamin", 0.6), ("family.howto", 0.1)])})
    reply = faq.answer("那外国人呢", "zh", previous_faq_id="family.howto", conversation_id="c1")
    assert reply.meta["faq_id"] == "overseas.foreigner_bamin"
    assert "followup_of" not in reply.meta
    assert r.asked == ["那外国人呢"]   # no second search when the question stands alone


def test_a_full_question_is_not_enriched(monkeypatch, recorded):
    r = use(monkeypatch, {"健康码可以截图吗": ("clarify", [("personal.screenshot", 0.3), ("family.howto", 0.1)])})
    faq.answer("健康码可以截图吗", "zh", previous_faq_id="family.howto", conversation_id="c1")
    assert r.asked == ["健康码可以截图吗"]


# --- the three decisions -----------------------------------------------------------------------
def test_clarify_offers_titles_plus_none_of_these_and_a_person(monkeypatch, recorded):
    use(monkeypatch, {"家人的码": ("clarify", [("family.howto", 0.4), ("family.quota", 0.35),
                                               ("family.elderly", 0.3), ("personal.screenshot", 0.2)])})
    reply = faq.answer("家人的码", "zh", conversation_id="conv-9")
    (message,) = reply.messages
    assert [b.title for b in message.buttons] == [KB.get("family.howto").title, KB.get("family.quota").title,
                                                  KB.get("family.elderly").title, "都不是", "转人工"]
    assert [b.payload for b in message.buttons][-2:] == ["/deny", "/request_human"]
    assert message.buttons[0].payload == '/choose_faq{"faq_id":"family.howto"}'
    assert reply.meta["decision"] == "clarify" and reply.meta["kb_version"] == "kb-test"
    # Stored for the KB editors: the conversation, text, decision, the offered hits, lang, version.
    (call,) = recorded
    assert call[0] == "conv-9" and call[1] == "家人的码" and call[2] == "clarify"
    assert [h.faq_id for h in call[3]] == ["family.howto", "family.quota", "family.elderly"]
    assert call[4:] == ("zh", "kb-test")


def test_clarify_in_english_uses_english_titles(monkeypatch, recorded):
    use(monkeypatch, {"family code": ("clarify", [("family.howto", 0.4), ("family.quota", 0.35)])})
    titles = [b.title for b in faq.answer("family code", "en").messages[0].buttons]
    assert titles == ["Applying for family", "How many family members?", "None of these", "Talk to a person"]


def test_nothing_close_says_so_with_the_hotline(monkeypatch, recorded):
    use(monkeypatch, {"明天下雨吗": ("none", [("family.howto", 0.01)])})
    reply = faq.answer("明天下雨吗", "zh", conversation_id="c2")
    assert "0591-62623959" in reply.messages[0].text
    assert len(reply.messages) == 1          # 0.01 is below t_suggest: no "related" buttons
    assert reply.meta == {"faq_id": None, "decision": "none", "kb_version": "kb-test", "lang": "zh",
                          "candidates": ["family.howto"]}
    assert recorded[0][2] == "none"


def test_a_failing_feedback_store_does_not_break_the_answer(monkeypatch):
    def broken(*_):
        raise RuntimeError("db down")

    monkeypatch.setattr(feedback, "record_unanswered", broken, raising=False)
    use(monkeypatch, {"明天下雨吗": ("none", [])})
    assert faq.answer("明天下雨吗", "zh", conversation_id="c2").meta["decision"] == "none"


def test_without_the_feedback_store_nothing_is_recorded(monkeypatch):
    monkeypatch.delattr(feedback, "record_unanswered", raising=False)
    use(monkeypatch, {"明天下雨吗": ("none", [])})
    assert faq.answer("明天下雨吗", "zh", conversation_id="c2").meta["decision"] == "none"


def test_answer_by_id_carries_the_kb_version_and_unknown_ids_get_the_hotline(monkeypatch):
    use(monkeypatch, {})
    assert faq.answer_by_id("family.quota", "zh").meta["kb_version"] == "kb-test"
    unknown = faq.answer_by_id("family.nope", "zh")
    assert unknown.meta["decision"] == "none" and "0591-62623959" in unknown.messages[0].text
