"""Admin: account state (bearer HC_ADMIN_TOKEN). POST stores a document; GET shows it masked."""
from __future__ import annotations

import asyncio
import json
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field, ValidationError

from accounts import service as accounts
from accounts.source import ReadOnlySource, SourceUnavailable
from api.deps import require_admin
from api.errors import ApiError, error_body
from api.openapi import body_schema
from diagnosis.account import Account, error_messages

router = APIRouter(prefix="/api/v1/admin", tags=["admin"], dependencies=[Depends(require_admin)])

MAX_DOCUMENT_BYTES = 256 * 1024   # an account is a few KB; anything near this is not one
UserId = Annotated[str, Path(min_length=1, max_length=128)]


def invalid_account(messages: list[str]) -> JSONResponse:
    """422 naming every bad field path; the messages never repeat the values (ID numbers…)."""
    body = error_body("invalid_account", "invalid account document: " + "; ".join(messages))
    body["error"]["errors"] = messages
    return JSONResponse(body, status_code=422)


ACCOUNT_BODY = body_schema(
    "AccountDocument", Account, prefix="Account",
    description="The account document (shared/CONTRACT.md). Every field is optional and unknown ones are kept; "
                "`user_id`, when given, must be the path's; a quarantine's `end` is not before its `start`.")


class AccountStored(BaseModel):
    user_id: str
    updated_at: str


class AccountView(BaseModel):
    user_id: str
    account: dict[str, Any] = Field(description="the stored document, personal values masked")


@router.post("/accounts/{user_id}", response_model=AccountStored, openapi_extra=ACCOUNT_BODY,
             responses={409: {"description": "the account source is read-only (`read_only_source`)"},
                        422: {"description": "an invalid account document (`invalid_account`, with `errors`)"}})
async def put_account(user_id: UserId, request: Request):
    """Create or replace the user's account document (shared/CONTRACT.md) → {user_id, updated_at}."""
    raw = await request.body()
    if len(raw) > MAX_DOCUMENT_BYTES:
        raise ApiError(413, "too_large", f"an account document is at most {MAX_DOCUMENT_BYTES} bytes")
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError):
        raise ApiError(400, "invalid_json", "The request body is not valid JSON.") from None
    if not isinstance(data, dict):
        return invalid_account(["document: must be a JSON object"])
    try:
        # Strict JSON types, as the schema (/openapi.json AccountDocument) says them: "true" is
        # not a boolean nor 1 a string here; dates and times as ISO 8601 strings.
        account = Account.model_validate_json(raw, strict=True)
    except ValidationError as exc:
        return invalid_account(error_messages(exc))
    if account.user_id is None:
        account.user_id = user_id            # the path names the user; the stored document says so too
    elif account.user_id != user_id:
        return invalid_account(["user_id: does not match the user_id in the path"])
    try:
        updated_at = await asyncio.to_thread(accounts.put_account, user_id, account)
    except ReadOnlySource as exc:
        raise ApiError(409, "read_only_source", str(exc)) from None
    return {"user_id": user_id, "updated_at": updated_at.isoformat()}


@router.get("/accounts/{user_id}", response_model=AccountView,
            responses={404: {"description": "no account for this user_id (`not_found`)"}})
async def get_account(user_id: UserId):
    """The stored document, every key kept, only the non-personal values in clear
    (Account.masked_document: diagnosis.account.ADMIN_VIEW); the read is audited."""
    try:
        account = await asyncio.to_thread(accounts.read_account_for, user_id, conversation_id=None,
                                          actor="admin", purpose="admin_view")
    except SourceUnavailable as exc:
        raise ApiError(503, "account_source_unavailable", str(exc)) from None
    if account is None:
        raise ApiError(404, "not_found", "no account for this user_id")
    return {"user_id": user_id, "account": account.masked_document()}
