"""Request limits on a real uvicorn: body size, the API key before the body, stalled bodies,
undecodable bodies. Raw sockets, because well-behaved clients cannot send these requests."""

import json
import socket

import pytest

from fakes import FakeEngine
from test_server import serving_in_thread


@pytest.fixture
def server(brands_file, tiny_tokenizer):
    from app.main import create_app
    from app.settings import Settings

    settings = Settings(brands_path=brands_file, base_model=tiny_tokenizer.name_or_path, api_key="s3cret",
                        max_body_bytes=64 * 1024, body_timeout_s=0.5, _env_file=None)
    # Generation takes longer than the body timeout: a slow answer must not look like a slow upload.
    app = create_app(settings, engine_factory=lambda s: FakeEngine(tiny_tokenizer, delay_s=0.8))
    with serving_in_thread(app) as (client, port):
        client.headers["X-API-Key"] = "s3cret"
        yield port, client


def raw(port: int, head: bytes, body: bytes = b"") -> tuple[int, dict]:
    """Send a request as given and read the status and JSON error; 10 s without an answer fails."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(head + body)
        data = b""
        while b"\r\n\r\n" not in data or len(data.split(b"\r\n\r\n", 1)[1]) < _length(data):
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    status = int(data.split(b" ", 2)[1])
    return status, json.loads(data.split(b"\r\n\r\n", 1)[1] or b"{}")


def _length(data: bytes) -> int:
    for line in data.split(b"\r\n\r\n", 1)[0].split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            return int(line.split(b":")[1])
    return 0


def post_head(length: int, key: bool = True) -> bytes:
    auth = b"X-API-Key: s3cret\r\n" if key else b""
    return (b"POST /caption HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n" + auth +
            b"Content-Length: %d\r\n\r\n" % length)


def test_a_declared_oversized_body_is_refused_unread(server):
    port, _ = server
    status, body = raw(port, post_head(50 * 1024 * 1024))  # 50 MB announced, none sent
    assert status == 413 and body["error"]["code"] == "payload_too_large"
    assert "AI_DIRECTOR_MAX_BODY_BYTES" in body["error"]["message"]


def test_an_undeclared_oversized_body_is_cut_off_while_read(server):
    port, client = server
    chunks = (b'{"brand": "TechZone", "context": "' + b"x" * 70_000 + b'"}',)
    r = client.post("/caption", content=iter(chunks), headers={"Content-Type": "application/json"})  # chunked
    assert r.status_code == 413 and r.json()["error"]["code"] == "payload_too_large"


def test_the_key_is_checked_before_the_body_is_read(server):
    port, _ = server
    status, body = raw(port, post_head(1000, key=False))  # the body never comes: only the key can answer
    assert status == 401 and body["error"]["code"] == "unauthorized"


def test_a_stalled_body_is_refused(server):
    port, client = server
    status, body = raw(port, post_head(100), b'{"brand": ')  # 10 of 100 bytes, then nothing
    assert status == 408 and body["error"]["code"] == "request_timeout"
    assert client.get("/ready").status_code == 200


def test_an_undecodable_body_is_a_documented_400(server):
    port, client = server
    r = client.post("/caption", content=b'{"brand": "\xff\xfe", "context": "x"}', headers={"Content-Type": "application/json"})
    assert r.status_code in (400, 422) and r.json()["error"]["code"] in ("invalid_body", "invalid_request")


def test_streams_outlive_the_body_timeout(server):
    """The body timeout guards the upload only: a response may run longer."""
    _, client = server
    with client.stream("POST", "/caption", json={"brand": "TechZone", "context": "launch", "stream": True}) as r:
        assert r.status_code == 200
        text = "".join(r.iter_text())
    assert "event: done" in text
