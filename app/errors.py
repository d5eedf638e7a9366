"""One error shape for every failure: {"error": {"code", "message", "param"?, ...}}."""

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger(__name__)


class APIError(Exception):
    """Raised anywhere in the request path; becomes the JSON error response."""

    def __init__(self, status: int, code: str, message: str, *, param: str | None = None, headers=None, **extra):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.param, self.headers, self.extra = param, headers or {}, extra


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
