"""/openapi.json that tells the truth: every status an operation can answer, with the one error shape.

The routes declare what is theirs (a 409 for a claimed ticket, a 404 for an unknown one, a 502
from a platform's gateway). What middleware and dependencies add is the same for whole groups of
routes, so it is added here by walking app.routes rather than repeated in forty decorators:

- 413 everywhere (api.middleware.BodyLimit reads no body over HC_MAX_BODY_BYTES, on any route);
- 429 with `Retry-After` on every /api and channel push route (api.ratelimit);
- 503 with an optional `Retry-After` on every /api and channel route (the store's errors are
  one handler for the whole app: api.errors);
- 400 `invalid_json` on every operation with a request body, 422 on every one with parameters
  or a body (FastAPI's validation, answered by api.errors in our shape: FastAPI's own
  HTTPValidationError schema is replaced);
- 401 / 403 from the auth dependencies (require_admin, require_agent, current_user,
  require_internal), whether declared as a dependency or called by the endpoint itself, and
  the bearer security requirement that goes with them (optional where a token is optional);
- 404 on every operation with a path parameter.

Every 4xx/5xx response is `application/json` with components.schemas.ErrorResponse (declared
once; the routes' own error models are that class), whatever the route's success media type."""
from __future__ import annotations

from typing import Any

from fastapi import FastAPI, routing
from fastapi.openapi.utils import get_openapi
from fastapi.routing import APIRoute

from api import deps
from api.errors import ErrorResponse
from api.ratelimit import CHANNEL_PREFIXES, LIMITED_PREFIX

ERROR_REF = {"$ref": "#/components/schemas/ErrorResponse"}

# Text fields a route checks itself, as JSON Schema patterns (searches: "has such a character").
# VISIBLE_TEXT: what retrieval.text.clean keeps, at least one character that is not white space, a
# control, a format (zero-width, BOM, direction marks) or a private-use character, as in
# POST /api/v1/chat `text` and GET /api/v1/faq/search `q` (their own 422 `empty_text`, `empty_query`).
# NOT_BLANK: what str.strip() leaves (the agents' texts).
VISIBLE_TEXT = (r"[^\s\u0000-\u001f\u007f-\u009f\u00ad\u0600-\u0605\u061c\u06dd\u070f\u0890\u0891\u08e2\u180e"
                r"\u200b-\u200f\u2028-\u202e\u2060-\u2064\u2066-\u206f\ue000-\uf8ff\ufeff\ufff9-\ufffb]")
NOT_BLANK = r"[^\t\n\v\f\r\u001c-\u0020\u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]"
BEARER = "bearerAuth"
# One server-sent event (OpenAPI 3.1: a text/event-stream `schema` describes each event).
SSE_EVENT = {"type": "object", "description": "one server-sent event: `data` is the JSON of the item",
             "properties": {"id": {"type": "string"}, "event": {"type": "string"},
                            "data": {"type": "string", "contentMediaType": "application/json"},
                            "retry": {"type": "integer"}},
             "required": ["data"]}

DESCRIPTIONS = {
    400: "The request body is not valid JSON (`invalid_json`), or a field that does not parse.",
    401: "No token, or an unknown, expired or wrong kind of token (`unauthorized`, `invalid_token`).",
    403: "A token that may not do this (`forbidden`).",
    404: "No such resource (`not_found`).",
    409: "The resource's state does not allow it.",
    413: "The request body is over HC_MAX_BODY_BYTES (`too_large`); nothing of it was read.",
    422: "Invalid input: a parameter or body field that fails validation (`invalid_request`, ...).",
    429: "Too many requests from this client or conversation (`rate_limited`); retry after `Retry-After` seconds.",
    503: "A dependency is unreachable or starting (`store_unavailable`, `not_ready`, `bot_unavailable`, ...); retry.",
}
RETRY_AFTER = {"description": "seconds to wait before retrying", "schema": {"type": "integer", "minimum": 1}}

_AUTH_401 = {deps.require_admin, deps.require_agent, deps.current_user}
_AUTH_403 = {deps.require_admin, deps.require_internal}
_AUTH_REQUIRED = {deps.require_admin, deps.require_agent}


# Schemas of request bodies a route reads itself (declared in its openapi_extra): name → model.
EXTRA_SCHEMAS: dict[str, tuple[type, str]] = {}


def body_schema(name: str, model: type, *, prefix: str = "", description: str = "",
                media_type: str = "application/json") -> dict[str, Any]:
    """openapi_extra for a route that reads its body itself: `model`'s schema as components
    `name` (its parts as `prefix` + their names), the body required."""
    EXTRA_SCHEMAS[name] = (model, prefix)
    body: dict[str, Any] = {"required": True,
                            "content": {media_type: {"schema": {"$ref": f"#/components/schemas/{name}"}}}}
    if description:
        body["description"] = description
    return {"requestBody": body}


# Security schemes a route module declares (components.securitySchemes): name → scheme.
EXTRA_SECURITY: dict[str, dict[str, Any]] = {}


def _add_extra_schemas(schemas: dict[str, Any]) -> None:
    for name, (model, prefix) in EXTRA_SCHEMAS.items():
        schema = model.model_json_schema(ref_template="#/components/schemas/" + prefix + "{model}")
        for sub, definition in schema.pop("$defs", {}).items():
            schemas[prefix + sub] = definition
        schemas[name] = schema


def _dependency_calls(route: APIRoute) -> set:
    """Every callable the route depends on (its router's dependencies included), and the auth
    checks its endpoint calls by name (a stream that takes a bearer token or a stream ticket)."""
    calls, stack = set(), [route.dependant]
    while stack:
        dependant = stack.pop()
        if dependant.call is not None:
            calls.add(dependant.call)
        stack.extend(dependant.dependencies)
    names = set(getattr(getattr(route.endpoint, "__code__", None), "co_names", ()))
    for fn in (deps.require_admin, deps.require_agent, deps.current_user, deps.current_session,
               deps.require_internal):
        if fn.__name__ in names:
            calls.add(fn)
    if deps.current_session in calls:     # the same optional user token, with its session
        calls.add(deps.current_user)
    return calls


def _limited(path: str) -> bool:
    return path.startswith(LIMITED_PREFIX) or any(path == p or path.startswith(p + "/") for p in CHANNEL_PREFIXES)


def _served(path: str) -> bool:
    """Routes behind the store and the limiter: the API and the channels (not /healthz)."""
    return path.startswith(LIMITED_PREFIX) or path.startswith("/channels/")


def statuses_for(route: APIRoute, op: dict[str, Any]) -> set[int]:
    """The statuses middleware, dependencies and validation can give this operation."""
    calls = _dependency_calls(route)
    has_body = "requestBody" in op
    has_params = bool(op.get("parameters")) or has_body
    out = {413}
    if has_body:
        out.add(400)
    if has_params:
        out.add(422)
    if calls & _AUTH_401:
        out.add(401)
    if calls & _AUTH_403:
        out.add(403)
    if deps.require_admin in calls:
        out.add(503)                # admin routes are off (503) without HC_ADMIN_TOKEN
    if "{" in route.path_format:
        out.add(404)
    if _limited(route.path_format):
        out.add(429)
    if _served(route.path_format):
        out.add(503)
    return out


def _security(route: APIRoute) -> list[dict] | None:
    calls = _dependency_calls(route)
    if calls & _AUTH_REQUIRED:
        return [{BEARER: []}]
    if deps.current_user in calls:
        return [{}, {BEARER: []}]       # anonymous, or signed in with a user session token
    return None


def _error_response(status: int, description: str | None = None) -> dict[str, Any]:
    response: dict[str, Any] = {"description": description or DESCRIPTIONS.get(status, "Error."),
                                "content": {"application/json": {"schema": ERROR_REF}}}
    if status == 429:
        response["headers"] = {"Retry-After": {**RETRY_AFTER, "required": True}}
    elif status == 503:
        response["headers"] = {"Retry-After": {**RETRY_AFTER, "required": False}}
    return response


def _fix_operation(route: APIRoute, op: dict[str, Any]) -> None:
    responses: dict[str, Any] = op.setdefault("responses", {})
    for status in statuses_for(route, op):
        responses.setdefault(str(status), _error_response(status))
    for key, response in list(responses.items()):
        if not key.isdigit() or int(key) < 400:
            continue
        status = int(key)
        # Our error shape, as JSON, whatever the route's own media type (text/plain, SSE, XML)
        # or model (FastAPI's HTTPValidationError, a route's own copy of the error model): the
        # handlers in api.errors answer every error in that one shape.
        fixed = _error_response(status, response.get("description")
                                if response.get("description") not in (None, "Validation Error")
                                else None)
        headers = {**(response.get("headers") or {}), **fixed.get("headers", {})}
        if headers:
            fixed["headers"] = headers
        responses[key] = fixed
    security = _security(route)
    if security is not None and "security" not in op:
        op["security"] = security


def _refs(node: Any) -> set[str]:
    found, stack = set(), [node]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            ref = item.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/components/schemas/"):
                found.add(ref.rsplit("/", 1)[-1])
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return found


def _prune_schemas(schema: dict[str, Any]) -> None:
    """Drop the component schemas nothing refers to any more (FastAPI's HTTPValidationError, the
    routes' own copies of the error model): one error schema, not five."""
    components = schema.get("components", {}).get("schemas", {})
    keep, todo = set(), _refs(schema.get("paths", {}))
    while todo:
        name = todo.pop()
        if name in keep or name not in components:
            continue
        keep.add(name)
        todo |= _refs(components[name])
    for name in list(components):
        if name not in keep:
            del components[name]


def api_routes(app: FastAPI) -> list:
    """The app's API routes as FastAPI sees them for the schema (an included router's routes with
    the router's prefix and dependencies applied), those in the schema only."""
    out = []
    for context in routing.iter_route_contexts(app.routes):
        if isinstance(context.original_route, APIRoute) and context.include_in_schema:
            out.append(context)
    return out


def build(app: FastAPI) -> dict[str, Any]:
    schema = get_openapi(title=app.title, version=app.version, description=app.description,
                         routes=app.routes)
    components = schema.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    error_schema = ErrorResponse.model_json_schema(ref_template="#/components/schemas/{model}")
    for name, sub in error_schema.pop("$defs", {}).items():
        schemas[name] = sub
    schemas["ErrorResponse"] = error_schema
    _add_extra_schemas(schemas)
    components.setdefault("securitySchemes", {})[BEARER] = {
        "type": "http", "scheme": "bearer",
        "description": "HC_ADMIN_TOKEN (admin routes), an agent token (agent routes) or a user session token"}
    components["securitySchemes"].update(EXTRA_SECURITY)
    for route in api_routes(app):
        path_item = schema.get("paths", {}).get(route.path_format, {})
        for method in route.methods:
            op = path_item.get(method.lower())
            if op is not None:
                _fix_operation(route, op)
    _prune_schemas(schema)
    return schema


def install(app: FastAPI) -> None:
    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = build(app)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
