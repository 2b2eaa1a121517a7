"""Conversation ids of the channels that push, and who is behind one.

A WeChat openid or an Alipay user id is the channel's own; the conversation id names the channel
first ("wechat:…", "alipay:…"), so it can never be one that /api/v1/chat makes (those start with
"anon:" or "user:"): nobody can read a WeChat user's conversation by choosing a sender id.
A linked user's conversation carries a digest of the user id, as rasa_sender's does, so linking
starts a signed-in conversation rather than handing the anonymous one's history to an account."""
from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from channels import links

# openids are [A-Za-z0-9_-]{28}; Alipay user ids 2088 + digits, open_ids alphanumerics: a bound
# both keep ids sane in logs and keys and refuse anything else as a bad push.
EXTERNAL_ID = re.compile(r"^[A-Za-z0-9_\-]{1,128}$")


@dataclass(frozen=True)
class ChannelUser:
    channel: str
    external_id: str
    user_id: str | None          # the linked account, None: anonymous

    @property
    def conversation_id(self) -> str:
        return conversation_id(self.channel, self.external_id, self.user_id)


def conversation_id(channel: str, external_id: str, user_id: str | None) -> str:
    if user_id is None:
        return f"{channel}:anon:{external_id}"
    return f"{channel}:user:{hashlib.sha256(user_id.encode()).hexdigest()[:16]}:{external_id}"


def external_id_of(conversation: str, channel: str) -> str | None:
    """The channel's user id at the end of one of its conversation ids (None: not that channel's)."""
    if not conversation.startswith(channel + ":"):
        return None
    tail = conversation.rsplit(":", 1)[-1]
    return tail if EXTERNAL_ID.match(tail) else None


def valid_external_id(value: str | None) -> bool:
    return bool(value) and bool(EXTERNAL_ID.match(value))


def resolve(channel: str, external_id: str) -> ChannelUser:
    """The channel user as the app sees them now (linked or not)."""
    return ChannelUser(channel, external_id, links.user_for(channel, external_id))
