import httpx
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from api.deps import RasaDep
from assistant import runtime

router = APIRouter(tags=["health"])


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


@router.get("/healthz")
async def healthz(request: Request, rasa: RasaDep):
    """200 only once the index, the action handlers and the Rasa server are all ready."""
    checks = {"index": runtime.ready(), "actions": await _actions_ready(request), "bot": await rasa.ready()}
    ok = all(checks.values())
    body = {"status": "ok" if ok else "starting", "checks": checks}
    if ok:
        body["kb_version"] = runtime.retriever().kb.version
    return JSONResponse(body, status_code=200 if ok else 503)
