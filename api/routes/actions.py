"""Rasa's action webhook, served in this process so the index and model are loaded once.

Rasa is configured not to send its domain with every call (enable_selective_domain in
core/rasa_endpoints.py: serialising it cost each turn). rasa-sdk then wants the domain from a
first call plus a digest that Rasa 3.6 never sends, so the webhook supplies the bot's own
domain file when a call comes without one; our actions do not read it.
"""
from pathlib import Path
from typing import Any

import yaml
from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from rasa_sdk.executor import ActionExecutor
from rasa_sdk.interfaces import (
    ActionExecutionRejection,
    ActionMissingDomainException,
    ActionNotFoundException,
)

from api.deps import require_internal

router = APIRouter(prefix="/internal/actions", tags=["internal"], include_in_schema=False,
                   dependencies=[Depends(require_internal)])


DOMAIN_FILE = Path(__file__).resolve().parents[2] / "bot" / "domain.yml"


def make_executor() -> ActionExecutor:
    executor = ActionExecutor()
    executor.register_package("bot.actions")
    return executor


def load_domain(path: Path = DOMAIN_FILE) -> dict[str, Any]:
    return yaml.safe_load(path.read_text(encoding="utf-8")) or {}


@router.post("/webhook")
async def webhook(request: Request):
    executor: ActionExecutor = request.app.state.executor
    try:
        action_call = await request.json()
    except ValueError:
        return JSONResponse({"error": "Invalid body request"}, status_code=400)
    if isinstance(action_call, dict) and not action_call.get("domain"):
        action_call["domain"] = request.app.state.domain
    try:
        result = await executor.run(action_call)
    except ActionExecutionRejection as e:
        return JSONResponse({"error": e.message, "action_name": e.action_name}, status_code=400)
    except ActionNotFoundException as e:
        return JSONResponse({"error": e.message, "action_name": e.action_name}, status_code=404)
    except ActionMissingDomainException as e:
        # Rasa answers 449 by sending the call again with the domain attached.
        return JSONResponse({"error": e.message, "action_name": e.action_name}, status_code=449)
    return JSONResponse(result.model_dump() if result else None)
