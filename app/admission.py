"""The queue-full refusal at the door, as plain ASGI.

While the backend holds all it can (its queue full, or as many requests past the door as
it can hold, waiting and generating), a generation request is refused (429) before FastAPI
parses and validates its body, resolves its brand or builds its prompt. Under overload
most requests are refusals, and each one then costs the event loop microseconds instead of
a request's work; counting the requests past the door also refuses a burst at once, not
after the whole burst has been parsed. The service still checks admission itself (a
request asking for several attempts needs several places; a batch needs its window).
A dry run takes no place in the queue, so one is let through even now.

Past the door, a request lets the rest of the loop's turn go first, and while refusals are
near (the backend over half full, or a refusal within the last second), admitted requests
go on one per turn. A refusal costs the loop ~0.2 ms and an admitted request 1-2 ms
(FastAPI, the brand layer); in a burst, refusals that arrived with or after a row of
admitted requests would otherwise wait for all of their work. The admitted ones, bound for
a queue where they wait hundreds of milliseconds, start a few milliseconds later at most.
A server with room to spare takes no turns: they would cost it throughput.
"""

import asyncio
import json
import time
from collections.abc import Callable

from fastapi.responses import JSONResponse

from app.errors import error_body
from app.tasks import TASKS

REFUSING_S = 1.0  # how long after a refusal admitted requests still take turns


class QueueGate:
    def __init__(self, app, service: Callable[[], object]):
        self.app = app
        self.service = service
        self.routes = {task.route for task in TASKS.values()}
        self.inside = 0  # generation requests past the door and not yet answered
        self.turnstile = asyncio.Lock()  # when crowded, held by one admitted request for one turn
        self.refused_at = float("-inf")

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] != "POST" or scope["path"] not in self.routes:
            return await self.app(scope, receive, send)
        service = self.service()
        backend = service.backend if service is not None else None
        if backend is None or (self.inside < backend.capacity and backend.admits(1)):
            return await self._enter(scope, receive, send, backend.capacity if backend else None)
        body = await _read_body(receive)
        if body is None:  # the client left before its body was whole: nobody to answer
            return
        if _is_dry_run(body):
            return await self._enter(scope, _replay(body, receive), send, backend.capacity)
        why = (f"{backend.capacity} requests are already in progress" if backend.admits(1)
               else f"{service.settings.max_queue} requests are already waiting")
        self.refused_at = time.monotonic()
        refusal = service.queue_full(backend, why)
        scope.setdefault("state", {})["route_path"] = scope["path"]  # counted under its route, not as unmatched
        response = JSONResponse(error_body(refusal.code, refusal.message), refusal.status, headers=refusal.headers)
        await response(scope, receive, send)

    async def _enter(self, scope, receive, send, capacity: int | None):
        self.inside += 1
        try:
            await asyncio.sleep(0)  # the refusals ready in this turn of the loop go first
            if capacity is not None and self._crowded(capacity):
                async with self.turnstile:
                    await asyncio.sleep(0)
            await self.app(scope, receive, send)
        finally:
            self.inside -= 1

    def _crowded(self, capacity: int) -> bool:
        return self.inside * 2 > capacity or time.monotonic() - self.refused_at < REFUSING_S


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
