"""The conversation side of the hand-off, through /api/v1/chat with a fake bot: the ticket the
hand-off service makes, the bot kept quiet while an agent holds it, the callback number of an
anonymous user, the rating after resolve, the turn log; on SQLite and PostgreSQL."""
from __future__ import annotations

from sqlalchemy import select, text

from _accounts_fixtures import ADMIN, FAMILY_NAME, ID_NUMBER, NAME, PHONE, admin, api, db, document  # noqa: F401
from accounts import service
from assistant import conversations, handoff
from assistant.chat import rasa_sender
from store.models import ConversationMessage
from tickets import service as tickets


def sign_in(client, user_id="demo-0001"):
    client.post(f"/api/v1/admin/accounts/{user_id}", json=document(user_id), headers=admin())
    return client.post("/api/v1/admin/sessions", json={"user_id": user_id}, headers=admin()).json()["token"]


def chat(client, text_in, sender="wx-1", token=None):
    r = client.post("/api/v1/chat", json={"sender": sender, "text": text_in},
                    headers={"Authorization": f"Bearer {token}"} if token else {})
    assert r.status_code == 200, r.text
    return r.json()


def an_agent(name="坐席1"):
    agent_id, token = service.create_agent(name)
    return service.agent_for_token(token)


def test_the_hand_off_service_makes_one_ticket_per_conversation_with_the_finding(api):
    client, _ = api
    token = sign_in(client)
    chat(client, "我的名字不对", token=token)                     # the conversation exists, as the user's
    conv = rasa_sender("wx-1", "demo-0001")
    reply = handoff.request(conv, "转人工", "zh", ["name.mismatch"])
    ticket_id = reply.meta["ticket_id"]
    assert reply.meta["handoff"] is True and ticket_id.startswith("HC-")
    assert ticket_id in reply.messages[0].text and "前面还有 0 位" in reply.messages[0].text
    ticket = tickets.get(ticket_id)
    assert (ticket.category, ticket.user_id, ticket.channel) == ("name.mismatch", "demo-0001", "api")
    assert ticket.findings and ticket.findings[0]["code"] == "name.mismatch"
    assert NAME not in ticket.findings[0]["text"] and NAME not in ticket.summary
    assert "我的名字不对" in ticket.summary
    again = handoff.request(conv, "帮我登记工单", "en", [])
    assert again.meta["ticket_id"] == ticket_id and "already in the queue" in again.messages[0].text
    assert len(again.messages) == 1                          # signed in: no request for a number


def test_the_bot_keeps_quiet_while_an_agent_holds_the_ticket(api):
    client, fake = api
    token = sign_in(client)
    chat(client, "你好", token=token)
    conv = rasa_sender("wx-1", "demo-0001")
    ticket_id = handoff.request(conv, "转人工", "zh").meta["ticket_id"]
    waiting = chat(client, "健康码可以截图吗", token=token)       # open, not claimed: the bot answers
    assert waiting["messages"] and waiting["meta"]["ticket_id"] == ticket_id and waiting["meta"]["handoff"]
    calls = len(fake.calls)
    tickets.claim(ticket_id, an_agent())
    quiet = chat(client, f"我叫{NAME},电话{PHONE}", token=token)
    assert quiet["messages"] == [] and quiet["meta"]["ticket_id"] == ticket_id and quiet["meta"]["handoff"]
    assert len(fake.calls) == calls                          # Rasa never saw it
    transcript = tickets.transcript(conv)
    assert transcript[-1]["from"] == "user" and "林**" in transcript[-1]["text"]
    assert NAME not in str(transcript) and PHONE not in str(transcript)


def test_an_anonymous_user_leaves_a_callback_number_kept_sealed(api, db):
    client, fake = api
    chat(client, "你好", sender="anon-9")
    conv = rasa_sender("anon-9", None)
    reply = handoff.request(conv, "转人工", "zh")
    assert len(reply.messages) == 2 and "手机号码" in reply.messages[1].text
    ticket_id = reply.meta["ticket_id"]
    calls = len(fake.calls)
    left = chat(client, "我的电话 +86 139 1234 5678", sender="anon-9")
    assert left["messages"][0]["text"] == "已记下您的回拨电话 139****5678,客服人员会尽快联系您。"
    assert len(fake.calls) == calls
    ticket = tickets.get(ticket_id)
    assert ticket.has_callback_phone and not ticket.awaiting_contact
    with db.connect() as conn:
        stored = "\n".join(repr(conn.execute(text(f"SELECT * FROM {t}")).all())
                           for t in ("tickets", "ticket_events", "conversation_messages"))
    assert "13912345678" not in stored and "139 1234 5678" not in stored
    agent = an_agent()
    tickets.claim(ticket_id, agent)
    assert tickets.reveal_phone(ticket_id, agent) == "13912345678"


def test_after_resolve_the_user_rates_and_the_bot_answers_again(api):
    client, fake = api
    chat(client, "你好", sender="r-1")
    conv = rasa_sender("r-1", None)
    ticket_id = handoff.request(conv, "转人工", "zh-hant").meta["ticket_id"]
    agent = an_agent()
    tickets.claim(ticket_id, agent)
    tickets.resolve(ticket_id, agent, "已为您处理")
    feed = client.get("/api/v1/chat/messages", params={"sender": "r-1"}).json()["messages"]
    notice = feed[-1]
    assert notice["from"] == "system" and "處理完畢" in notice["text"]      # in the user's script
    payload = notice["buttons"][0]["payload"]
    assert payload.startswith("/rate_ticket")
    rated = chat(client, payload, sender="r-1")
    assert "感謝" in rated["messages"][0]["text"] or "感谢" in rated["messages"][0]["text"]
    assert tickets.get(ticket_id).satisfaction == 3
    twice = chat(client, payload, sender="r-1")
    assert "已经评价" in twice["messages"][0]["text"] or "已經評價" in twice["messages"][0]["text"]
    back = chat(client, "健康码可以截图吗", sender="r-1")
    assert back["messages"] and back["meta"]["handoff"] is False and back["meta"]["ticket_id"] is None


def test_one_conversation_cannot_rate_anothers_ticket(api):
    client, _ = api
    chat(client, "你好", sender="owner")
    ticket_id = handoff.request(rasa_sender("owner", None), "转人工", "zh").meta["ticket_id"]
    agent = an_agent()
    tickets.claim(ticket_id, agent)
    tickets.resolve(ticket_id, agent, "好了")
    chat(client, f'/rate_ticket{{"ticket_id":"{ticket_id}","score":1}}', sender="intruder")
    assert tickets.get(ticket_id).satisfaction is None


def test_every_turn_is_in_the_message_log_masked_with_its_meta(api, db):
    client, _ = api
    token = sign_in(client)
    r = chat(client, f"我叫{NAME},身份证{ID_NUMBER}", token=token)
    assert r["messages"][0]["id"] and r["meta"]["cursor"] == r["messages"][-1]["id"]
    with db.connect() as conn:
        rows = conn.execute(select(ConversationMessage.sender, ConversationMessage.text, ConversationMessage.meta)
                            .order_by(ConversationMessage.id)).all()
    assert [row.sender for row in rows] == ["user", "bot"]
    assert NAME not in rows[0].text and ID_NUMBER not in rows[0].text
    assert rows[1].meta["intent"] == "faq"
    assert conversations.user_of(rasa_sender("wx-1", "demo-0001")) == "demo-0001"

