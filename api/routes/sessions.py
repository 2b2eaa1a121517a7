"""Admin: user session tokens, standing in for the channel's login handshake (bearer HC_ADMIN_TOKEN)."""
from __future__ import annotations

import asyncio
from datetime import datetime

from fastapi import APIRouter, Depends
from pydantic import BaseModel, Field

from accounts import service as accounts
from api.deps import SettingsDep, require_admin

router = APIRouter(prefix="/api/v1/admin", tags=["admin"], dependencies=[Depends(require_admin)])


class SessionCreate(BaseModel):
    user_id: str = Field(min_length=1, max_length=128)


class SessionPublic(BaseModel):
    token: str                 # shown once: only its hash is stored
    expires_at: datetime


@router.post("/sessions", response_model=SessionPublic)
async def create_session(body: SessionCreate, settings: SettingsDep):
    """A session token for user_id; with it, /api/v1/chat reads that user's account and no other."""
    token, expires_at = await asyncio.to_thread(accounts.create_session, body.user_id,
                                                ttl_s=settings.session_ttl_s)
    return SessionPublic(token=token, expires_at=expires_at)
