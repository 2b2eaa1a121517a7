"""Admin operations (bearer HC_ADMIN_TOKEN): the live knowledge base."""
from __future__ import annotations

import asyncio

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from api.deps import SettingsDep, require_admin
from api.errors import ApiError, error_body
from assistant import kb_reload, kb_sync, runtime

router = APIRouter(prefix="/api/v1/admin", tags=["admin"], dependencies=[Depends(require_admin)])


class ReloadRequest(BaseModel):
    # An index built elsewhere (`python -m retrieval build --out DIR`); by default the app looks
    # for one matching the KB and builds it when there is none.
    index_dir: str | None = Field(default=None, max_length=1000)


class KbOut(BaseModel):
    kb_version: str
    entries: int


class ReloadOut(BaseModel):
    status: str                          # "ok"
    kb_version: str
    previous_kb_version: str | None
    entries: int
    index_dir: str | None = Field(description="the index now serving (null: BM25 only)")
    built: bool = Field(description="true when this reload encoded the KB itself")
    seconds: float


RELOAD_ERRORS = {
    409: {"description": "another reload is running (`reload_in_progress`), or no index can be made or used "
                         "from this KB or `index_dir` (`reload_failed`); the current index keeps serving"},
    422: {"description": "a malformed KB (`kb_invalid`, with `line`), or an invalid body"},
}


@router.get("/kb", response_model=KbOut)
async def kb_status():
    """The KB version and size the app is answering from."""
    if not runtime.ready():
        raise ApiError(503, "not_ready", "the index is still loading", headers={"Retry-After": "5"})
    kb = runtime.retriever().kb
    return {"kb_version": kb.version, "entries": len(kb.entries)}


@router.post("/kb/reload", response_model=ReloadOut, responses=RELOAD_ERRORS)
async def reload_kb(settings: SettingsDep, body: ReloadRequest | None = None):
    """Re-read kb/faq_zh.md, rebuild (or find) its index and swap it in without a restart.

    422 with the line for a malformed KB (the current index keeps serving), 409 while another
    reload runs or when no index can be made."""
    from retrieval.kb import KBError

    if not runtime.ready():
        raise ApiError(503, "not_ready", "the index is still loading; reload after start-up",
                       headers={"Retry-After": "5"})
    try:
        # A rebuild encodes the KB (seconds of CPU): a worker thread keeps every other request
        # served meanwhile by the current retriever.
        done = await asyncio.to_thread(kb_reload.reload, settings, body.index_dir if body else None)
    except KBError as exc:
        body_ = error_body("kb_invalid", str(exc))
        body_["error"]["line"] = exc.line
        return JSONResponse(body_, status_code=422)
    except kb_reload.ReloadBusy as exc:
        raise ApiError(409, "reload_in_progress", str(exc)) from exc
    except kb_reload.ReloadFailed as exc:
        raise ApiError(409, "reload_failed", str(exc)) from exc
    except OSError as exc:
        # index_dir names nothing readable (too long, no permission, not a folder...), or the
        # disk refused the new index: the current one keeps serving either way.
        raise ApiError(409, "reload_failed", f"the index folder cannot be used: {exc.strerror or exc}") from None
    kb_sync.announce()        # the other instances compare and follow (assistant/kb_sync.py)
    return {"status": "ok", **done.as_dict()}
