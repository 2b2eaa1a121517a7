"""Demo sign-in: only when HC_DEMO=1, and only for the fictitious demo-* accounts."""
from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, Field

from accounts import demo, service
from api.errors import ApiError

router = APIRouter(prefix="/api/v1/demo", tags=["demo"])


class DemoSignIn(BaseModel):
    user_id: str = Field(min_length=1, max_length=128)


def _require_demo(request: Request) -> None:
    if not request.app.state.settings.demo:
        raise ApiError(404, "not_found", "demo mode is off (set HC_DEMO=1)")


@router.get("/accounts")
async def demo_accounts(request: Request):
    """The demo accounts you can chat as, with what each one shows."""
    _require_demo(request)
    return {"accounts": [{"user_id": d["user_id"], "label": d["demo_label"]}
                         for d in demo.documents(demo_today())]}


@router.post("/sessions")
async def demo_session(body: DemoSignIn, request: Request):
    _require_demo(request)
    if not body.user_id.startswith(demo.PREFIX):
        raise ApiError(403, "forbidden", "demo sign-in is only for demo-* accounts")
    token, expires_at = await run_in_threadpool(service.create_session, body.user_id)
    return {"token": token, "expires_at": expires_at.isoformat()}


def demo_today():
    from assistant.diagnose import china_today

    return china_today()
