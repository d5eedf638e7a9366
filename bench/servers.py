"""What the benchmarks share: a free port, waiting for a server, timing one streamed answer,
and a lean HTTP/1.1 connection for benchmarks with many clients."""

import asyncio
import json
import socket
import subprocess
import time
from collections.abc import Callable

import h11
import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(url: str, proc: subprocess.Popen | None, timeout: float, what: str) -> None:
    """Until `url` answers 200; exits naming `what` when the time runs out or its process dies."""
    deadline = time.time() + timeout
    while True:
        try:
            if httpx.get(url, timeout=5).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if time.time() > deadline or (proc is not None and proc.poll() is not None):
            raise SystemExit(f"{what} did not become ready")
        time.sleep(0.2)


class EventTimer:
    """Reads one event stream line by line: when the first `delta` came, and the `done` event."""

    def __init__(self, start: float):
        self.start, self.first, self.event, self.done = start, None, "", None

    def line(self, line: str) -> None:
        if line.startswith("event:"):
            self.event = line[6:].strip()
            if self.event == "delta" and self.first is None:
                self.first = time.perf_counter() - self.start
        elif line.startswith("data:") and self.event == "done":
            self.done = json.loads(line[5:])

    def result(self) -> tuple[float, float, int]:
        """(time to the first `delta` event, time to the end, completion tokens of the `done` event)."""
        total = time.perf_counter() - self.start
        return (self.first if self.first is not None else total), total, self.done["usage"]["completion_tokens"]


async def timed_events(connection: "Connection", path: str, body: dict, start: float) -> tuple[float, float, int]:
    """One streamed request on a lean connection, timed as EventTimer.result says."""
    timer, rest = EventTimer(start), b""

    def on_data(data: bytes) -> None:
        nonlocal rest
        *lines, rest = (rest + data).split(b"\n")
        for raw in lines:
            timer.line(raw.decode("utf-8").rstrip("\r"))

    status, _, _ = await connection.request("POST", path, body, on_data=on_data)
    assert status == 200 and timer.done is not None, status
    return timer.result()


async def timed_stream(response: httpx.Response, start: float) -> tuple[float, float, int]:
    """One streamed httpx response, timed as EventTimer.result says."""
    timer = EventTimer(start)
    async for line in response.aiter_lines():
        timer.line(line)
    return timer.result()


class Connection:
    """One keep-alive HTTP/1.1 connection, as one client machine holds one: h11 over asyncio streams.

    64 tasks sharing one httpx client wait on its pool's bookkeeping, which grows with the number
    of waiting tasks: a burst of 56 requests that the server answers in 30 ms took the client
    0.3-0.9 s to send and read. With this, a benchmark with many clients times the server.
    """

    def __init__(self, host: str, port: int):
        self.host, self.port = host, port
        self._streams: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        self._h11: h11.Connection | None = None

    async def request(self, method: str, path: str, body: dict | None = None,
                      on_data: Callable[[bytes], None] | None = None) -> tuple[int, dict[str, str], bytes]:
        """(status, headers with lower-case names, body); raises OSError when the connection fails.
        With `on_data`, each piece of the body goes to it as it arrives instead (an event stream)."""
        await self.open()
        reader, writer = self._streams
        conn = self._h11
        headers = [("host", f"{self.host}:{self.port}")]
        data = b"" if body is None else json.dumps(body).encode()
        if body is not None:
            headers += [("content-type", "application/json"), ("content-length", str(len(data)))]
        writer.write(conn.send(h11.Request(method=method, target=path, headers=headers))
                     + (conn.send(h11.Data(data=data)) if data else b"") + conn.send(h11.EndOfMessage()))
        status, names, chunks = 0, {}, []
        try:
            while True:
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    received = await reader.read(65536)
                    if not received:
                        raise ConnectionResetError("the server closed the connection")
                    conn.receive_data(received)
                elif isinstance(event, h11.Response):
                    status = event.status_code
                    names = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in event.headers}
                elif isinstance(event, h11.Data):
                    chunks.append(event.data) if on_data is None else on_data(event.data)
                elif isinstance(event, h11.EndOfMessage):
                    break
        except (h11.ProtocolError, OSError):
            self.close()
            raise
        if conn.our_state is h11.DONE and conn.their_state is h11.DONE:
            conn.start_next_cycle()
        else:  # the server ends the connection after this response
            self.close()
        return status, names, b"".join(chunks)

    async def open(self) -> None:
        """Connect, unless connected already (or again, if the server closed it while idle)."""
        if self._streams is not None and self._streams[0].at_eof():
            self.close()
        if self._streams is None:
            self._streams = await asyncio.open_connection(self.host, self.port)
            self._h11 = h11.Connection(h11.CLIENT)

    def close(self) -> None:
        if self._streams is not None:
            self._streams[1].close()
            self._streams = None
