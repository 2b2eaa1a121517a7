import httpx
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from api.deps import RasaDep
from api.errors import error_body
from assistant import runtime

router = APIRouter(tags=["health"])


class ChecksOut(BaseModel):
    index: bool
    actions: bool
    bot: bool


class HealthOut(BaseModel):
    status: str                  # "ok"
    checks: ChecksOut
    kb_version: str | None = None


async def _actions_ready(request: Request) -> bool:
    """The action webhook's own listener answers (api.actions_app, loopback)."""
    url = getattr(request.app.state, "actions_health", None)
    if url is None:
        return False
    try:
        async with httpx.AsyncClient(timeout=2.0) as client:
            return (await client.get(url)).status_code == 200
    except httpx.HTTPError:
        return False


@router.get("/healthz", response_model=HealthOut,
            responses={503: {"description": "starting: `checks` says what is not ready yet (`not_ready`)"}})
async def healthz(request: Request, rasa: RasaDep):
    """200 only once the index, the action handlers and the Rasa server are all ready."""
    checks = {"index": runtime.ready(), "actions": await _actions_ready(request), "bot": await rasa.ready()}
    ok = all(checks.values())
    if not ok:
        # The error shape every 503 has, with what is still starting.
        waiting = ", ".join(name for name, ready in checks.items() if not ready)
        return JSONResponse({"status": "starting", "checks": checks,
                             **error_body("not_ready", f"starting: {waiting}")}, status_code=503)
    return {"status": "ok", "checks": checks, "kb_version": runtime.retriever().kb.version}
