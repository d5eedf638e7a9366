"""The queue-full refusal at the door, as plain ASGI.

While the backend holds all it can (its queue full, or as many requests past the door as
it can hold, waiting and generating), a generation request is refused (429) before FastAPI
parses and validates its body, resolves its brand or builds its prompt. Under overload
most requests are refusals, and each one then costs the event loop microseconds instead of
a request's work; counting the requests past the door also refuses a burst at once, not
after the whole burst has been parsed. The service still checks admission itself (a
request asking for several attempts needs several places; a batch needs its window).
A dry run takes no place in the queue, so one is let through even now.
"""

import json
from collections.abc import Callable

from fastapi.responses import JSONResponse

from app.errors import error_body
from app.tasks import TASKS


class QueueGate:
    def __init__(self, app, service: Callable[[], object]):
        self.app = app
        self.service = service
        self.routes = {task.route for task in TASKS.values()}
        self.inside = 0  # generation requests past the door and not yet answered

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] != "POST" or scope["path"] not in self.routes:
            return await self.app(scope, receive, send)
        service = self.service()
        backend = service.backend if service is not None else None
        if backend is None or (self.inside < backend.capacity and backend.admits(1)):
            return await self._enter(scope, receive, send)
        body = await _read_body(receive)
        if body is None:  # the client left before its body was whole: nobody to answer
            return
        if _is_dry_run(body):
            return await self._enter(scope, _replay(body, receive), send)
        why = (f"{backend.capacity} requests are already in progress" if backend.admits(1)
               else f"{service.settings.max_queue} requests are already waiting")
        refusal = service.queue_full(backend, why)
        scope.setdefault("state", {})["route_path"] = scope["path"]  # counted under its route, not as unmatched
        response = JSONResponse(error_body(refusal.code, refusal.message), refusal.status, headers=refusal.headers)
        await response(scope, receive, send)

    async def _enter(self, scope, receive, send):
        self.inside += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.inside -= 1


async def _read_body(receive) -> bytes | None:
    """The whole body (the body limits wrap `receive`), or None on a disconnect."""
    chunks = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return None
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


def _is_dry_run(body: bytes) -> bool:
    if b"dry_run" not in body:  # most bodies: no parse at all
        return False
    try:
        return json.loads(body).get("dry_run") is True
    except (ValueError, AttributeError):
        return False  # not a JSON object: the routes would answer 422, and a 429 says as much for now


def _replay(body: bytes, receive):
    """A receive that gives the app the body already read, then what the client sends next."""
    sent = False

    async def replay():
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay
