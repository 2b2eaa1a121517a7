"""Rasa's action webhook, served in this process so the index and model are loaded once."""
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


def make_executor() -> ActionExecutor:
    executor = ActionExecutor()
    executor.register_package("bot.actions")
    return executor


@router.post("/webhook")
async def webhook(request: Request):
    executor: ActionExecutor = request.app.state.executor
    try:
        action_call = await request.json()
    except ValueError:
        return JSONResponse({"error": "Invalid body request"}, status_code=400)
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
