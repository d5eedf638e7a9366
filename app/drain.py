"""The draining state of a shutdown: requests in flight are counted, and once draining
starts, new requests get 503 while the ones in flight finish (see app/server.py)."""

import asyncio

from fastapi.responses import JSONResponse

from app.errors import error_body

# Probes keep answering while the service drains: liveness stays 200 (the process is
# healthy, just leaving), /metrics shows the drain, and /ready turns 503 below.
_OPEN_WHILE_DRAINING = {"/health", "/metrics"}


class Drain:
    def __init__(self) -> None:
        self.draining = False
        self.in_flight = 0
        self._idle = asyncio.Event()
        self._idle.set()

    def enter(self) -> None:
        self.in_flight += 1
        self._idle.clear()

    def leave(self) -> None:
        self.in_flight -= 1
        if self.in_flight == 0:
            self._idle.set()

    async def wait_idle(self, timeout_s: float) -> bool:
        """True once nothing is in flight; False when `timeout_s` ran out first."""
        try:
            await asyncio.wait_for(self._idle.wait(), timeout_s)
            return True
        except TimeoutError:
            return False


class DrainMiddleware:
    """Counts requests in flight; while draining, refuses new ones with 503 and Connection: close."""

    def __init__(self, app, drain: Drain):
        self.app = app
        self.drain = drain

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        if self.drain.draining and scope["path"] not in _OPEN_WHILE_DRAINING:
            response = JSONResponse(
                error_body("shutting_down", "this server is shutting down; retry, and the load balancer "
                           "sends the request to another replica"),
                status_code=503, headers={"Retry-After": "1", "Connection": "close"},
            )
            return await response(scope, receive, send)
        self.drain.enter()
        try:
            await self.app(scope, receive, send)
        finally:
            self.drain.leave()
