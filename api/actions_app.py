"""Rasa's action webhook: its own small app on its own loopback listener, in the app's process.

In the app's process so the index, the model and the services' state are loaded once; on its own
listener (127.0.0.1:HC_ACTIONS_PORT, never the user-facing port) so nothing users can reach can
call an action, and with the shared secret in a header (never the URL, which ends up in logs).

Rasa is configured not to send its domain with every call (enable_selective_domain in
core/rasa_endpoints.py: serialising it cost each turn). rasa-sdk then wants the domain from a
first call plus a digest that Rasa 3.6 never sends, so the webhook supplies the bot's own
domain file when a call comes without one; our actions do not read it.
"""
from __future__ import annotations

import json
import logging
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import yaml
from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse
from rasa_sdk.executor import ActionExecutor
from rasa_sdk.interfaces import (
    ActionExecutionRejection,
    ActionMissingDomainException,
    ActionNotFoundException,
)

from api import errors
from api.deps import require_internal
from assistant.texts import text
from core.settings import Settings

log = logging.getLogger("hc.actions")

DOMAIN_FILE = Path(__file__).resolve().parents[1] / "bot" / "domain.yml"
MAX_CALL_BYTES = 4 * 1024 * 1024   # a tracker of a long conversation; far more is not Rasa


def make_executor() -> ActionExecutor:
    executor = ActionExecutor()
    executor.register_package("bot.actions")
    return executor


def load_domain(path: Path = DOMAIN_FILE) -> dict[str, Any]:
    return yaml.safe_load(path.read_text(encoding="utf-8")) or {}


def _bad(message: str, status: int = 400) -> JSONResponse:
    return JSONResponse(errors.error_body("bad_request", message), status_code=status)


def action_call_problem(call: Any) -> str | None:
    """What makes a body no action call Rasa would send, or None when it is one."""
    if not isinstance(call, dict):
        return "body must be a JSON object"
    if not isinstance(call.get("next_action"), str) or not call["next_action"]:
        return "next_action must be a non-empty string"
    tracker = call.get("tracker")
    if not isinstance(tracker, dict) or not isinstance(tracker.get("sender_id"), str):
        return "tracker must be an object with a sender_id"
    for key, kind in (("latest_message", dict), ("slots", dict), ("events", list)):
        if key in tracker and tracker[key] is not None and not isinstance(tracker[key], kind):
            return f"tracker.{key} has the wrong type"
    if call.get("domain") is not None and not isinstance(call["domain"], dict):
        return "domain must be an object"
    return None


# Every custom action is the last step of its rule (bot/data/rules.yml; tests/test_action_webhook.py
# holds the rules to that): after it the bot listens. Saying so in the action's events spares Rasa
# a second run of its policies per turn (the followup action is taken without predicting).
TURN_ENDS = {"event": "followup", "name": "action_listen"}


def ending_turn(response: dict[str, Any]) -> dict[str, Any]:
    events = response.get("events")
    response["events"] = [*(events if isinstance(events, list) else []), TURN_ENDS]
    return response


def apology(tracker: dict[str, Any]) -> dict[str, Any]:
    """The action response for an action that failed: a polite message, then listening."""
    slots = tracker.get("slots") if isinstance(tracker.get("slots"), dict) else {}
    lang = "en" if slots.get("lang") == "en" else "zh"
    return ending_turn({"events": [], "responses": [{"text": text("service_unavailable", lang)},
                                                    {"custom": {"meta": {"error": "service_unavailable"}}}]})


def create_actions_app(settings: Settings) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI):
        app.state.executor = make_executor()
        app.state.domain = load_domain()
        yield

    app = FastAPI(title="八闽健康码 Assistant actions (internal)", lifespan=lifespan,
                  docs_url=None, redoc_url=None, openapi_url=None)
    app.state.settings = settings
    errors.install(app)

    @app.get("/healthz")
    async def healthz(request: Request):
        ready = getattr(request.app.state, "executor", None) is not None
        return JSONResponse({"status": "ok" if ready else "starting"}, status_code=200 if ready else 503)

    @app.post("/webhook", dependencies=[Depends(require_internal)])
    async def webhook(request: Request):
        raw = await request.body()
        if len(raw) > MAX_CALL_BYTES:
            return _bad("action call too large", 413)
        try:
            action_call = json.loads(raw)
        except (ValueError, RecursionError):
            return _bad("body is not valid JSON")
        problem = action_call_problem(action_call)
        if problem:
            return _bad(problem)
        if not action_call.get("domain"):
            action_call["domain"] = request.app.state.domain
        executor: ActionExecutor = request.app.state.executor
        try:
            result = await executor.run(action_call)
        except ActionExecutionRejection as e:
            return JSONResponse({"error": e.message, "action_name": e.action_name}, status_code=400)
        except ActionNotFoundException as e:
            return JSONResponse({"error": e.message, "action_name": e.action_name}, status_code=404)
        except ActionMissingDomainException as e:
            # Rasa answers 449 by sending the call again with the domain attached.
            return JSONResponse({"error": e.message, "action_name": e.action_name}, status_code=449)
        except Exception as exc:  # noqa: BLE001 — any failure of an action's service
            # An error status would leave the user's turn without any reply (Rasa logs it and
            # listens again): the action "answers" with an apology and the hotline instead.
            log.error("action failed", extra={"fields": {"action": action_call["next_action"],
                                                        "error": errors.error_kind(exc),
                                                        "where": errors.error_where(exc)}})
            return JSONResponse(apology(action_call["tracker"]))
        return JSONResponse(ending_turn(result.model_dump()) if result else None)

    return app
