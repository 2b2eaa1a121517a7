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
    # An action whose service failed (database or index unavailable): the turn still gets a reply.
    "service_unavailable": {
        "zh": f"抱歉,系统正忙,暂时无法处理您的问题,请稍后再试;急事请拨打客服热线{HOTLINE}。",
        "en": f"Sorry, the system is busy and cannot handle your question right now. Please try again "
              f"shortly; if it is urgent, call the hotline {HOTLINE}.",
    },
    # A channel push that is not text (image, voice, video, location…): the bot reads text only.
    "text_only": {
        "zh": f"抱歉,我目前只能看懂文字。请直接输入您的问题,例如“健康码可以截图吗”;急事请拨打客服热线{HOTLINE}。",
        "en": f"Sorry, I can only read text. Please type your question, e.g. \"Can I use a screenshot of "
              f"my health code?\"; if it is urgent, call the hotline {HOTLINE}.",
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
    # 「我的码为什么是橙的」 when nothing says which cause applies (assistant.diagnose.orange_causes):
    # the two orange entries in short, each also offered as a button.
    "orange_causes": {
        "zh": f"健康码显示橙色,常见有两种情况:\n"
              f"1. 已隔离满14天且无症状,码仍是橙色:请拨打客服热线{HOTLINE}反馈并提供证明材料。\n"
              f"2. 从外省来闽,本省健康码正常,“八闽健康码”却是橙色:一般是出发省份的数据还没有同步到"
              f"全国一体化政务服务平台,需以平台数据同步为准。\n"
              f"您是哪一种?可点选查看详细说明:",
        "en": f"A health code usually shows orange for one of two reasons:\n"
              f"1. You finished 14 days of quarantine without symptoms but the code is still orange: "
              f"call the hotline {HOTLINE} to report it and provide supporting documents.\n"
              f"2. You came from another province where your code is normal, but the Bamin code is "
              f"orange: your home province's data has usually not yet reached the National Integrated "
              f"Government Service Platform, so it depends on when the platform syncs.\n"
              f"Which one is yours? Tap one for the full answer:",
    },
    "orange_sign_in": {
        "zh": "登录后我可以查看您本人账户的情况,告诉您是哪一种原因:请在闽政通App或小程序中打开本客服"
              "并完成登录,然后再问我一次。",
        "en": "If you sign in, I can look at your own account and tell you which one applies: open this "
              "chat from the Min Zheng Tong (闽政通) app or mini-program, log in, then ask me again.",
    },
    # --- the hotline hand-off (assistant.handoff) ---
    "ticket_button": {"zh": "转人工/登记工单", "en": "Talk to a person / open a ticket"},
    "handoff_created": {
        "zh": "已为您登记热线工单 {ticket_id},客服人员会在这里回复您。",
        "en": "I've opened hotline ticket {ticket_id} for you; an agent will reply to you here.",
    },
    "handoff_existing": {
        "zh": "您的热线工单 {ticket_id} 已在处理队列中,客服人员会在这里回复您。",
        "en": "Your hotline ticket {ticket_id} is already in the queue; an agent will reply to you here.",
    },
    "handoff_claimed": {
        "zh": "客服人员正在处理您的工单 {ticket_id},请直接在这里留言。",
        "en": "An agent is handling your ticket {ticket_id}; just write your message here.",
    },
    "handoff_place": {
        "zh": "您前面还有 {ahead} 位,预计等待约 {minutes} 分钟。",
        "en": "There {ahead_en} ahead of you; the expected wait is about {minutes} minutes.",
    },
    "handoff_after_hours": {
        "zh": "现在是人工服务时间({hours})以外,工作人员将于 {opens_at} 起处理。",
        "en": "It is outside the hotline's hours ({hours}); an agent will handle it from {opens_at}.",
    },
    "handoff_hotline": {
        "zh": f"急事也可以直接拨打客服热线{HOTLINE}。",
        "en": f"If it is urgent, you can also call the hotline {HOTLINE}.",
    },
    "handoff_anonymous": {
        "zh": "您还没有登录:登录后客服人员可以查看您本人的账户情况;也可以直接回复您的手机号码,方便客服人员回电。",
        "en": "You are not signed in: sign in so that the agent can look at your own account, or reply "
              "with your mobile number so that the agent can call you back.",
    },
    "callback_saved": {
        "zh": "已记下您的回拨电话 {phone},客服人员会尽快联系您。",
        "en": "Thanks, I've noted your callback number {phone}; an agent will call you as soon as possible.",
    },
    "handoff_offer": {
        "zh": "看起来我没能解决您的问题。需要的话,我可以为您转人工、登记热线工单。",
        "en": "It looks like I couldn't solve your problem. If you like, I can pass you to a person and "
              "open a hotline ticket.",
    },
    "handoff_unavailable": {
        "zh": f"抱歉,工单系统暂时无法登记。请直接拨打客服热线{HOTLINE},工作人员会为您处理。",
        "en": f"Sorry, tickets cannot be opened right now. Please call the hotline {HOTLINE}; an agent "
              f"will help you.",
    },
    "rating_thanks": {"zh": "感谢您的评价!还有其他问题,可以继续问我。",
                      "en": "Thank you for your rating! Ask me anything else whenever you like."},
    "rating_not_open": {"zh": "这张工单已经评价过或还没有处理完,谢谢!",
                        "en": "That ticket has already been rated or is not finished yet. Thank you!"},
}


def text(key: str, lang: str) -> str:
    """English for "en"; simplified Chinese for "zh" and "zh-hant" (converted later, in one place)."""
    variants = TEXTS[key]
    return variants["en"] if lang == "en" else variants["zh"]
