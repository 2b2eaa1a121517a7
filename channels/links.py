"""Which account a channel's user is: a WeChat openid or an Alipay user id bound to a user id
(stands in for the 闽政通 account binding). Linked: that user is signed in on the channel, so
diagnosis works; unlinked: anonymous, asked to sign in in the mini-program.

    link(channel, external_id, user_id, actor)   → "linked" | "replaced" | "unchanged"  (audited)
    unlink(channel, external_id, actor)          → bool                                (audited)
    user_for(channel, external_id)               → user_id | None

Every change is a row of channel_link_events and a log line (with references, not the ids)."""
from __future__ import annotations

import logging

from sqlalchemy import Engine, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from core.logs import log_event
from core.pii import conversation_ref
from store import default_sessions, session_factory
from store.models import ChannelLink, ChannelLinkEvent

log = logging.getLogger("hc.channels.links")
CHANNELS = ("wechat", "alipay")

_sessions: sessionmaker[Session] | None = None


def configure(target: Engine | sessionmaker | None) -> None:
    global _sessions
    _sessions = target if target is None or isinstance(target, sessionmaker) else session_factory(target)


def sessions() -> sessionmaker[Session]:
    return _sessions if _sessions is not None else default_sessions()


def _audit(session: Session, action: str, channel: str, external_id: str, user_id: str, actor: str) -> None:
    session.add(ChannelLinkEvent(action=action, channel=channel, external_id=external_id, user_id=user_id,
                                 actor=actor))
    log_event(log, "channel_link", action=action, channel=channel, external=conversation_ref(external_id),
              user=conversation_ref(user_id), actor=actor)


def link(channel: str, external_id: str, user_id: str, actor: str) -> str:
    if channel not in CHANNELS:
        raise ValueError(f"unknown channel {channel!r}")
    for _attempt in range(2):     # two admins linking the same id at once: the loser re-reads
        try:
            with sessions().begin() as session:
                row = session.scalars(select(ChannelLink).where(
                    ChannelLink.channel == channel, ChannelLink.external_id == external_id)).first()
                if row is not None and row.user_id == user_id:
                    return "unchanged"
                if row is None:
                    session.add(ChannelLink(channel=channel, external_id=external_id, user_id=user_id,
                                            created_by=actor))
                    _audit(session, "linked", channel, external_id, user_id, actor)
                    return "linked"
                _audit(session, "unlinked", channel, external_id, row.user_id, actor)
                row.user_id, row.created_by = user_id, actor
                _audit(session, "replaced", channel, external_id, user_id, actor)
                return "replaced"
        except IntegrityError:
            continue
    raise RuntimeError("link kept conflicting")


def unlink(channel: str, external_id: str, actor: str) -> bool:
    with sessions().begin() as session:
        row = session.scalars(select(ChannelLink).where(
            ChannelLink.channel == channel, ChannelLink.external_id == external_id)).first()
        if row is None:
            return False
        _audit(session, "unlinked", channel, external_id, row.user_id, actor)
        session.delete(row)
        return True


def user_for(channel: str, external_id: str) -> str | None:
    with sessions()() as session:
        return session.scalar(select(ChannelLink.user_id).where(
            ChannelLink.channel == channel, ChannelLink.external_id == external_id))
