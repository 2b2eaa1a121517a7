"""The two pages people see, served from web/: the chat widget (/widget, /widget/widget.js) and
the agents' assist panel (/agent).

Only the files that exist under web/<page>/ with a known type are served (no directory walk,
no listing). Every response carries a Content-Security-Policy without 'unsafe-inline' (the pages
keep their scripts and styles in their own files), nosniff and a Referrer-Policy; the agent panel
may not be framed at all, the widget's demo page only by this origin and HC_WIDGET_FRAME_ORIGINS."""
from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, RedirectResponse

from api.errors import ApiError
from core.settings import REPO_ROOT

WEB = REPO_ROOT / "web"
TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
         ".css": "text/css; charset=utf-8", ".svg": "image/svg+xml", ".png": "image/png",
         ".ico": "image/x-icon"}

router = APIRouter(tags=["pages"], include_in_schema=False)


def csp(frame_ancestors: str) -> str:
    return "; ".join([
        "default-src 'none'", "script-src 'self'", "style-src 'self'", "img-src 'self' data:",
        "connect-src 'self'", "font-src 'self'", "media-src 'self'", "base-uri 'none'",
        "form-action 'self'", f"frame-ancestors {frame_ancestors}",
    ])


def headers(page: str, request: Request, html: bool) -> dict[str, str]:
    settings = request.app.state.settings
    if page == "agent":
        ancestors = "'none'"
    else:
        ancestors = " ".join(["'self'", *settings.widget_frame_origins])
    out = {"Content-Security-Policy": csp(ancestors), "X-Content-Type-Options": "nosniff",
           "Referrer-Policy": "no-referrer", "Cross-Origin-Opener-Policy": "same-origin"}
    if page == "agent":
        out["X-Frame-Options"] = "DENY"
    # Pages revalidate every time (a deploy shows at once); their assets too, by ETag.
    out["Cache-Control"] = "no-cache"
    return out


MAX_NAME = 64       # the pages' files have short names; a longer one is not theirs (nor a valid path)


def _file(page: str, name: str) -> Path:
    if not name or len(name) > MAX_NAME or "/" in name or "\\" in name or name.startswith("."):
        raise ApiError(404, "not_found", "no such file")
    path = WEB / page / name
    if path.suffix not in TYPES or not path.is_file():
        raise ApiError(404, "not_found", "no such file")
    return path


def _serve(page: str, name: str, request: Request) -> FileResponse:
    path = _file(page, name)
    return FileResponse(path, media_type=TYPES[path.suffix],
                        headers=headers(page, request, path.suffix == ".html"))


@router.get("/widget")
async def widget_demo(request: Request):
    return _serve("widget", "index.html", request)


@router.get("/agent")
async def agent_panel(request: Request):
    return _serve("agent", "index.html", request)


@router.get("/widget/")
async def widget_slash():
    return RedirectResponse("/widget", status_code=308)


@router.get("/agent/")
async def agent_slash():
    return RedirectResponse("/agent", status_code=308)


@router.get("/widget/{name}")
async def widget_file(name: str, request: Request):
    return _serve("widget", name, request)


@router.get("/agent/{name}")
async def agent_file(name: str, request: Request):
    return _serve("agent", name, request)
