"""assistant.conversations: the app's record of whose each conversation is (what actions read)."""
from __future__ import annotations

import threading

import pytest
from sqlalchemy import select

from _store_fixtures import DATABASES, migrated_for
from assistant import conversations
from bot.actions.personal import signed_in_user
from store.models import Conversation


@pytest.fixture(params=DATABASES)
def db(request, tmp_path):
    with migrated_for(request.param, tmp_path, conversations) as engine:
        yield engine


class _Tracker:
    def __init__(self, sender_id):
        self.sender_id = sender_id


def test_recorded_once_and_read_back(db):
    assert conversations.record("user:ab:wx-1", "u-1", "wechat") is True     # created here
    assert conversations.record("user:ab:wx-1", "u-1", "wechat") is False    # later turns: no second row
    assert conversations.record("anon:wx-2", None) is True
    with db.connect() as conn:
        rows = conn.execute(select(Conversation.id, Conversation.user_id, Conversation.channel)).all()
    assert sorted(rows) == [("anon:wx-2", None, "api"), ("user:ab:wx-1", "u-1", "wechat")]
    conversations.configure(db)                                   # a fresh process: no cache
    assert conversations.user_of("user:ab:wx-1") == "u-1"
    assert conversations.user_of("anon:wx-2") is None
    assert conversations.record("anon:wx-2", None) is False     # known to the database, not created


def test_an_unknown_conversation_has_no_user(db):
    with pytest.raises(conversations.UnknownConversation):
        conversations.user_of("user:ab:never-seen")
    # What an action makes of it: anonymous, whatever the message says.
    assert signed_in_user(_Tracker("user:ab:never-seen")) is None


def test_a_conversation_never_changes_owner(db):
    conversations.record("user:ab:wx-1", "u-1")
    conversations.configure(db)
    with pytest.raises(ValueError):
        conversations.record("user:ab:wx-1", "u-2")
    assert conversations.user_of("user:ab:wx-1") == "u-1"


def test_two_instances_recording_the_same_first_turn(db):
    """Two app processes (here threads with their own cache) racing on one conversation."""
    errors, created = [], []

    def first_turn():
        try:
            created.append(conversations.record("user:ab:race", "u-1"))
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=first_turn) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert created.count(True) == 1        # exactly one of them wrote it: only that one skips the ticket look-up
    assert conversations.user_of("user:ab:race") == "u-1"
