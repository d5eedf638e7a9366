"""Limits on what a request may cost before the routes see it, as plain ASGI.

- A request with a body that needs the API key is refused (401) before its body is read.
- A body over `max_body_bytes` is refused (413): at once when its Content-Length says so,
  and otherwise as soon as the bytes read pass the limit.
- A body that stops arriving is refused (408) after `body_timeout_s` without a byte.
"""

import asyncio

from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException
from starlette.requests import Request

from app.auth import UNAUTHORIZED, has_valid_key
from app.errors import error_body

_WITH_BODY = {"POST", "PUT", "PATCH"}


class RequestLimits:
    def __init__(self, app, max_body_bytes: int, body_timeout_s: float):
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.body_timeout_s = body_timeout_s

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] not in _WITH_BODY:
            return await self.app(scope, receive, send)
        if not has_valid_key(Request(scope)):
            code, message, headers = UNAUTHORIZED
            return await JSONResponse(error_body(code, message), 401, headers=headers)(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.max_body_bytes:
            response = JSONResponse(error_body("payload_too_large", self._too_large()), 413)
            return await response(scope, receive, send)
        received, complete = 0, False

        async def limited_receive():
            nonlocal received, complete
            if complete:  # later reads wait for a disconnect, for as long as the response runs
                return await receive()
            try:
                async with asyncio.timeout(self.body_timeout_s):  # no task per read, as wait_for makes in 3.11
                    message = await receive()
            except TimeoutError:
                raise HTTPException(408, f"the request body stopped arriving for {self.body_timeout_s:g} s "
                                         "(AI_DIRECTOR_BODY_TIMEOUT_S); send the whole body at once") from None
            if message["type"] == "http.request":
                complete = not message.get("more_body", False)
                received += len(message.get("body", b""))
                if received > self.max_body_bytes:
                    raise HTTPException(413, self._too_large())
            return message

        await self.app(scope, limited_receive, send)

    def _too_large(self) -> str:
        return (f"the request body is over {self.max_body_bytes:,} bytes (AI_DIRECTOR_MAX_BODY_BYTES); "
                "send less text, or raise the limit")
