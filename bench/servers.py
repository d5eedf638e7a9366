"""What the benchmarks share: a free port, waiting for a server, and timing one streamed answer."""

import json
import socket
import subprocess
import time

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


async def timed_stream(response: httpx.Response, start: float) -> tuple[float, float, int]:
    """(time to the first `delta` event, time to the end, completion tokens of the `done` event)."""
    first, done, event = None, None, ""
    async for line in response.aiter_lines():
        if line.startswith("event:"):
            event = line[6:].strip()
            if event == "delta" and first is None:
                first = time.perf_counter() - start
        elif line.startswith("data:") and event == "done":
            done = json.loads(line[5:])
    total = time.perf_counter() - start
    return (first if first is not None else total), total, done["usage"]["completion_tokens"]
