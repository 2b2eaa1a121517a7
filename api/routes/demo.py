"""Demo sign-in: only when HC_DEMO=1, and only for the accounts the demo loader stored as demo."""
from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, Field

from accounts import demo, service
from api.errors import ApiError

router = APIRouter(prefix="/api/v1/demo", tags=["demo"])


class DemoSignIn(BaseModel):
    user_id: str = Field(min_length=1, max_length=128)


class DemoAccountOut(BaseModel):
    user_id: str
    label: str


class DemoAccountsOut(BaseModel):
    accounts: list[DemoAccountOut]


class DemoSessionOut(BaseModel):
    token: str
    token_id: str = Field(description="the session's public id (to list or revoke it)")
    expires_at: str


def _require_demo(request: Request) -> None:
    if not request.app.state.settings.demo:
        raise ApiError(404, "not_found", "demo mode is off (set HC_DEMO=1)")


@router.get("/accounts", response_model=DemoAccountsOut, responses={404: {"description": "demo mode is off"}})
async def demo_accounts(request: Request):
    """The demo accounts you can chat as (those the store holds as demo), with what each one shows."""
    _require_demo(request)

    def listed() -> list[dict]:
        return [{"user_id": d["user_id"], "label": d["demo_label"]}
                for d in demo.documents(demo_today()) if service.is_demo_account(d["user_id"])]

    return {"accounts": await run_in_threadpool(listed)}


@router.post("/sessions", response_model=DemoSessionOut, responses={403: {"description": "not a demo account (not_a_demo_account)"},
                                     404: {"description": "demo mode is off"}})
async def demo_session(body: DemoSignIn, request: Request):
    """A session token for one of the demo accounts; any other account, whatever its id, → 403."""
    _require_demo(request)
    # The store's flag decides (set only by the demo loader), never the id's "demo-" prefix or a
    # document field: an admin can create "demo-x" as a real account, and that one stays closed.
    if not await run_in_threadpool(service.is_demo_account, body.user_id):
        raise ApiError(403, "not_a_demo_account", "demo sign-in is only for the demo accounts")
    issued = await run_in_threadpool(service.issue_session, body.user_id)
    return {"token": issued.token, "token_id": issued.token_id, "expires_at": issued.expires_at.isoformat()}


def demo_today():
    from assistant.diagnose import china_today

    return china_today()
