"""One error shape for every failure: {"error": {"code", "message", "param"?, ...}}."""

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger(__name__)


class APIError(Exception):
    """Raised anywhere in the request path; becomes the JSON error response."""

    def __init__(self, status: int, code: str, message: str, *, param: str | None = None, headers=None, **extra):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.param, self.headers, self.extra = param, headers or {}, extra


class FieldError(BaseModel):
    param: str = Field(description="The field at fault, e.g. `context` or `objectives[2]`.")
    message: str


class ErrorDetail(BaseModel):
    # Some codes carry more fields than these (the documented ones are listed); clients must ignore the rest.
    model_config = ConfigDict(extra="allow")

    code: str = Field(description="Stable, machine-readable: `brand_not_found`, `queue_full`, `not_ready`, ...")
    message: str = Field(description="A sentence a person can act on.")
    param: str | None = Field(None, description="The request field at fault; absent when none is.")
    suggestions: list[str] | None = Field(None, description="`brand_not_found` only: the closest brand names.")
    adapters: list[str] | None = Field(None, description="`adapter_not_found` only: the adapter names served.")
    errors: list[FieldError] | None = Field(None, description="`invalid_request` only: up to 10 problems.")


class ErrorResponse(BaseModel):
    """The one error shape of every failure."""

    error: ErrorDetail


def error_body(code: str, message: str, param: str | None = None, **extra) -> dict:
    body = {"code": code, "message": message}
    if param is not None:
        body["param"] = param
    body.update(extra)
    return {"error": body}


def _field_name(loc: tuple) -> str:
    # ("body", "context") -> "context"; ("body", "objectives", 2) -> "objectives[2]"
    parts = [p for p in loc if p not in ("body", "query", "path", "header")]
    name = ""
    for p in parts:
        name += f"[{p}]" if isinstance(p, int) else (f".{p}" if name else str(p))
    return name or "body"


def _validation_message(err: dict) -> str:
    field = _field_name(tuple(err["loc"]))
    if err["type"] == "json_invalid":
        return f"request body is not valid JSON ({err.get('ctx', {}).get('error', 'parse error')}); send a JSON object"
    if err["type"] == "missing":
        return f"field '{field}' is required"
    if err["type"] == "extra_forbidden":
        return f"field '{field}' is not accepted by this endpoint; check its spelling"
    msg = err["msg"]
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, ") :]
    return f"field '{field}': {msg}"


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(APIError)
    async def _api_error(request: Request, exc: APIError):
        return JSONResponse(
            error_body(exc.code, exc.message, exc.param, **exc.extra), status_code=exc.status, headers=exc.headers
        )

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError):
        errors = list(exc.errors())
        first = errors[0] if errors else {"loc": ("body",), "msg": "invalid request", "type": "value_error"}
        details = [{"param": _field_name(tuple(e["loc"])), "message": _validation_message(e)} for e in errors[:10]]
        return JSONResponse(
            error_body("invalid_request", _validation_message(first), _field_name(tuple(first["loc"])), errors=details),
            status_code=422,
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException):
        code = {400: "invalid_body", 404: "not_found", 405: "method_not_allowed", 408: "request_timeout",
                413: "payload_too_large"}.get(exc.status_code, "http_error")
        message = str(exc.detail)
        if exc.status_code == 404:
            message = f"no route {request.method} {request.url.path}; see /docs for the API"
        elif exc.status_code == 400:  # FastAPI's words for a body it could not decode
            message = "the request body could not be read; send one JSON object encoded as UTF-8"
        return JSONResponse(error_body(code, message), status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception):
        request_id = getattr(request.state, "request_id", None)
        log.exception("request %s failed", request_id)
        return JSONResponse(
            error_body("internal_error", f"the server failed on this request (id {request_id}); it is logged", None),
            status_code=500,
        )


_RETRY_AFTER = {"Retry-After": {"description": "Seconds to wait before retrying.", "required": True,
                                "schema": {"type": "integer", "minimum": 1}}}
# status -> (when it happens, an example body, response headers)
_ERRORS: dict[int, tuple[str, dict, dict]] = {
    400: ("The body could not be read (not UTF-8).",
          error_body("invalid_body", "the request body could not be read; send one JSON object encoded as UTF-8"), {}),
    401: ("The server has an API key and the request did not carry it.",
          error_body("unauthorized", "missing or wrong API key; send it as 'Authorization: Bearer <key>' or "
                     "'X-API-Key'"),
          {"WWW-Authenticate": {"description": "`Bearer`", "required": True, "schema": {"type": "string"}}}),
    404: ("No brand matches the name or alias (`brand_not_found`, with suggestions), or no adapter has the name "
          "(`adapter_not_found`, with `adapters`: the names served).",
          error_body("brand_not_found", "no brand matches 'Coffee Labz Shop'. Did you mean: CoffeeLab? New brands are "
                     "added in brands.json.", "brand", suggestions=["CoffeeLab"]), {}),
    408: ("The request body stopped arriving (AI_DIRECTOR_BODY_TIMEOUT_S).",
          error_body("request_timeout", "the request body stopped arriving for 30 s (AI_DIRECTOR_BODY_TIMEOUT_S); "
                     "send the whole body at once"), {}),
    413: ("The body is over AI_DIRECTOR_MAX_BODY_BYTES.",
          error_body("payload_too_large", "the request body is over 1,048,576 bytes (AI_DIRECTOR_MAX_BODY_BYTES); "
                     "send less text, or raise the limit"), {}),
    422: ("A field is missing, unknown or out of range (`invalid_request`), the prompt does not fit "
          "max_seq_length (`prompt_too_long`, `brand_profile_too_long`), the model server refused the "
          "request (`backend_rejected`), or an adapter folder cannot be served (`adapter_invalid`, on a reload; "
          "the version before keeps serving).",
          error_body("invalid_request", "field 'context': context has no words (only emoji or symbols); describe it "
                     "in words", "context", errors=[{"param": "context", "message": "field 'context': context has no "
                     "words (only emoji or symbols); describe it in words"}]), {}),
    429: ("The queue is full (AI_DIRECTOR_MAX_QUEUE): retry after Retry-After seconds.",
          error_body("queue_full", "the server is at capacity (64 requests are already waiting); retry after the "
                     "Retry-After seconds"), _RETRY_AFTER),
    431: ("The request line and headers are over AI_DIRECTOR_MAX_HEADER_BYTES; the connection is closed.",
          error_body("headers_too_large", "the request line and headers are over 32,768 bytes "
                     "(AI_DIRECTOR_MAX_HEADER_BYTES); send fewer or shorter headers"), {}),
    500: ("The server or the model failed on this request; it is logged with the request id.",
          error_body("internal_error", "the server failed on this request (id 3f2a9c1b7d4e5a60); it is logged"), {}),
    503: ("The model or the brands are still loading (`not_ready`), the model server cannot be reached "
          "(`backend_unavailable`), or this server is shutting down (`shutting_down`): retry after Retry-After "
          "seconds.",
          error_body("not_ready", "the model is still loading; retry shortly"), _RETRY_AFTER),
    504: ("No answer within AI_DIRECTOR_REQUEST_TIMEOUT_S.",
          error_body("timeout", "no answer within 120 s (AI_DIRECTOR_REQUEST_TIMEOUT_S); the server is busy or "
                     "max_new_tokens is large; retry or ask for fewer tokens"), {}),
}


def error_responses(*statuses: int) -> dict[int, dict]:
    """The `responses=` entries of a route for the statuses it can return, all in the one error shape."""
    responses = {}
    for status in statuses:
        description, example, headers = _ERRORS[status]
        responses[status] = {"model": ErrorResponse, "description": description,
                             "content": {"application/json": {"example": example}}}
        if headers:
            responses[status]["headers"] = headers
    return responses
