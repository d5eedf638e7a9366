"""uvicorn as the service runs it: a cap on request heads, and a graceful shutdown.

- httptools buffers a request line and headers of any size (20 MB were accepted), so the
  protocol counts the bytes of each request head and answers 431 past `max_header_bytes`.
- On SIGTERM (Kubernetes sends one on every rollout) the server first drains, as vLLM's
  `--shutdown-timeout` does: new requests get 503 and /ready 503, the requests in flight
  finish within `shutdown_grace_s`, and only then does uvicorn close its sockets. What is
  still running when the grace period ends is cut. A second signal stops at once.
"""

import asyncio
import json
import logging
import signal

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from app.drain import Drain
from app.errors import error_body
from app.settings import Settings

log = logging.getLogger(__name__)

_AFTER_DRAIN_S = 2.0  # uvicorn's own wait for connections, once nothing is in flight


class _HeadLimitedProtocol(HttpToolsProtocol):
    max_header_bytes = 32 * 1024
    _head: int | None = 0  # bytes of the current request head; None while its body is read

    def data_received(self, data: bytes) -> None:
        if self._head is not None:
            self._head += len(data)
        super().data_received(data)
        # Still no end of headers after this many bytes: refuse before httptools buffers more.
        if self._head is not None and self._head > self.max_header_bytes and not self.transport.is_closing():
            self._refuse()

    def on_headers_complete(self) -> None:
        self._head = None
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._head = 0

    def _refuse(self) -> None:
        body = json.dumps(error_body(
            "headers_too_large",
            f"the request line and headers are over {self.max_header_bytes:,} bytes "
            "(AI_DIRECTOR_MAX_HEADER_BYTES); send fewer or shorter headers",
        )).encode()
        head = (b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-type: application/json\r\n"
                b"content-length: %d\r\nconnection: close\r\n\r\n" % len(body))
        self.transport.write(head + body)
        self.transport.close()


def head_limited_protocol(max_header_bytes: int) -> type[HttpToolsProtocol]:
    return type("HeadLimitedProtocol", (_HeadLimitedProtocol,), {"max_header_bytes": max_header_bytes})


class GracefulServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, drain: Drain, grace_s: float):
        super().__init__(config)
        self.drain = drain
        self.grace_s = grace_s
        self._loop: asyncio.AbstractEventLoop | None = None

    async def startup(self, sockets=None) -> None:
        self._loop = asyncio.get_running_loop()
        await super().startup(sockets)

    def handle_exit(self, sig: int, frame) -> None:
        if self.drain.draining or self.should_exit or self._loop is None:
            return super().handle_exit(sig, frame)
        self.drain.draining = True  # from here on, new requests get 503
        # A signal handler may run between any two bytecodes: hand the work to the loop.
        self._loop.call_soon_threadsafe(lambda: self._loop.create_task(self._drain_then_exit(sig)))

    async def _drain_then_exit(self, sig: int) -> None:
        name = signal.Signals(sig).name
        log.warning("%s: draining %d request(s) in flight, for up to %g s (AI_DIRECTOR_SHUTDOWN_GRACE_S)",
                    name, self.drain.in_flight, self.grace_s)
        if not await self.drain.wait_idle(self.grace_s):
            log.error("grace period over with %d request(s) in flight; they are cut", self.drain.in_flight)
        self.should_exit = True


def build_server(app, settings: Settings) -> GracefulServer:
    config = uvicorn.Config(
        app, host=settings.host, port=settings.port, log_level=settings.log_level,
        http=head_limited_protocol(settings.max_header_bytes), timeout_graceful_shutdown=_AFTER_DRAIN_S,
    )
    return GracefulServer(config, app.state.drain, settings.shutdown_grace_s)
