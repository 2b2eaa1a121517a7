"""The citizens' web chat widget (web/widget/) in a real browser against the real stack (Rasa
included, demo mode): driven only through the contract's data-hc hooks, the widget's JS API and
visible text.

Covers the official FAQ answer, quick replies and feedback buttons (chosen and still there),
history from the server in a second browser and a second tab, text shown as text (no XSS),
links and phone numbers, the interface following the conversation's language, the 2,000
character limit, the API down and retry, an expired session, the unread badge, the hand-off
(banner, the agent's message on the live stream, the rating), keyboard-only use, a signed-in
demo user, the phone viewport, the embed attributes, and axe-core (no serious or critical
violation). Screenshots: reports/screens/widget-desktop.png and widget-phone.png."""
from __future__ import annotations

import json
import re
import time

import pytest
from playwright.sync_api import expect

from core.settings import REPO_ROOT
from tests._browser_fixtures import PHONE, screenshot, serious_accessibility_violations

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]

LAUNCHER, PANEL, INPUT, SEND = "[data-hc=launcher]", "#hcw-panel", "[data-hc=input]", "[data-hc=send]"
MESSAGE, BUTTON, RETRY = "[data-hc=message]", "[data-hc=button]", "[data-hc=retry]"
XSS = ['<img src=x onerror="window.__xss=1">', "<script>window.__xss=2</script>"]


def faq_answer(faq_id: str) -> str:
    """The Chinese answer of a KB entry, as kb/faq_zh.md writes it (the `> ` lines after 答:)."""
    text = (REPO_ROOT / "kb" / "faq_zh.md").read_text(encoding="utf-8")
    block = text.split(f"### {faq_id}\n", 1)[1].split("\n### ", 1)[0]
    answer = block.split("答:", 1)[1]
    lines = []
    for line in answer.strip("\n").splitlines():
        if not line.startswith(">"):
            break
        lines.append(line[1:].strip())
    return "\n".join(lines)


def messages(page, frm: str | None = None):
    """The conversation's messages (not the local welcome)."""
    return page.locator(f"{MESSAGE}[data-from={frm}]:not([data-local])" if frm else f"{MESSAGE}:not([data-local])")


def bubble(page, frm: str, text: str):
    return page.locator(f"{MESSAGE}[data-from={frm}]:not([data-local]) .hcw-bubble", has_text=text)


def open_widget(page, base: str, path: str = "/widget"):
    page.goto(base + path)
    page.click(LAUNCHER)
    expect(page.locator(PANEL)).to_be_visible()
    expect(page.locator(INPUT)).to_be_focused()
    # The conversation's history (or the welcome) is in before anything is typed.
    expect(page.locator(MESSAGE).first).to_be_visible()


def ask(page, text: str):
    page.fill(INPUT, text)
    page.press(INPUT, "Enter")


def wait_until(page, js: str, timeout_s: float = 15):
    """Poll a JS expression from the test (the page's CSP forbids wait_for_function's eval)."""
    deadline = time.monotonic() + timeout_s
    while not page.evaluate(js):
        assert time.monotonic() < deadline, f"never true: {js}"
        page.wait_for_timeout(100)


def chat_requests(page) -> list[str]:
    seen: list[str] = []
    page.on("request", lambda r: seen.append(r.method) if r.url.endswith("/api/v1/chat") else None)
    return seen


def assert_no_raw_payload(page):
    for text in messages(page).all_inner_texts():
        assert not re.search(r"(^|\n)/\w+\{", text), text


def assert_unique_ids(page):
    ids = [i for i in page.eval_on_selector_all(MESSAGE, "els => els.map(e => e.dataset.id || '')") if i]
    assert len(ids) == len(set(ids)), ids


def demo_token(web_stack, user_id: str) -> str:
    resp = web_stack.api("POST", "/api/v1/demo/sessions", json={"user_id": user_id})
    assert resp.status_code == 200, resp.text
    return resp.json()["token"]


# --------------------------------------------------------------------------------------------------
def test_faq_answer_quick_reply_and_history_from_the_server(web_stack, new_context):
    context = new_context()
    page = context.new_page()
    open_widget(page, web_stack.base)
    # The first open of a new conversation: a welcome with suggestions.
    welcome = page.locator("[data-local=welcome]")
    expect(welcome).to_be_visible()
    expect(welcome.locator(BUTTON)).to_have_count(3)
    expect(welcome.locator(BUTTON, has_text="转人工")).to_be_visible()
    sender = page.evaluate("localStorage.getItem('hcw:sender')")
    assert sender
    # A second tab of the same browser (same sender): it sees this tab's conversation too.
    other_tab = context.new_page()
    other_tab.goto(web_stack.base + "/widget")
    expect(other_tab.locator(LAUNCHER)).to_be_visible()

    ask(page, "健康码可以截图吗")
    official = faq_answer("personal.screenshot")
    assert "1分钟" in official
    answer = bubble(page, "bot", "1分钟")
    expect(answer).to_have_text(official)
    expect(bubble(page, "user", "健康码可以截图吗")).to_be_visible()
    expect(page.locator(INPUT)).to_be_focused()
    screenshot(page, "widget-desktop")
    assert serious_accessibility_violations(page) == []

    # The answer's "was this helpful" buttons: small feedback buttons, still quick replies.
    helpful = page.locator(f"{BUTTON}.hcw-fb", has_text="有帮助")
    not_helpful = page.locator(f"{BUTTON}.hcw-fb", has_text="没帮助")
    expect(helpful).to_have_attribute("aria-pressed", "false")
    bots_before = messages(page, "bot").count()
    helpful.click()
    expect(helpful).to_have_attribute("aria-pressed", "true")
    expect(helpful).to_have_class(re.compile(r"\bhcw-chosen\b"))
    expect(not_helpful).to_be_visible()
    expect(not_helpful).to_have_attribute("aria-pressed", "false")
    expect(bubble(page, "user", "有帮助")).to_be_visible()           # the title, not the payload
    expect(messages(page, "bot")).to_have_count(bots_before + 1)
    expect(bubble(page, "bot", "感谢")).to_be_visible()
    assert_no_raw_payload(page)
    assert_unique_ids(page)

    # The server has it (the payload is what it stored) ...
    stored = web_stack.api("GET", "/api/v1/chat/messages", params={"sender": sender}).json()["messages"]
    assert [m["from"] for m in stored] == ["user", "bot", "bot", "user", "bot"]
    assert stored[3]["text"].startswith("/feedback")

    # ... and the other tab shows it, the user's turns included.
    expect(bubble(other_tab, "bot", "1分钟")).to_have_count(1, timeout=20_000)
    expect(bubble(other_tab, "user", "健康码可以截图吗")).to_have_count(1)
    expect(bubble(other_tab, "user", "有帮助")).to_have_count(1)

    # Another browser with only the sender id stored gets the whole conversation from the server.
    second = new_context()
    second.add_init_script(f"localStorage.setItem('hcw:sender', {json.dumps(sender)})")
    page2 = second.new_page()
    open_widget(page2, web_stack.base)
    expect(page2.locator("[data-local=welcome]")).to_have_count(0)
    expect(bubble(page2, "user", "健康码可以截图吗")).to_be_visible()
    expect(bubble(page2, "bot", "1分钟")).to_have_text(official)
    expect(bubble(page2, "user", "有帮助")).to_be_visible()
    expect(page2.locator(f"{BUTTON}[aria-pressed=true]")).to_have_text("有帮助")
    expect(page2.locator(f"{BUTTON}.hcw-chosen", has_text="有帮助")).to_be_visible()
    expect(messages(page2)).to_have_count(5)
    assert_no_raw_payload(page2)

    # A reload of the first tab: the same, nothing repeated.
    page.reload()
    page.click(LAUNCHER)
    expect(messages(page)).to_have_count(5)
    expect(page.locator(f"{BUTTON}[aria-pressed=true]")).to_have_text("有帮助")
    assert_unique_ids(page)


def test_text_is_shown_as_text_and_links_are_built_from_it(web_stack, new_context):
    page = new_context().new_page()
    open_widget(page, web_stack.base)
    typed = f"{XSS[0]} {XSS[1]}\n第二行 https://mzt.fujian.gov.cn/faq?id=1 0591-62623959"
    page.fill(INPUT, typed)
    page.press(INPUT, "Enter")
    mine = page.locator(f"{MESSAGE}[data-from=user] .hcw-bubble").last
    expect(mine).to_have_text(typed)
    expect(messages(page, "bot").first).to_be_visible()
    expect(page.locator("[data-hc=typing]")).to_be_hidden()
    assert page.evaluate("window.__xss") is None
    assert page.locator(f"{MESSAGE} img, {MESSAGE} script").count() == 0
    # Line breaks kept; the URL and the phone number are links, built safely.
    assert page.eval_on_selector(f"{MESSAGE}[data-from=user] .hcw-bubble",
                                 "e => getComputedStyle(e).whiteSpace") == "pre-wrap"
    link = mine.locator("a[href^='https://']")
    expect(link).to_have_attribute("href", "https://mzt.fujian.gov.cn/faq?id=1")
    expect(link).to_have_attribute("target", "_blank")
    expect(link).to_have_attribute("rel", "noopener noreferrer")
    expect(mine.locator("a[href='tel:059162623959']")).to_have_text("0591-62623959")
    # The server stored the characters and hands them back as characters.
    page.reload()
    page.click(LAUNCHER)
    expect(page.locator(f"{MESSAGE}[data-from=user] .hcw-bubble").first).to_contain_text(XSS[0])
    assert page.evaluate("window.__xss") is None


def test_an_english_question_switches_the_interface_to_english(web_stack, new_context):
    page = new_context().new_page()
    open_widget(page, web_stack.base)
    expect(page.locator(INPUT)).to_have_attribute("placeholder", re.compile("请输入"))
    ask(page, "Can I use a screenshot of my health code?")
    expect(bubble(page, "bot", "1 minute")).to_be_visible()
    expect(page.locator(INPUT)).to_have_attribute("placeholder", re.compile("Type your question"))
    expect(page.locator(SEND)).to_have_attribute("aria-label", "Send")
    expect(page.locator("[data-hc=root]")).to_have_attribute("lang", "en")
    expect(page.locator(f"{BUTTON}.hcw-fb", has_text=re.compile("^Helpful$"))).to_be_visible()
    # And back: a Traditional question, a Traditional interface.
    ask(page, "健康碼可以截圖嗎")
    expect(bubble(page, "bot", "1分鐘")).to_be_visible()
    expect(page.locator(INPUT)).to_have_attribute("placeholder", re.compile("請輸入"))
    # The JS API too.
    page.evaluate("HCWidget.setLang('zh')")
    expect(page.locator(INPUT)).to_have_attribute("placeholder", re.compile("请输入"))


def test_the_2000_character_limit_is_refused_before_sending(web_stack, new_context):
    page = new_context().new_page()
    open_widget(page, web_stack.base)
    sent = chat_requests(page)
    page.fill(INPUT, "码" * 1900)
    expect(page.locator("[data-hc=counter]")).to_have_text("1900/2000")
    expect(page.locator(SEND)).to_be_enabled()
    page.fill(INPUT, "码" * 2001)
    expect(page.locator("[data-hc=counter]")).to_have_text("2001/2000")
    expect(page.locator(SEND)).to_be_disabled()
    expect(page.locator("[data-hc=limit]")).to_be_visible()
    expect(page.locator("[data-hc=limit]")).to_contain_text("2000")
    page.press(INPUT, "Enter")
    assert page.evaluate("HCWidget.send('x'.repeat(2001))") is False
    page.wait_for_timeout(300)
    assert sent == []
    expect(messages(page, "user")).to_have_count(0)
    assert len(page.input_value(INPUT)) == 2001                    # nothing typed is lost
    page.press(INPUT, "Backspace")
    expect(page.locator(SEND)).to_be_enabled()
    expect(page.locator("[data-hc=limit]")).to_be_hidden()


def refused_once(calls: list, status: int, code: str):
    """A route handler: the first chat request gets `status` with Retry-After: 1, the rest go
    through; `calls` counts them."""
    def handle(route):
        calls.append(1)
        if len(calls) == 1:
            route.fulfill(status=status, headers={"Retry-After": "1"}, content_type="application/json",
                          body=json.dumps({"error": {"code": code, "message": code}}))
        else:
            route.continue_()
    return handle


def test_api_down_keeps_the_message_and_retry_sends_it(web_stack, new_context):
    page = new_context().new_page()
    open_widget(page, web_stack.base)
    page.route("**/api/v1/chat", lambda route: route.abort())
    ask(page, "健康码可以截图吗")
    alert = page.locator("[data-hc=alert]")
    expect(alert).to_contain_text("暂时连不上")
    mine = page.locator(f"{MESSAGE}[data-from=user]").last
    expect(mine).to_have_class(re.compile(r"\bhcw-unsent\b"))
    expect(mine).to_contain_text("未发送")
    expect(mine.locator(".hcw-bubble")).to_have_text("健康码可以截图吗")
    expect(page.locator("[data-hc=typing]")).to_be_hidden()
    assert serious_accessibility_violations(page) == []            # the unsent and alert styles
    page.unroute("**/api/v1/chat")
    page.click(RETRY)
    expect(bubble(page, "bot", "1分钟")).to_be_visible()
    expect(alert).to_be_hidden()
    expect(mine).not_to_have_class(re.compile(r"\bhcw-unsent\b"))
    expect(messages(page, "user")).to_have_count(1)

    # A busy bot (503 with Retry-After): the same inline state, retried by itself after it.
    calls = []
    page.route("**/api/v1/chat", refused_once(calls, 503, "bot_unavailable"))
    ask(page, "为什么我的码是橙色")
    expect(alert).to_contain_text("正忙")
    expect(bubble(page, "bot", "橙色")).to_be_visible(timeout=10_000)
    expect(alert).to_be_hidden()
    assert len(calls) == 2
    page.unroute("**/api/v1/chat")

    # Too many messages (429 with Retry-After): said as such, not as "offline", and sent again
    # by itself once the limit lets it through.
    limited = []
    page.route("**/api/v1/chat", refused_once(limited, 429, "rate_limited"))
    ask(page, "健康码可以截图吗")
    expect(alert).to_contain_text("发送太快")
    expect(alert).not_to_contain_text("连不上")
    expect(bubble(page, "bot", "1分钟").nth(1)).to_be_visible(timeout=10_000)
    expect(alert).to_be_hidden()
    assert len(limited) == 2
    page.unroute("**/api/v1/chat")

    # A slow answer (held back here): after ~8 s the same polite state; when the answer does
    # come, it is shown and the message counts as sent.
    held = []
    page.route("**/api/v1/chat", lambda route: held.append(route))
    ask(page, "健康码可以打印吗")
    expect(page.locator("[data-hc=typing]")).to_be_visible()
    expect(alert).to_contain_text("暂时连不上", timeout=12_000)
    slow = page.locator(f"{MESSAGE}[data-from=user]").last
    expect(slow).to_have_class(re.compile(r"\bhcw-unsent\b"))
    held[0].continue_()
    expect(bubble(page, "bot", "1分钟").nth(2)).to_be_visible()
    expect(alert).to_be_hidden()
    expect(slow).not_to_have_class(re.compile(r"\bhcw-unsent\b"))
    assert len(held) == 1


def test_an_expired_session_signs_out_and_keeps_the_typed_text(web_stack, new_context):
    page = new_context().new_page()
    open_widget(page, web_stack.base)
    page.evaluate("t => HCWidget.signIn(t)", demo_token(web_stack, "demo-minor"))
    expect(page.locator(".hcw-sub")).to_contain_text("已登录")
    page.route("**/api/v1/chat", lambda route: route.fulfill(
        status=401, content_type="application/json",
        body='{"error":{"code":"invalid_token","message":"unknown or expired session token"}}'))
    ask(page, "我的健康码为什么是橙色")
    expect(page.locator("[data-hc=alert]")).to_contain_text("登录已过期")
    expect(page.locator(INPUT)).to_have_value("我的健康码为什么是橙色")
    assert page.evaluate("HCWidget.isSignedIn()") is False
    assert page.evaluate("localStorage.getItem('hcw:token')") is None
    expect(page.locator(".hcw-sub")).to_contain_text("未登录")


def test_unread_badge_counts_messages_that_arrive_while_closed(web_stack, new_context):
    page = new_context().new_page()
    page.goto(web_stack.base + "/widget")
    wait_until(page, "!!window.HCWidget")
    badge = page.locator("[data-hc=unread]")
    expect(badge).to_be_hidden()
    assert page.evaluate("HCWidget.send('健康码可以截图吗')") is True
    expect(badge).to_have_text("2")                        # the answer and "was this helpful?"
    expect(page.locator(LAUNCHER)).to_have_attribute("aria-label", re.compile("2条未读"))
    expect(page.locator(LAUNCHER)).to_have_attribute("aria-expanded", "false")
    page.evaluate("HCWidget.open()")
    expect(badge).to_be_hidden()
    # A card at the bottom right on a desktop.
    page.wait_for_timeout(400)
    box = page.locator(PANEL).bounding_box()
    assert (box["width"], box["height"]) == (380, 600), box
    assert 1280 - 40 < box["x"] + box["width"] <= 1280 and box["y"] + box["height"] < 800, box
    expect(page.locator(LAUNCHER)).to_have_attribute("aria-expanded", "true")
    expect(bubble(page, "bot", "1分钟")).to_be_visible()
    page.evaluate("HCWidget.close()")
    expect(page.locator(PANEL)).to_be_hidden()
    page.evaluate("HCWidget.toggle()")
    expect(page.locator(PANEL)).to_be_visible()


def test_hand_off_banner_agent_message_on_the_stream_and_rating(web_stack, new_context):
    agent = web_stack.agent_token("坐席-widget")
    page = new_context().new_page()
    open_widget(page, web_stack.base)
    page.locator("[data-local=welcome]").locator(BUTTON, has_text="转人工").click()
    banner = page.locator("[data-hc=handoff]")
    expect(banner).to_contain_text("已转人工")
    expect(banner).to_contain_text("排队中")
    ticket_id = re.search(r"HC-\d{8}-\d{4}", banner.inner_text()).group(0)
    expect(bubble(page, "bot", ticket_id).first).to_be_visible()

    page.keyboard.press("Escape")
    expect(page.locator(PANEL)).to_be_hidden()
    before = page.locator(f"{MESSAGE}:not([data-local]):not([data-from=user])").count()
    for step, body in (("claim", None), ("messages", {"text": "您好,我是客服,请问有什么可以帮您?"})):
        resp = web_stack.api("POST", f"/api/v1/agent/tickets/{ticket_id}/{step}", agent, json=body)
        assert resp.status_code == 200, resp.text
    badge = page.locator("[data-hc=unread]")
    # What came on the live stream while the panel was closed (the agent's message, and any
    # notice of the claim) is counted.
    expect(page.locator(f"{MESSAGE}[data-from=agent]")).to_have_count(1)
    arrived = page.locator(f"{MESSAGE}:not([data-local]):not([data-from=user])").count() - before
    assert arrived >= 1
    expect(badge).to_have_text(str(arrived))
    page.click(LAUNCHER)
    expect(badge).to_be_hidden()
    from_agent = page.locator(f"{MESSAGE}[data-from=agent]")
    expect(from_agent).to_have_count(1)
    expect(from_agent.locator(".hcw-who")).to_have_text("人工客服")
    expect(from_agent.locator(".hcw-bubble")).to_have_text("您好,我是客服,请问有什么可以帮您?")
    expect(banner).to_contain_text("人工客服已接入")
    expect(banner).to_contain_text(ticket_id)
    expect(page.locator("[data-hc=live]")).to_contain_text("您好,我是客服")

    resp = web_stack.api("POST", f"/api/v1/agent/tickets/{ticket_id}/resolve", agent,
                         json={"resolution": "已为您处理。"})
    assert resp.status_code == 200, resp.text
    notice = page.locator(f"{MESSAGE}[data-from=system]", has_text="已为您处理")
    expect(notice).to_be_visible()
    expect(notice.locator(".hcw-bubble")).to_contain_text(ticket_id)
    satisfied = notice.locator(BUTTON, has_text=re.compile("^满意$"))
    expect(notice.locator(BUTTON)).to_have_count(3)
    expect(banner).to_contain_text("已处理完毕")                   # rating pending
    assert serious_accessibility_violations(page) == []            # banner, agent, notice styles
    satisfied.click()
    expect(satisfied).to_have_attribute("aria-pressed", "true")
    expect(bubble(page, "bot", "感谢您的评价")).to_be_visible()
    expect(banner).to_be_hidden()
    assert_no_raw_payload(page)
    assert_unique_ids(page)
    # After a reload the rating is still the chosen button, and nothing shows twice.
    page.reload()
    page.click(LAUNCHER)
    expect(page.locator(f"{BUTTON}[aria-pressed=true]")).to_have_text("满意")
    expect(page.locator(f"{MESSAGE}[data-from=agent]")).to_have_count(1)
    expect(banner).to_be_hidden()
    assert_no_raw_payload(page)


def test_keyboard_only(web_stack, new_context):
    page = new_context().new_page()
    page.goto(web_stack.base + "/widget")
    expect(page.locator(LAUNCHER)).to_be_visible()
    for _ in range(40):
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement && document.activeElement.dataset.hc === 'launcher'"):
            break
    else:
        pytest.fail("Tab never reached the launcher")
    # A visible focus ring on the launcher.
    assert page.eval_on_selector(LAUNCHER, "e => getComputedStyle(e).outlineStyle") != "none"
    page.keyboard.press("Enter")
    expect(page.locator(PANEL)).to_be_visible()
    expect(page.locator(INPUT)).to_be_focused()
    page.keyboard.type("健康码可以截图吗")
    page.keyboard.press("Shift+Enter")
    assert page.input_value(INPUT) == "健康码可以截图吗\n"
    page.keyboard.press("Backspace")
    page.keyboard.press("Enter")
    expect(bubble(page, "user", "健康码可以截图吗")).to_be_visible()
    expect(page.locator(INPUT)).to_have_value("")
    expect(page.locator(INPUT)).to_be_focused()
    expect(bubble(page, "bot", "1分钟")).to_be_visible()
    page.keyboard.press("Escape")
    expect(page.locator(PANEL)).to_be_hidden()
    expect(page.locator(LAUNCHER)).to_be_focused()
    expect(page.locator(LAUNCHER)).to_have_attribute("aria-expanded", "false")


def test_signed_in_demo_user_gets_a_diagnosis(web_stack, new_context):
    page = new_context().new_page()
    page.goto(web_stack.base + "/widget")
    select = page.get_by_label("以演示账号登录")
    expect(select).to_be_visible()
    # Anonymous first: the sign-in prompt.
    page.click(LAUNCHER)
    ask(page, "为什么我的码是橙色")
    expect(bubble(page, "bot", "登录后")).to_be_visible()
    select.select_option("demo-orange-quarantine")
    wait_until(page, "!!window.HCWidget && HCWidget.isSignedIn()")
    expect(page.locator(PANEL)).to_be_visible()
    # Another conversation on the server: the anonymous one is gone from the list.
    expect(bubble(page, "bot", "登录后")).to_have_count(0)
    expect(page.locator(".hcw-sub")).to_contain_text("已登录")
    ask(page, "为什么我的码是橙色")
    answer = bubble(page, "bot", "隔离")
    expect(answer).to_be_visible()
    expect(answer).to_contain_text("0591-62623959")
    expect(answer.locator("a[href='tel:059162623959']")).to_be_visible()
    expect(bubble(page, "bot", "登录后")).to_have_count(0)
    expect(page.locator(BUTTON, has_text="登记工单")).to_be_visible()
    # Signed in across a reload; sign-out brings the anonymous conversation back.
    page.reload()
    page.click(LAUNCHER)
    expect(answer).to_be_visible()
    page.click("#demo-signout")
    wait_until(page, "!!window.HCWidget && !HCWidget.isSignedIn()")
    expect(bubble(page, "bot", "登录后")).to_be_visible()
    expect(bubble(page, "bot", "隔离期为")).to_have_count(0)


def test_demo_sign_in_is_hidden_without_demo_mode(web_stack, new_context):
    page = new_context().new_page()
    page.route("**/api/v1/demo/accounts", lambda route: route.fulfill(
        status=404, content_type="application/json", body='{"error":{"code":"not_found","message":"off"}}'))
    page.goto(web_stack.base + "/widget")
    wait_until(page, "!!window.HCWidget")
    page.wait_for_timeout(300)
    expect(page.locator("#demo-box")).to_be_hidden()
    expect(page.locator(LAUNCHER)).to_be_visible()


def test_phone_viewport_full_screen(web_stack, new_context):
    page = new_context(**PHONE).new_page()
    open_widget(page, web_stack.base)
    page.wait_for_timeout(400)                                       # the opening animation
    box = page.locator(PANEL).bounding_box()
    assert box == {"x": 0, "y": 0, "width": 390, "height": 844}, box
    ask(page, "为什么我的码是橙色")
    expect(bubble(page, "bot", "橙色").first).to_be_visible()
    expect(page.locator(f"{MESSAGE}[data-from=bot] {BUTTON}").first).to_be_visible()
    page.wait_for_timeout(300)
    screenshot(page, "widget-phone")
    assert serious_accessibility_violations(page) == []
    page.click("[data-hc=close]")
    expect(page.locator(PANEL)).to_be_hidden()
    expect(page.locator(LAUNCHER)).to_be_visible()


EMBED = """<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Host page</title></head>
<body><main><h1>A host page</h1></main>
<script>window.__ready = 0; addEventListener('hcwidget:ready', function () { window.__ready++; });</script>
<script src="/widget/widget.js" async data-api="{base}" data-lang="en" data-open="true" data-position="left" data-title="Health code help"></script>
<script src="/widget/widget.js" async data-api="{base}" data-lang="en" data-open="true" data-position="left" data-title="Health code help"></script>
</body></html>"""


def test_embedding_with_one_script_tag_and_data_attributes(web_stack, new_context):
    page = new_context().new_page()
    page.route("**/host-page.html", lambda route: route.fulfill(status=200, content_type="text/html", body=EMBED.replace("{base}", web_stack.base)))
    page.goto(web_stack.base + "/host-page.html")
    expect(page.locator(PANEL)).to_be_visible()                    # data-open="true"
    expect(page.locator(LAUNCHER)).to_have_count(1)                 # included twice, one widget
    assert page.locator("link[data-hcw]").count() == 1
    assert page.evaluate("window.__ready") == 1
    assert set(page.evaluate("Object.keys(HCWidget)")) >= {
        "open", "close", "toggle", "signIn", "signOut", "send", "setLang"}
    expect(page.locator(INPUT)).to_have_attribute("placeholder", re.compile("Type your question"))
    expect(page.locator("#hcw-title")).to_have_text("Health code help")
    page.wait_for_timeout(400)
    box = page.locator(PANEL).bounding_box()
    assert box["x"] < 100                                           # data-position="left"
    ask(page, "Can I use a screenshot of my health code?")
    expect(bubble(page, "bot", "1 minute")).to_be_visible()
    with pytest.raises(Exception):
        page.evaluate("HCWidget.setLang('fr')")
    page.evaluate("HCWidget.close()")
    expect(page.locator(PANEL)).to_be_hidden()


def test_the_live_stream_reconnects_with_backoff_and_resumes(web_stack, new_context):
    """The first two stream connections fail: the widget retries (1 s, 2 s), resumes after the
    last message it has, and shows what was said elsewhere in the conversation once."""
    page = new_context().new_page()
    attempts: list[tuple[float, str]] = []

    def flaky(route):
        attempts.append((time.monotonic(), route.request.url))
        if len(attempts) <= 2:
            route.abort()
        else:
            route.continue_()

    page.route(re.compile(r"/api/v1/chat/stream\?"), flaky)
    open_widget(page, web_stack.base)
    ask(page, "健康码可以截图吗")
    expect(bubble(page, "bot", "1分钟")).to_be_visible()
    deadline = time.monotonic() + 15
    while len(attempts) < 3 and time.monotonic() < deadline:
        page.wait_for_timeout(200)
    assert len(attempts) >= 3, attempts
    assert attempts[2][0] - attempts[1][0] >= 0.9                   # backing off, not hammering
    assert "after=" in attempts[-1][1]
    page.wait_for_timeout(500)
    # The same conversation from elsewhere (another device with this sender id): the bot's reply
    # comes on the stream, the history brings the question, each once.
    sender = page.evaluate("localStorage.getItem('hcw:sender')")
    resp = web_stack.api("POST", "/api/v1/chat", json={"sender": sender, "text": "可以帮家人申领健康码吗"})
    assert resp.status_code == 200, resp.text
    # (A reply is not pushed; the stream re-reads its log every 4 pings at most: HC_SSE_PING_S=2.)
    expect(bubble(page, "user", "可以帮家人申领健康码吗")).to_have_count(1, timeout=20_000)
    expect(bubble(page, "bot", "1分钟")).to_have_count(1)
    n = len(resp.json()["messages"])
    expect(messages(page, "bot")).to_have_count(2 + n)
    assert_unique_ids(page)
