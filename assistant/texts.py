"""Fixed sentences of the FAQ service in each language (Traditional is converted from zh at the edge)."""
from __future__ import annotations

HOTLINE = "0591-62623959"

TEXTS: dict[str, dict[str, str]] = {
    "helpful_prompt": {"zh": "这个回答对您有帮助吗?", "en": "Did this answer help?"},
    "helpful_yes": {"zh": "有帮助", "en": "Helpful"},
    "helpful_no": {"zh": "没帮助", "en": "Not helpful"},
    "clarify": {"zh": "您想问的是下面哪个问题?请点选:", "en": "Which of these did you mean? Please pick one:"},
    "none_of_these": {"zh": "都不是", "en": "None of these"},
    "to_human": {"zh": "转人工", "en": "Talk to a person"},
    "no_answer": {
        "zh": f"抱歉,这个问题我暂时无法准确回答。我可以解答“八闽健康码”申领和使用方面的问题;"
              f"其他问题请拨打客服热线{HOTLINE}。",
        "en": f"Sorry, I can't answer that reliably. I can help with applying for and using the "
              f"Bamin Health Code; for anything else please call the hotline {HOTLINE}.",
    },
    "no_answer_closest": {"zh": "您可以看看这些相关问题:", "en": "These related questions may help:"},
    "too_long": {
        "zh": "您的消息太长了,请用一两句话描述您遇到的问题。",
        "en": "Your message is too long; please describe your problem in a sentence or two.",
    },
    "feedback_thanks_yes": {"zh": "感谢您的反馈!", "en": "Thanks for your feedback!"},
    "feedback_thanks_no": {
        "zh": f"感谢反馈,我们会改进这个回答。如需人工帮助,请拨打客服热线{HOTLINE}。",
        "en": f"Thanks, we will improve this answer. For help from a person, call the hotline {HOTLINE}.",
    },
    "handoff": {
        "zh": f"好的,为您转人工服务。请拨打“八闽健康码”客服热线{HOTLINE},客服人员会跟进处理。",
        "en": f"Sure. Please call the Bamin Health Code hotline {HOTLINE}; an agent will follow up.",
    },
}


def text(key: str, lang: str) -> str:
    """English for "en"; simplified Chinese for "zh" and "zh-hant" (converted later, in one place)."""
    variants = TEXTS[key]
    return variants["en"] if lang == "en" else variants["zh"]
