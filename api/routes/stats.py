"""Admin: the hotline figures (bearer HC_ADMIN_TOKEN), as `python -m tickets report` prints them."""
from __future__ import annotations

import asyncio
from datetime import timezone
from typing import Annotated

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel

from api.deps import require_admin
from api.errors import ApiError
from api.routes.agent import errors
from tickets import stats

router = APIRouter(prefix="/api/v1/admin", tags=["admin"], dependencies=[Depends(require_admin)])

Bound = Annotated[str | None, Query(max_length=40, description="YYYY-MM-DD (a Beijing day) or an ISO 8601 time "
                                                              "(Beijing time when it names no zone); since < until",
                                    json_schema_extra={"anyOf": [{"type": "string", "format": "date", "maxLength": 40},
                                                                 {"type": "string", "format": "date-time",
                                                                  "maxLength": 40},
                                                                 {"type": "string", "maxLength": 0,
                                                                  "description": "empty: the default"}]})]


class SpreadPublic(BaseModel):
    count: int
    median: float | None
    p90: float | None


class SatisfactionPublic(BaseModel):
    counts: dict[str, int]          # "1" (bad) … "3" (good)
    rated: int
    mean: float | None


class ContainmentPublic(BaseModel):
    contained: int
    rate: float | None


class StatsPublic(BaseModel):
    since: str
    until: str
    conversations: int
    answered: int
    clarified: int
    abstained: int
    handoffs: int
    tickets_by_category: dict[str, int]
    tickets_by_status: dict[str, int]
    wait_to_claim_s: SpreadPublic
    first_response_s: SpreadPublic
    time_to_resolve_s: SpreadPublic
    satisfaction: SatisfactionPublic
    containment: ContainmentPublic


@router.get("/stats", response_model=StatsPublic, responses=errors(401, 403, 422, 503))
async def hotline_stats(since: Bound = None, until: Bound = None):
    """Conversations, the bot's answers, hand-offs, ticket times and satisfaction over
    [since, until) (default: the last 7 days)."""
    try:
        start, end = stats.period(since, until)
        start.astimezone(timezone.utc), end.astimezone(timezone.utc)     # year 1 at +08:00 is year 0 in UTC
    except (ValueError, OverflowError) as exc:
        raise ApiError(422, "invalid_request", f"since/until: {exc}") from None
    return StatsPublic(**await asyncio.to_thread(stats.report, start, end))
