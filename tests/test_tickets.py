"""tickets.service: ids, one open ticket per conversation, the event history and its outbox row,
claims, messages and resolution through delivery, the sealed callback phone, ratings, the queue
place and the agents' event stream, on SQLite and PostgreSQL. Race tests: test_tickets_race.py."""
from __future__ import annotations

import json
import logging
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import select, text

import delivery
from _accounts_fixtures import DOCUMENT, FAMILY_NAME, ID_NUMBER, NAME, PHONE, RAW_PII
from _store_fixtures import DATABASES, migrated_with_tickets
from accounts import service as accounts
from core.settings import Settings
from diagnosis.account import Account
from store.models import OutboxRow, Ticket, TicketEvent
from tickets import forwarding, queue, service, texts
from tickets.queue import BEIJING

CALLBACK = "13912345678"
SETTINGS = Settings(hotline_hours="08:30-17:30", ticket_sla_s=900, ticket_default_wait_s=600,
                    demo_accounts=False)


def at_beijing(day: int, hour: int, minute: int = 0) -> datetime:
    return datetime(2026, 12, day, hour, minute, tzinfo=BEIJING).astimezone(timezone.utc)


class Clock:
    """service.utcnow, set by the test (a ticket's times are the clock's)."""

    def __init__(self, now: datetime):
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta) -> None:
        self.now += timedelta(**delta)


@pytest.fixture(params=DATABASES)
def db(request, tmp_path):
    with migrated_with_tickets(request.param, tmp_path, SETTINGS, accounts, delivery) as engine:
        yield engine


@pytest.fixture
def clock(monkeypatch):
    c = Clock(at_beijing(1, 10))
    monkeypatch.setattr(service, "utcnow", c)
    return c


@pytest.fixture
def agents(db):
    out = []
    for name in ("坐席一", "坐席二"):
        _id, token = accounts.create_agent(name)
        out.append(accounts.agent_for_token(token))
    return out


@pytest.fixture
def outbox_on():
    forwarding.use_settings(Settings(hotline_webhook_url="http://127.0.0.1:9/hook",
                                     hotline_webhook_secret="s"))
    yield
    forwarding.use_settings(None)


def make(conversation="web:c1", **kw):
    args = {"channel": "api", "user_id": None, "lang": "zh", "category": "name.mismatch",
            "findings": [{"code": "name.mismatch", "text": "健康码上的姓名与本人不一致。"}],
            "summary": "用户说健康码上的名字不对", **kw}
    return service.create_or_get(conversation, **args)


def events(engine, ticket_id=None):
    stmt = select(TicketEvent).order_by(TicketEvent.id)
    if ticket_id:
        stmt = stmt.where(TicketEvent.ticket_id == ticket_id)
    with engine.connect() as conn:
        return list(conn.execute(stmt).mappings())


def dump(engine) -> str:
    """Every value of every table, as one string (to look for raw personal data)."""
    out = []
    with engine.connect() as conn:
        for table in ("tickets", "ticket_events", "ticket_counters", "conversation_messages", "outbox",
                      "account_reads", "accounts", "agents"):
            out += [repr(tuple(r)) for r in conn.execute(text(f"SELECT * FROM {table}"))]
    return "\n".join(out)


# --- pure parts ---------------------------------------------------------------------------------
def test_hours_and_openings():
    hours = queue.parse_hours("08:30-17:30")
    assert queue.in_hours(at_beijing(1, 8, 30), hours) and queue.in_hours(at_beijing(1, 17, 29), hours)
    assert not queue.in_hours(at_beijing(1, 17, 30), hours) and not queue.in_hours(at_beijing(1, 8, 29), hours)
    assert queue.next_opening(at_beijing(1, 7), hours) == datetime(2026, 12, 1, 8, 30, tzinfo=BEIJING)
    assert queue.next_opening(at_beijing(1, 20), hours) == datetime(2026, 12, 2, 8, 30, tzinfo=BEIJING)
    assert queue.next_opening(at_beijing(1, 9), hours) == at_beijing(1, 9)
    night = queue.parse_hours("20:00-08:00")
    assert queue.in_hours(at_beijing(1, 23), night) and not queue.in_hours(at_beijing(1, 12), night)
    assert queue.parse_hours("00:00-24:00").always and queue.in_hours(at_beijing(1, 3),
                                                                      queue.parse_hours("00:00-24:00"))
    for bad in ("", "8-17", "25:00-26:00", "08:61-09:00"):
        with pytest.raises(ValueError):
            queue.parse_hours(bad)


def test_expected_wait_and_percentiles():
    assert queue.expected_wait_s(0, [100], 600) == 0
    assert queue.expected_wait_s(2, [], 600) == 1200                 # no history: the default
    assert queue.expected_wait_s(3, [100, 200, 10_000], 600) == 600  # the median, not the mean
    assert queue.expected_wait_s(1, [1], 600) == queue.MIN_WAIT_S
    assert queue.expected_wait_s(500, [600], 600) == queue.MAX_WAIT_S
    assert queue.percentile([], 50) is None
    assert queue.percentile([1, 2, 3, 4], 50) == 2.5
    assert queue.percentile(list(range(1, 11)), 90) == pytest.approx(9.1)


@pytest.mark.parametrize("raw", ["13912345678", "139 1234 5678", "139-1234-5678", "+86 139 1234 5678",
                                 "+8613912345678", "0086-139-1234-5678", "86 13912345678", "(139)12345678"])
def test_phone_forms_normalise(raw):
    assert service.normalise_phone(raw) == CALLBACK


@pytest.mark.parametrize("raw", ["", "12345678901", "1391234567", "139123456789", "0591-62623959",
                                 "phone 13912345678", "+1 139 1234 5678", "10912345678"])
def test_bad_phones_are_refused(raw):
    with pytest.raises(service.InvalidPhone):
        service.normalise_phone(raw)


def test_rating_texts():
    assert [b["payload"] for b in texts.rating_buttons("HC-20261201-0007", "zh")] == [
        '/rate_ticket{"ticket_id":"HC-20261201-0007","score":3}',
        '/rate_ticket{"ticket_id":"HC-20261201-0007","score":2}',
        '/rate_ticket{"ticket_id":"HC-20261201-0007","score":1}']
    assert [b["title"] for b in texts.rating_buttons("x", "zh")] == ["满意", "一般", "不满意"]
    assert [b["title"] for b in texts.rating_buttons("x", "zh-hant")] == ["满意", "一般", "不满意"]
    assert [b["title"] for b in texts.rating_buttons("x", "en")] == ["Satisfied", "OK", "Not satisfied"]


# --- creating -----------------------------------------------------------------------------------
def test_ids_follow_the_beijing_day(db, clock):
    clock.now = datetime(2026, 12, 1, 15, 59, tzinfo=timezone.utc)        # 23:59 in Beijing
    first, _ = make("web:a")
    second, _ = make("web:b")
    clock.now = datetime(2026, 12, 1, 16, 0, tzinfo=timezone.utc)         # 00:00 on the 2nd
    third, _ = make("web:c")
    assert (first.id, second.id, third.id) == ("HC-20261201-0001", "HC-20261201-0002", "HC-20261202-0001")


def test_asking_again_gives_the_same_ticket_until_it_is_resolved(db, clock, agents):
    view, created = make()
    assert created and view.status == "open" and view.category == "name.mismatch"
    assert view.diagnosis == ["name.mismatch"]
    again, created_again = make(summary="又问了一次", category="other")
    assert (again.id, created_again) == (view.id, False)
    assert service.open_for("web:c1").id == view.id
    assert service.open_for("web:other") is None
    service.claim(view.id, agents[0])
    assert service.open_for("web:c1").status == "claimed"          # claimed is still "open for"
    service.resolve(view.id, agents[0], "已核实处理")
    assert service.open_for("web:c1") is None
    with db.connect() as conn:
        assert conn.execute(select(Ticket.open_key).where(Ticket.id == view.id)).scalar() is None
    new, created_new = make()
    assert created_new and new.id != view.id


def test_category_defaults_to_other_and_inputs_are_bounded(db, clock):
    view, _ = make(category="", findings=[{"code": "x" * 100, "text": "t"}, "junk", {"text": "no code"}],
                   summary="s" * 5000, lang="fr", channel="c" * 100)
    assert view.category == "other" and view.lang == "zh" and len(view.channel) == 32
    assert len(view.summary) == service.MAX_TEXT_CHARS and len(view.findings) == 1
    with pytest.raises(service.InvalidInput):
        service.create_or_get("", channel="api", user_id=None, lang="zh", category="other", findings=[],
                              summary="")


def test_get_unknown_raises(db):
    with pytest.raises(service.TicketNotFound):
        service.get("HC-20990101-0001")
    for fn in (service.queue_place, service.record_user_message):
        with pytest.raises(service.TicketNotFound):
            fn("HC-20990101-0001", *(("x",) if fn is service.record_user_message else ()))


# --- the history and the outbox -----------------------------------------------------------------
def test_every_change_is_one_event_with_old_and_new(db, clock, agents):
    a, b = agents
    view, _ = make()
    clock.advance(minutes=2)
    service.claim(view.id, a)
    service.unclaim(view.id, a)
    service.claim(view.id, b)
    service.record_user_message(view.id, "还在吗")
    service.agent_message(view.id, b, "您好,我来帮您核实。")
    service.add_note(view.id, b, "需要上传证明")
    service.resolve(view.id, b, "已提交更正。")
    service.rate(view.id, 2)
    rows = events(db, view.id)
    assert [r["kind"] for r in rows] == ["created", "claimed", "unclaimed", "claimed", "user_message",
                                         "message", "note", "resolved", "rated"]
    assert [r["actor"] for r in rows] == ["bot", a.actor, a.actor, b.actor, "user", b.actor, b.actor,
                                          b.actor, "user"]
    assert rows[1]["changes"]["status"] == ["open", "claimed"]
    assert rows[1]["changes"]["claimed_by"] == [None, a.id]
    assert rows[2]["changes"] == {"status": ["claimed", "open"], "claimed_by": [a.id, None]}
    assert rows[4]["note"] == "还在吗"
    assert rows[7]["changes"]["status"] == ["claimed", "resolved"]
    assert rows[7]["changes"]["open_key"] == ["web:c1", None]
    assert rows[8]["changes"]["satisfaction"] == [None, 2]
    final = service.get(view.id)
    # claimed_at is the first claim (the wait the figures measure); first response set once.
    assert final.claimed_at == at_beijing(1, 10, 2) and final.first_response_at is not None
    assert service.history(view.id)[0]["kind"] == "created"


def test_each_event_is_forwarded_in_its_transaction(db, clock, agents, outbox_on):
    view, _ = make(conversation="web:secret-sender-id")
    service.claim(view.id, agents[0])
    with pytest.raises(service.AlreadyClaimed):
        service.claim(view.id, agents[1])          # refused: neither an event nor an outbox row
    with db.connect() as conn:
        rows = list(conn.execute(select(OutboxRow).order_by(OutboxRow.id)).mappings())
    assert [r["topic"] for r in rows] == ["ticket.created", "ticket.claimed"]
    assert len(events(db, view.id)) == 2
    payload = rows[1]["payload"]
    assert payload["id"] == view.id and payload["status"] == "claimed" and payload["claimed_by"] == "坐席一"
    assert payload["event"]["kind"] == "claimed" and payload["event"]["actor"] == agents[0].actor
    assert payload["event"]["at"]
    # The conversation id (an anonymous user's key to their messages) never leaves.
    assert "secret-sender-id" not in json.dumps([r["payload"] for r in rows], ensure_ascii=False)


def test_forwarding_off_writes_no_outbox_row(db, clock):
    make()
    with db.connect() as conn:
        assert conn.execute(select(OutboxRow)).first() is None


def test_changes_wake_the_agents_streams(db, clock, agents, monkeypatch):
    topics = []
    monkeypatch.setattr(delivery, "publish", topics.append)
    view, _ = make()
    service.claim(view.id, agents[0])
    assert topics.count(delivery.AGENTS_TOPIC) == 2


# --- claiming -----------------------------------------------------------------------------------
def test_claim_rules(db, clock, agents):
    a, b = agents
    view, _ = make()
    claimed = service.claim(view.id, a)
    assert claimed.status == "claimed" and claimed.claimed_by == a.id and claimed.claimed_by_name == "坐席一"
    assert service.claim(view.id, a).status == "claimed"       # the holder again: no change
    with pytest.raises(service.AlreadyClaimed) as err:
        service.claim(view.id, b)
    assert err.value.code == "already_claimed" and err.value.status == 409
    with pytest.raises(service.NotHolder):
        service.unclaim(view.id, b)
    with pytest.raises(service.TicketNotFound):
        service.claim("HC-20990101-0001", a)
    service.resolve(view.id, a, "好了")
    with pytest.raises(service.TicketResolved):
        service.claim(view.id, b)
    assert len([e for e in events(db, view.id) if e["kind"] == "claimed"]) == 1


# --- talking to the user ------------------------------------------------------------------------
def test_agent_message_reaches_the_conversation(db, clock, agents):
    a, b = agents
    view, _ = make()
    with pytest.raises(service.NotHolder):
        service.agent_message(view.id, a, "还没认领")         # open: claim first
    service.claim(view.id, a)
    with pytest.raises(service.NotHolder):
        service.agent_message(view.id, b, "不是我的")
    for bad in ("", "   ", "x" * 2001, "x" * 10_000):
        with pytest.raises(service.InvalidText):
            service.agent_message(view.id, a, bad)
    clock.advance(minutes=3)
    sent = service.agent_message(view.id, a, "  您好,请提供您的手机号 13800138000 以便回电  ")
    assert sent["text"] == "您好,请提供您的手机号 138****8000 以便回电"
    assert sent["ticket"]["first_response_at"] == at_beijing(1, 10, 3).isoformat()
    clock.advance(minutes=3)
    service.agent_message(view.id, a, "还在吗?")
    assert service.get(view.id).first_response_at == at_beijing(1, 10, 3)      # set once
    notice, *got = delivery.messages_after("web:c1")
    assert (notice.sender, notice.ticket_id) == ("system", view.id)     # 人工客服已接入, at the claim
    assert [(m.sender, m.ticket_id) for m in got] == [("agent", view.id), ("agent", view.id)]
    assert got[0].id == sent["message_id"] and got[0].text == sent["text"]


@pytest.mark.parametrize("lang,titles", [("zh", ["满意", "一般", "不满意"]), ("zh-hant", ["滿意", "一般", "不滿意"]),
                                         ("en", ["Satisfied", "OK", "Not satisfied"])])
def test_resolve_tells_the_user_and_asks_for_a_rating(db, clock, agents, lang, titles):
    a, b = agents
    view, _ = make(lang=lang)
    service.claim(view.id, a)
    with pytest.raises(service.NotHolder):
        service.resolve(view.id, b, "不是我的")
    assert [m.sender for m in delivery.messages_after("web:c1")] == ["system"]  # a refused resolve says nothing
    done = service.resolve(view.id, a, "已为您提交姓名更正")
    assert done.status == "resolved" and done.resolution == "已为您提交姓名更正" and done.resolved_at
    claimed, msg = delivery.messages_after("web:c1")
    assert claimed.sender == "system" and view.id in claimed.text      # 人工客服已接入, at the claim
    # In the conversation's script: a delivered notice passes no reply path that would convert it.
    resolution = "已爲您提交姓名更正" if lang == "zh-hant" else "已为您提交姓名更正"
    assert msg.sender == "system" and resolution in msg.text and view.id in msg.text
    assert [x["title"] for x in msg.buttons] == titles
    assert [x["payload"] for x in msg.buttons] == [
        f'/rate_ticket{{"ticket_id":"{view.id}","score":{s}}}' for s in (3, 2, 1)]
    with pytest.raises(service.TicketResolved):
        service.resolve(view.id, a, "again")
    with pytest.raises(service.TicketResolved):
        service.agent_message(view.id, a, "again")


def test_an_open_ticket_may_be_resolved_by_any_agent(db, clock, agents):
    view, _ = make()
    done = service.resolve(view.id, agents[1], "已电话联系处理")
    assert done.status == "resolved" and done.claimed_by == agents[1].id and done.claimed_at


def test_notes_are_private(db, clock, agents):
    view, _ = make()
    note = service.add_note(view.id, agents[1], "回电时核对 350102199001011234")
    assert note["text"] == "回电时核对 3501**********1234" and note["by"] == "坐席二"
    assert delivery.messages_after("web:c1", senders=None) == []
    with pytest.raises(service.InvalidText):
        service.add_note(view.id, agents[1], " ")


# --- the callback phone -------------------------------------------------------------------------
def test_callback_phone_is_sealed_and_revealed_only_to_the_holder(db, clock, agents, caplog):
    a, b = agents
    view, _ = make(awaiting_contact=True)
    assert view.awaiting_contact and not view.has_callback_phone
    with pytest.raises(service.InvalidPhone):
        service.set_callback_phone(view.id, "12345")
    left = service.set_callback_phone(view.id, "+86 139-1234-5678")
    assert left.has_callback_phone and not left.awaiting_contact
    assert CALLBACK not in dump(db)                                     # sealed at rest
    event = events(db, view.id)[-1]
    assert event["kind"] == "callback_phone" and event["note"] == "139****5678"
    assert event["changes"]["callback_phone"] == [None, "139****5678"]
    assert event["changes"]["awaiting_contact"] == [True, False]
    with pytest.raises(service.NotHolder):
        service.reveal_phone(view.id, a)                              # nobody holds it yet
    service.claim(view.id, a)
    with pytest.raises(service.NotHolder):
        service.reveal_phone(view.id, b)
    with caplog.at_level(logging.INFO, logger="hc.tickets.audit"):
        assert service.reveal_phone(view.id, a) == CALLBACK
    audit = [r for r in caplog.records if r.name == "hc.tickets.audit"]
    assert audit and audit[-1].fields["actor"] == a.actor and audit[-1].fields["ticket"] == view.id
    assert CALLBACK not in repr([r.__dict__ for r in caplog.records])
    revealed = events(db, view.id)[-1]
    assert revealed["kind"] == "phone_revealed" and revealed["actor"] == a.actor
    assert CALLBACK not in dump(db)
    # A second number replaces the first; the history shows both masked.
    service.set_callback_phone(view.id, "13700001111")
    assert events(db, view.id)[-1]["changes"]["callback_phone"] == ["139****5678", "137****1111"]


def test_a_sealed_phone_does_not_open_on_another_ticket(db, clock, agents):
    first, _ = make("web:a")
    second, _ = make("web:b")
    service.set_callback_phone(first.id, CALLBACK)
    with db.begin() as conn:        # move the sealed value to the other ticket's row
        sealed = conn.execute(select(Ticket.callback_phone).where(Ticket.id == first.id)).scalar()
        conn.execute(Ticket.__table__.update().where(Ticket.id == second.id).values(callback_phone=sealed))
    service.claim(second.id, agents[0])
    from core.sealing import SealError

    with pytest.raises(SealError):
        service.reveal_phone(second.id, agents[0])


def test_reveal_without_a_phone_is_audited_too(db, clock, agents):
    view, _ = make()
    service.claim(view.id, agents[0])
    assert service.reveal_phone(view.id, agents[0]) is None
    assert events(db, view.id)[-1]["kind"] == "phone_revealed"


# --- rating -------------------------------------------------------------------------------------
def test_rating_only_a_resolved_ticket_once(db, clock, agents):
    view, _ = make()
    with pytest.raises(service.NotResolved):
        service.rate(view.id, 3)
    service.claim(view.id, agents[0])
    service.resolve(view.id, agents[0], "好了")
    for bad in (0, 4, -1, True, "3", 2.5):
        with pytest.raises(service.InvalidScore):
            service.rate(view.id, bad)
    rated = service.rate(view.id, 3)
    assert rated.satisfaction == 3 and rated.rated_at
    with pytest.raises(service.AlreadyRated):
        service.rate(view.id, 1)
    assert service.get(view.id).satisfaction == 3


# --- the queue ----------------------------------------------------------------------------------
def test_queue_position_and_default_wait(db, clock, agents):
    tickets = []
    for i in range(3):
        tickets.append(make(f"web:q{i}")[0])
        clock.advance(seconds=30)
    places = [service.queue_place(t.id) for t in tickets]
    assert [p.position for p in places] == [1, 2, 3]
    assert [p.expected_wait_s for p in places] == [600, 1200, 1800]   # no history: the default
    assert all(p.in_hours and p.opens_at is None for p in places)
    service.claim(tickets[0].id, agents[0])
    assert service.queue_place(tickets[0].id).position == 0
    assert service.queue_place(tickets[0].id).expected_wait_s == 0
    assert [service.queue_place(t.id).position for t in tickets[1:]] == [1, 2]
    service.unclaim(tickets[0].id, agents[0])                 # back in its old place
    assert service.queue_place(tickets[0].id).position == 1


def test_expected_wait_comes_from_recent_claims(db, clock, agents):
    # Three tickets claimed after 2, 4 and 30 minutes: the median is 4 minutes.
    for i, minutes in enumerate((2, 4, 30)):
        view, _ = make(f"web:h{i}")
        clock.advance(minutes=minutes)
        service.claim(view.id, agents[0])
    # One made at night and claimed in the morning says nothing about the daytime queue.
    clock.now = at_beijing(1, 23)
    night, _ = make("web:night")
    clock.now = at_beijing(2, 9)
    service.claim(night.id, agents[0])
    waiting = [make(f"web:w{i}")[0] for i in range(2)]
    assert [service.queue_place(t.id).expected_wait_s for t in waiting] == [240, 480]


def test_outside_hours_the_opening_is_given(db, clock):
    clock.now = at_beijing(1, 20)
    view, _ = make()
    place = service.queue_place(view.id)
    assert not place.in_hours and place.position == 1
    assert datetime.fromisoformat(place.opens_at) == datetime(2026, 12, 2, 8, 30, tzinfo=BEIJING)
    assert place.opens_at.endswith("+08:00")
    assert place.expected_wait_s == 12 * 3600 + 30 * 60 + 600         # until 08:30, then the queue
    clock.now = at_beijing(2, 7)
    assert service.queue_place(view.id).opens_at.startswith("2026-12-02T08:30")
    # The first-response target counts from the opening, not from the night.
    assert service.get(view.id).sla_due_at == at_beijing(2, 8, 45)


def test_overdue_after_the_target(db, clock, agents):
    view, _ = make()
    assert not view.overdue(clock.now + timedelta(minutes=14))
    assert view.overdue(clock.now + timedelta(minutes=16))
    assert view.public(clock.now + timedelta(minutes=16))["overdue"] is True
    service.claim(view.id, agents[0])
    clock.advance(minutes=1)
    answered = service.agent_message(view.id, agents[0], "您好")
    assert answered["ticket"]["overdue"] is False
    assert not service.get(view.id).overdue(clock.now + timedelta(hours=5))


# --- the agents' stream -------------------------------------------------------------------------
def test_events_after_shows_user_messages_only_to_the_holder(db, clock, agents):
    a, b = agents
    mine, _ = make("web:mine")
    theirs, _ = make("web:theirs")
    service.claim(mine.id, a)
    service.claim(theirs.id, b)
    service.record_user_message(mine.id, "我的问题 13800138000")
    service.record_user_message(theirs.id, "他们的问题")
    service.add_note(mine.id, a, "私下备注")
    for_a = service.events_after(0, a.id)
    for_b = service.events_after(0, b.id)
    assert [(e["kind"], e["ticket_id"]) for e in for_a] == [
        ("created", mine.id), ("created", theirs.id), ("claimed", mine.id), ("claimed", theirs.id),
        ("user_message", mine.id)]
    assert [(e["kind"], e["ticket_id"]) for e in for_b][-1] == ("user_message", theirs.id)
    message = for_a[-1]
    assert message["text"] == "我的问题 138****8000" and message["ticket"]["id"] == mine.id
    assert set(message) >= {"id", "ticket_id", "kind", "at", "ticket"}
    assert "conversation_id" not in json.dumps(for_a) and "web:mine" not in json.dumps(for_a)
    # The cursor: only what came after it; ids grow.
    ids = [e["id"] for e in for_a]
    assert ids == sorted(ids)
    assert service.events_after(ids[2], a.id) == for_a[3:]
    assert service.events_after(0, a.id, limit=2) == for_a[:2]
    assert service.last_event_id() >= ids[-1]


def test_list_tickets_longest_waiting_first(db, clock, agents):
    made = []
    for i, category in enumerate(("name.mismatch", "other", "name.mismatch")):
        made.append(make(f"web:l{i}", category=category)[0])
        clock.advance(minutes=1)
    service.claim(made[1].id, agents[0])
    assert [t.id for t in service.list_tickets()] == [t.id for t in made]
    assert [t.id for t in service.list_tickets(status="open")] == [made[0].id, made[2].id]
    assert [t.id for t in service.list_tickets(status="claimed")] == [made[1].id]
    assert [t.id for t in service.list_tickets(category="name.mismatch")] == [made[0].id, made[2].id]
    with pytest.raises(service.InvalidInput):
        service.list_tickets(status="bogus")
    # Unfiltered, a resolved ticket comes after every waiting one, however old it is.
    service.resolve(made[0].id, agents[1], "已处理")
    assert [t.id for t in service.list_tickets()] == [made[1].id, made[2].id, made[0].id]
    assert [t.id for t in service.list_tickets(limit=2)] == [made[1].id, made[2].id]


# --- personal data ------------------------------------------------------------------------------
def test_nothing_raw_in_any_stored_row(db, clock, agents, outbox_on):
    """A signed-in user's ticket whose summary, findings, messages and notes carry their name,
    a family member's name, ID and phone numbers: every stored row and every view is masked."""
    accounts.put_account("u1", Account.model_validate(DOCUMENT))
    raw = f"{NAME}说她母亲{FAMILY_NAME}的码不对,身份证{ID_NUMBER},电话{PHONE}"
    view, _ = make("user:u1:web", user_id="u1", summary=raw,
                   findings=[{"code": "name.mismatch", "text": raw}], category="name.mismatch")
    # The conversation side masks the user's names before anything; numbers are masked here again.
    service.record_user_message(view.id, f"林**又问 {ID_NUMBER} {PHONE}")
    service.set_callback_phone(view.id, CALLBACK)
    service.claim(view.id, agents[0])
    service.agent_message(view.id, agents[0], f"{NAME}您好 {PHONE}")
    service.add_note(view.id, agents[0], raw)
    detail = service.detail(view.id, agents[0])
    service.resolve(view.id, agents[0], raw)
    shown = json.dumps([detail, service.get(view.id).public(), service.events_after(0, agents[0].id),
                        service.history(view.id)], ensure_ascii=False)
    stored = dump(db)
    for value in RAW_PII + (CALLBACK,):
        assert value not in stored, value
        assert value not in shown, value
    assert "林**" in service.get(view.id).summary
    # The masking read of the account is audited like any other.
    with db.connect() as conn:
        purposes = {r for (r,) in conn.execute(text("SELECT purpose FROM account_reads"))}
    assert "ticket_masking" in purposes
