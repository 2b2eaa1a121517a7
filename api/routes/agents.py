"""Admin: hotline agents' bearer tokens for the agent routes (bearer HC_ADMIN_TOKEN)."""
from __future__ import annotations

import asyncio

from fastapi import APIRouter, Depends
from pydantic import BaseModel, Field

from accounts import service as accounts
from api.deps import require_admin

router = APIRouter(prefix="/api/v1/admin", tags=["admin"], dependencies=[Depends(require_admin)])


class AgentCreate(BaseModel):
    name: str = Field(min_length=1, max_length=100, pattern=r"\S")


class AgentPublic(BaseModel):
    agent_id: int
    token: str                 # shown once: only its hash is stored


@router.post("/agents", response_model=AgentPublic)
async def create_agent(body: AgentCreate):
    agent_id, token = await asyncio.to_thread(accounts.create_agent, body.name)
    return AgentPublic(agent_id=agent_id, token=token)
