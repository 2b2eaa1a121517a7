from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from api.deps import RasaDep
from assistant import runtime

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz(request: Request, rasa: RasaDep):
    """200 only once the index, the action handlers and the Rasa server are all ready."""
    checks = {"index": runtime.ready(), "actions": getattr(request.app.state, "executor", None) is not None, "bot": await rasa.ready()}
    ok = all(checks.values())
    body = {"status": "ok" if ok else "starting", "checks": checks}
    if ok:
        body["kb_version"] = runtime.retriever().kb.version
    return JSONResponse(body, status_code=200 if ok else 503)
