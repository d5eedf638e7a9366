"""The real thing: `python -m app` under uvicorn on 127.0.0.1 with the tiny model."""

import json
import os
import socket
import subprocess
import sys
import time
from contextlib import contextmanager

import httpx
import pytest

from conftest import REPO


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def server_env(model_dir, brands_file, **extra) -> dict:
    env = dict(os.environ)
    env.update({
        "AI_DIRECTOR_BASE_MODEL": str(model_dir),
        "AI_DIRECTOR_BRANDS_PATH": str(brands_file),
        "AI_DIRECTOR_DEVICE": "cpu",
        "AI_DIRECTOR_MAX_NEW_TOKENS": "24",
        "AI_DIRECTOR_LOG_LEVEL": "warning",
    })
    env.update({f"AI_DIRECTOR_{k.upper()}": str(v) for k, v in extra.items()})
    return env


def run_app(env, timeout=60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "app"], env=env, cwd=REPO, capture_output=True, text=True, timeout=timeout)


def write_atomically(path, data) -> None:
    """As editors save: a temporary file, then a rename over the original."""
    tmp = path.with_name(path.name + ".tmp")
    raw = data if isinstance(data, bytes) else json.dumps(data, ensure_ascii=False).encode("utf-8")
    tmp.write_bytes(raw)
    os.replace(tmp, path)


def poll(fn, timeout: float, every: float = 0.05):
    """fn's first truthy result within `timeout` seconds, and the seconds it took."""
    start = time.perf_counter()
    while True:
        value = fn()
        if value:
            return value, time.perf_counter() - start
        if time.perf_counter() - start > timeout:
            raise AssertionError(f"condition not met within {timeout} s")
        time.sleep(every)


def is_ready(client: httpx.Client) -> bool:
    try:
        return client.get("/ready").status_code == 200
    except httpx.TransportError:
        return False


@contextmanager
def running_app(model_dir, brands_file, timeout: float = 30, **settings):
    """`python -m app` on a free port with these AI_DIRECTOR_* settings, ready; yields (client, port)."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "app"], env=server_env(model_dir, brands_file, port=port, **settings),
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=timeout)

    def ready():
        if proc.poll() is not None:
            raise AssertionError(f"server exited: {proc.stdout.read()}")
        return is_ready(client)

    try:
        poll(ready, timeout=90, every=0.2)
        yield client, port
    finally:
        client.close()
        proc.terminate()
        proc.wait(timeout=30)


def _answers(client: httpx.Client) -> bool:
    try:
        return client.get("/health").status_code == 200
    except httpx.TransportError:
        return False


@contextmanager
def serving_in_thread(app, wait_ready: bool = True):
    """The service's own uvicorn server for an app built in this process (fake engines); yields (client, port)
    once /ready answers 200, or with wait_ready=False as soon as /health answers."""
    import threading

    from app.server import build_server

    port = free_port()
    server = build_server(app, app.state.settings.model_copy(update={"port": port, "log_level": "error"}))
    app.state.server = server  # so that a test can signal it
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30)
    try:
        poll(lambda: is_ready(client) if wait_ready else _answers(client), timeout=30)
        yield client, port
    finally:
        client.close()
        server.should_exit = True
        thread.join(timeout=30)


@pytest.fixture(scope="module")
def server(tiny_model_dir, tmp_path_factory):
    import shutil

    folder = tmp_path_factory.mktemp("served-brands")
    brands_file = folder / "brands.json"
    shutil.copy(REPO / "brands" / "brands.json", brands_file)
    with running_app(tiny_model_dir, brands_file) as (client, _):
        yield client, brands_file


def test_each_endpoint_answers(server):
    client, _ = server
    caption = client.post("/caption", json={"brand": "TechZone", "context": "Gaming mouse launch", "seed": 7})
    assert caption.status_code == 200, caption.text
    assert caption.json()["brand"] == "TechZone" and caption.json()["usage"]["completion_tokens"] >= 1
    assert client.post("/adapt-voice", json={"brand": "FitFlow", "message": "เรามีโปรโมชั่นพิเศษ"}).status_code == 200
    assert client.post("/brief", json={"brand": "GreenLeaf", "objectives": ["ให้ความรู้"]}).status_code == 200
    assert client.post("/check", json={"brand": "TechZone", "text": "🎮 TechZone #TechZone"}).status_code == 200
    assert client.get("/brands").json()["count"] >= 14
    health = client.get("/health").json()
    assert health["model"]["loaded"] and health["brands"]["last_reload_error"] is None
    assert "ai_director_requests_total" in client.get("/metrics").text


def test_concurrent_requests_are_batched_by_the_real_server(server):
    import asyncio

    client, _ = server
    base = str(client.base_url)

    async def fire():
        async with httpx.AsyncClient(base_url=base, timeout=60) as http:
            bodies = [{"brand": "TechZone", "context": f"โปรโมชั่นที่ {i}", "max_new_tokens": 8} for i in range(12)]
            return await asyncio.gather(*[http.post("/caption", json=b) for b in bodies])

    responses = asyncio.run(fire())
    assert [r.status_code for r in responses] == [200] * 12
    sizes = {}
    for line in client.get("/metrics").text.splitlines():
        if line.startswith("ai_director_batch_size_bucket"):
            le = line.split('le="')[1].split('"')[0]
            sizes[le] = float(line.rsplit(" ", 1)[1])
    batches = sizes["+Inf"]
    assert batches - sizes["1.0"] >= 1, f"no batch of 2 or more among {batches:.0f}"


def test_same_seed_same_text_over_http(server):
    client, _ = server
    body = {"brand": "CoffeeLab", "context": "เปิดตัวเมนูใหม่", "seed": 42, "temperature": 1.0}
    assert client.post("/caption", json=body).json()["text"] == client.post("/caption", json=body).json()["text"]


def test_live_reload_add_break_recover(server):
    client, brands_file = server
    original_bytes = brands_file.read_bytes()
    original = json.loads(original_bytes)
    version = client.get("/health").json()["brands"]["version"]

    # 1. A new brand, added by atomic replace, is served without a restart.
    added = dict(original, brands=[*original["brands"], {"name": "NoodleNinja", "aliases": ["นู้ดเดิลนินจา"]}])
    write_atomically(brands_file, added)
    # Polled on a cheap endpoint; the timeout only guards against a hang (timings belong in bench/).
    poll(lambda: client.get("/brands/นู้ดเดิลนินจา").status_code == 200, timeout=30)
    assert client.post("/caption", json={"brand": "นู้ดเดิลนินจา", "context": "เปิดร้านใหม่"}).status_code == 200
    new_version = client.get("/health").json()["brands"]["version"]
    assert new_version != version

    # 2. Invalid JSON over the file: the old brands stay served, /health shows the error.
    brands_file.write_text('{"brands": [', encoding="utf-8")
    health, _ = poll(lambda: (h := client.get("/health").json())["brands"]["last_reload_error"] and h, timeout=30)
    assert "invalid JSON" in health["brands"]["last_reload_error"]["message"]
    assert health["brands"]["version"] == new_version
    assert client.post("/caption", json={"brand": "NoodleNinja", "context": "เปิดร้านใหม่"}).status_code == 200
    assert 'ai_director_brand_reload_error 1.0' in client.get("/metrics").text

    # 3. A good write recovers.
    write_atomically(brands_file, original_bytes)
    poll(lambda: client.get("/health").json()["brands"]["last_reload_error"] is None, timeout=30)
    assert client.get("/health").json()["brands"]["version"] == version
    assert client.post("/caption", json={"brand": "NoodleNinja", "context": "x launch"}).status_code == 404


def test_missing_brands_file_stops_startup(tiny_model_dir, tmp_path):
    result = run_app(server_env(tiny_model_dir, tmp_path / "brands.json", port=free_port()))
    assert result.returncode == 1
    assert "brands.json: file not found" in result.stderr


def test_invalid_brand_stops_startup_naming_brand_and_field(tiny_model_dir, tmp_path):
    bad = tmp_path / "brands.json"
    bad.write_text(json.dumps({"brands": [{"name": "TechZone", "hashtag": ["#x"]}]}), encoding="utf-8")
    result = run_app(server_env(tiny_model_dir, bad, port=free_port()))
    assert result.returncode == 1
    assert "'TechZone'" in result.stderr and "hashtag" in result.stderr


def test_missing_adapter_stops_startup(tiny_model_dir, brands_file, tmp_path):
    result = run_app(server_env(tiny_model_dir, brands_file, port=free_port(), adapter_path=tmp_path / "none"))
    assert result.returncode == 1
    assert "does not exist" in result.stderr and "AI_DIRECTOR_ADAPTER_PATH" in result.stderr


@pytest.mark.parametrize("var,value,needle", [
    ("max_batch_size", "0", "MAX_BATCH_SIZE"),
    ("device", "tpu", "DEVICE"),
    ("port", "http", "PORT"),
    ("api_key", "รหัสลับ", "API_KEY"),  # no HTTP client can send it: every request would be 401
])
def test_bad_setting_stops_startup(tiny_model_dir, brands_file, var, value, needle):
    result = run_app(server_env(tiny_model_dir, brands_file, **{var: value}))
    assert result.returncode == 2 and needle in result.stderr


def test_adapter_for_another_base_stops_the_server(tiny_model_dir, brands_file, tmp_path):
    from peft import LoraConfig, get_peft_model
    from transformers import Qwen2Config, Qwen2ForCausalLM

    other = Qwen2ForCausalLM(Qwen2Config(vocab_size=256, hidden_size=96, intermediate_size=192,
                                         num_hidden_layers=1, num_attention_heads=3, num_key_value_heads=1))
    get_peft_model(other, LoraConfig(r=4, target_modules=["q_proj"])).save_pretrained(tmp_path / "adapter")
    result = run_app(server_env(tiny_model_dir, brands_file, port=free_port(), adapter_path=tmp_path / "adapter"))
    assert result.returncode == 1
    assert "does not fit the base model" in result.stderr


def test_disconnected_clients_leave_the_queue(tiny_model_dir, brands_file):
    """Requests whose clients hung up are dropped before they reach the model."""
    import socket
    import threading

    with running_app(tiny_model_dir, brands_file, timeout=120, max_batch_size=1, max_new_tokens=1500,
                     max_seq_length=2500) as (client, port):
        long = {"brand": "TechZone", "context": "launch", "max_new_tokens": 1500, "temperature": 0}
        result = {}
        busy = threading.Thread(target=lambda: result.setdefault("r", client.post("/caption", json=long)))
        busy.start()  # occupies the model (batch size 1) for a few seconds
        time.sleep(0.3)
        hung_up = []
        for i in range(3):
            body = json.dumps(dict(long, context=f"queued {i}")).encode()
            s = socket.create_connection(("127.0.0.1", port))
            s.sendall(b"POST /caption HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
                      b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
            hung_up.append(s)
        time.sleep(0.3)
        for s in hung_up:
            s.close()
        busy.join()
        assert result["r"].status_code == 200
        def cancelled():
            text = client.get("/metrics").text
            return text if "ai_director_requests_cancelled_total 3.0" in text else None

        metrics, _ = poll(cancelled, 10)
        assert "ai_director_batch_size_count 1.0" in metrics  # only the connected request was generated
        assert 'route="/caption",status="499"} 3.0' in metrics
