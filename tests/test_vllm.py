"""The vLLM backend against a real vLLM server (its CPU build): the gateway `python -m app`
with AI_DIRECTOR_ENGINE=vllm in front of one vLLM serving a tiny model and a tiny LoRA.

One vLLM serves the whole module (it takes 30-60 s to start); the test that stops and
restarts it runs last. A local stub stands in for vLLM only where a real one cannot fail
cheaply on demand (a 5xx).
"""

import json
import shutil
import socket
import threading
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from conftest import REPO
from test_server import free_port, is_ready, poll, run_app, running_app, server_env, serving_in_thread
from test_streaming import read_events, stream
from vllm_server import ADAPTER_NAME, BASE_NAME, MAX_MODEL_LEN, VLLMServer, build_lora, vllm_python

CAPTION = {"brand": "TechZone", "context": "เปิดตัวเมาส์เกมมิ่ง", "max_new_tokens": 24}
LONG = 1500  # tokens: seconds of work for vLLM on a CPU, so a request can be caught running


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """The head-size-64 tiny model (vLLM's CPU attention has no kernel for 16) and its LoRA."""
    from training.tiny_model import build_tiny_model

    root = tmp_path_factory.mktemp("vllm-models")
    model_dir = build_tiny_model(root / "model", shape="head64")
    return model_dir, build_lora(model_dir, root / "adapter")


@pytest.fixture(scope="module")
def vllm(request, tmp_path_factory):
    python = vllm_python()  # skips (or fails in CI) when vLLM is not installed, before building anything
    models = request.getfixturevalue("models")
    server = VLLMServer(python, *models, tmp_path_factory.mktemp("vllm-log") / "vllm.log")
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def brands(tmp_path_factory):
    folder = tmp_path_factory.mktemp("vllm-brands")
    shutil.copy(REPO / "brands" / "brands.json", folder / "brands.json")
    return folder / "brands.json"


def gateway_settings(url: str, **extra) -> dict:
    # max_seq_length above vLLM's --max-model-len, so that vLLM, not the gateway, refuses a long request
    return {"engine": "vllm", "vllm_url": url, "max_seq_length": 2 * MAX_MODEL_LEN, "max_new_tokens": 4096} | extra


@pytest.fixture(scope="module")
def gateway(vllm, models, brands):
    with running_app(models[0], brands, timeout=120, **gateway_settings(vllm.url)) as (client, _):
        yield client


@pytest.fixture(scope="module")
def im_end(models) -> int:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(models[0]).convert_tokens_to_ids("<|im_end|>")


def prompt_of(client: httpx.Client, body: dict) -> str:
    r = client.post("/caption", json=dict(body, dry_run=True))
    assert r.status_code == 200, r.text
    return r.json()["prompt"]


def direct(vllm: VLLMServer, prompt: str, im_end: int, model: str = ADAPTER_NAME, **sampling) -> dict:
    """vLLM's own completion of `prompt`, asked as the gateway asks: raw prompt, stop at <|im_end|>."""
    return vllm.complete(model=model, prompt=prompt, add_special_tokens=False, stop_token_ids=[im_end], **sampling)


def caption(client: httpx.Client, body: dict) -> dict:
    r = client.post("/caption", json=body)
    assert r.status_code == 200, r.text
    return r.json()


# --- answers ------------------------------------------------------------------------

def test_greedy_caption_is_vllms_own_completion_of_the_prompt(gateway, vllm, im_end):
    body = dict(CAPTION, temperature=0)
    answer = caption(gateway, body)
    own = direct(vllm, prompt_of(gateway, body), im_end, temperature=0, max_tokens=24)
    assert answer["text"] == own["choices"][0]["text"].strip()  # the gateway shows no surrounding whitespace
    assert answer["text"]
    assert answer["usage"] == {"prompt_tokens": own["usage"]["prompt_tokens"],
                               "completion_tokens": own["usage"]["completion_tokens"]}
    assert answer["finish_reason"] == own["choices"][0]["finish_reason"]


def test_the_lora_is_what_answers(gateway, vllm, im_end, models):
    """With AI_DIRECTOR_VLLM_MODEL unset the gateway calls the LoRA vLLM lists, and the LoRA
    changes the output: the base alone answers the same prompt and seed differently."""
    from app.settings import Settings
    from app.vllm_backend import sampling_defaults

    body = dict(CAPTION, temperature=1.0, seed=11)
    answer = caption(gateway, body)
    assert answer["model"]["adapter"] == ADAPTER_NAME
    defaults = sampling_defaults(Settings(base_model=str(models[0]), _env_file=None))  # what the gateway sends
    sampling = {"temperature": 1.0, "top_p": defaults.top_p, "top_k": defaults.top_k, "seed": 11, "max_tokens": 24}
    prompt = prompt_of(gateway, body)
    with_lora = direct(vllm, prompt, im_end, **sampling)["choices"][0]["text"].strip()
    base = direct(vllm, prompt, im_end, model=BASE_NAME, **sampling)["choices"][0]["text"].strip()
    assert with_lora == answer["text"]
    assert base != with_lora


def test_streaming_sends_deltas_then_done(gateway):
    body = dict(CAPTION, temperature=0, seed=5, max_new_tokens=48)
    deltas, done, events = stream(gateway, "/caption", body)
    names = [e for e, _ in events if e != "comment"]
    assert names[-1] == "done" and set(names[:-1]) == {"delta"} and len(deltas) > 1
    assert "".join(deltas) == done["text"]
    assert done == caption(gateway, body)  # the same answer as the plain request


def test_seeds_are_reproducible(gateway):
    body = dict(CAPTION, temperature=1.0, seed=42)
    first = caption(gateway, body)
    assert caption(gateway, body)["text"] == first["text"]
    assert first["seed"] == 42
    assert caption(gateway, dict(body, seed=43))["text"] != first["text"]
    unseeded = caption(gateway, dict(body, seed=None))  # the gateway picks a seed, and reports it
    assert caption(gateway, dict(body, seed=unseeded["seed"]))["text"] == unseeded["text"]


def test_the_gateway_exports_backend_metrics(gateway):
    caption(gateway, CAPTION)
    text = gateway.get("/metrics").text
    count = next(float(line.split()[-1]) for line in text.splitlines()
                 if line.startswith("ai_director_backend_request_duration_seconds_count"))
    assert count >= 1
    assert 'ai_director_backend_errors_total{kind="unreachable"}' in text


# --- failures vLLM itself produces ----------------------------------------------------

def test_a_prompt_vllm_refuses_is_a_422_naming_the_cause(gateway):
    """A prompt within the gateway's max_seq_length but over vLLM's --max-model-len: vLLM answers 400."""
    body = {"brand": "FitFlow", "message": "ลดราคา " + "ฎ" * 1200, "max_new_tokens": 8}  # ~2 tokens a character
    dry = gateway.post("/adapt-voice", json=dict(body, dry_run=True)).json()
    assert MAX_MODEL_LEN < dry["usage"]["prompt_tokens"] < 2 * MAX_MODEL_LEN - 16
    r = gateway.post("/adapt-voice", json=body)
    assert r.status_code == 422, r.text
    error = r.json()["error"]
    assert error["code"] == "backend_rejected"
    assert f"maximum context length is {MAX_MODEL_LEN} tokens" in error["message"] and "vLLM" in error["message"]


def test_a_model_vllm_does_not_serve_stops_startup(vllm, models, brands):
    env = server_env(models[0], brands, port=free_port(), **gateway_settings(vllm.url, vllm_model="nope"))
    result = run_app(env, timeout=120)
    assert result.returncode == 1
    assert "AI_DIRECTOR_VLLM_MODEL='nope'" in result.stderr
    assert BASE_NAME in result.stderr and ADAPTER_NAME in result.stderr


def test_engine_vllm_without_a_url_stops_startup(tiny_model_dir, brands_file):
    result = run_app(server_env(tiny_model_dir, brands_file, engine="vllm"))
    assert result.returncode == 2 and "AI_DIRECTOR_VLLM_URL" in result.stderr


# --- a client that leaves -------------------------------------------------------------

def running(vllm: VLLMServer) -> float:
    return vllm.metric("vllm:num_requests_running")


def test_a_client_that_leaves_mid_stream_aborts_the_vllm_request(gateway, vllm):
    before = vllm.metric("vllm:generation_tokens_total")
    body = dict(CAPTION, temperature=0, max_new_tokens=LONG, stream=True)
    with gateway.stream("POST", "/caption", json=body) as r:
        lines = r.iter_lines()  # kept: a dropped iterator would close the response here
        for line in lines:
            if line.startswith("event: delta"):
                break  # text is flowing
        poll(lambda: running(vllm) >= 1, timeout=30)
    poll(lambda: running(vllm) == 0, timeout=30)  # the hang-up reached vLLM, which aborted
    assert vllm.metric("vllm:generation_tokens_total") - before < LONG


def test_a_client_that_leaves_a_plain_request_aborts_the_vllm_request(gateway, vllm):
    before = vllm.metric("vllm:generation_tokens_total")
    port = int(str(gateway.base_url).rsplit(":", 1)[1].rstrip("/"))
    raw = json.dumps(dict(CAPTION, temperature=0, max_new_tokens=LONG)).encode()
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(b"POST /caption HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
                  b"Content-Length: %d\r\n\r\n%s" % (len(raw), raw))
        poll(lambda: running(vllm) >= 1, timeout=30)
    poll(lambda: running(vllm) == 0, timeout=30)
    assert vllm.metric("vllm:generation_tokens_total") - before < LONG
    metrics = gateway.get("/metrics").text
    assert 'route="/caption",status="499"}' in metrics


# --- failures a real vLLM cannot produce on demand: a stub ------------------------------

class FailingVLLM(BaseHTTPRequestHandler):
    """Lists the models as vLLM does, and fails every completion with a 500."""

    def do_GET(self):
        self._send(200, {"object": "list", "data": [
            {"id": BASE_NAME, "object": "model", "root": "stub-base", "parent": None},
            {"id": ADAPTER_NAME, "object": "model", "root": "/adapters/x", "parent": BASE_NAME},
        ]})

    def do_POST(self):
        self.rfile.read(int(self.headers["Content-Length"]))
        self._send(500, {"error": {"message": "EngineCore died: secret internals", "type": "InternalServerError",
                                   "code": 500}})

    def _send(self, status: int, body: dict):
        raw = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def log_message(self, *args):
        pass


@contextmanager
def stub(handler):
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_a_vllm_5xx_is_a_503_in_the_error_shape(tiny_model_dir, brands_file):
    from app.main import create_app
    from app.settings import Settings

    with stub(FailingVLLM) as url:
        settings = Settings(base_model=str(tiny_model_dir), brands_path=brands_file, _env_file=None,
                            **gateway_settings(url))
        with serving_in_thread(create_app(settings)) as (client, _):
            r = client.post("/caption", json=CAPTION)
            assert r.status_code == 503, r.text
            assert r.json()["error"]["code"] == "backend_unavailable"
            assert "secret internals" not in r.text and int(r.headers["Retry-After"]) >= 1
            with client.stream("POST", "/caption", json=dict(CAPTION, stream=True)) as s:
                events = read_events(s)
            error = json.loads(events[-1][1])["error"]
            assert events[-1][0] == "error" and error["code"] == "backend_unavailable"
            assert 'ai_director_backend_errors_total{kind="server_error"} 2.0' in client.get("/metrics").text
            assert is_ready(client)  # vLLM still answers its probe: a failed request is not an outage


# --- last: vLLM goes away and comes back (this restarts the module's vLLM) --------------

@contextmanager
def gateway_not_waiting(model_dir, brands_file, **settings):
    """`python -m app` that is up (GET /health answers) but need not be ready."""
    import subprocess
    import sys

    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "app"], env=server_env(model_dir, brands_file, port=port, **settings),
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=120)

    def live():
        if proc.poll() is not None:
            raise AssertionError(f"server exited: {proc.stdout.read()}")
        try:
            return client.get("/health").status_code == 200
        except httpx.TransportError:
            return False

    try:
        poll(live, timeout=90, every=0.2)
        yield client
    finally:
        client.close()
        proc.terminate()
        proc.wait(timeout=30)


def test_named_adapters_and_rollout_through_vllms_runtime_lora_loading(vllm, models, brands, im_end, tmp_path):
    """Names map to vLLM modules; a new version behind the adapter's symlink is loaded into vLLM as a
    module of its own, probed, and called from then on; the module it replaces is unloaded after the
    grace; a bad version never reaches vLLM; a plain folder is refused (vLLM re-reads it)."""
    from test_adapters import version_of

    store = {name: build_lora(models[0], tmp_path / "store" / name, seed=seed) for name, seed in (("b", 5), ("v2", 6))}
    store["v1"] = shutil.copytree(models[1], tmp_path / "store" / "v1")  # what vLLM was started with, elsewhere
    served = tmp_path / "served"
    served.mkdir()

    def point(link, target):  # an atomic symlink swap, as `ln -sfn` plus `mv -T`, or a Kubernetes volume
        (served / "new").symlink_to(target)
        (served / "new").replace(served / link)

    point("current", store["v1"])
    point("b", store["b"])
    settings = gateway_settings(vllm.url, adapter_path=served / "current", adapters=f"b={served / 'b'}",
                                vllm_unload_grace_s=1)
    greedy = dict(CAPTION, temperature=0)
    with running_app(models[0], brands, timeout=120, **settings) as (client, _):
        def version(name):
            return next(a for a in client.get("/adapters").json()["adapters"] if a["name"] == name)["version"]

        def modules():
            return {m["id"] for m in httpx.get(f"{vllm.url}/v1/models").json()["data"]}

        poll(lambda: version("b") == version_of(store["b"]) and version("default") == version_of(store["v1"]), timeout=60)
        names = [a["name"] for a in client.get("/adapters").json()["adapters"]]
        assert names[:2] == ["default", "b"] and ADAPTER_NAME in names  # vLLM's own modules are names too
        prompt = prompt_of(client, greedy)
        # the default is the folder vLLM was started with: recognised by its content, not loaded twice
        for name, module in (("b", f"b-{version_of(store['b'])}"), (None, ADAPTER_NAME),
                             ("none", BASE_NAME), (ADAPTER_NAME, ADAPTER_NAME)):
            answer = caption(client, greedy | ({"adapter": name} if name else {}))
            own = direct(vllm, prompt, im_end, model=module, temperature=0, max_tokens=24)["choices"][0]["text"]
            assert answer["text"] == own.strip(), name
        assert caption(client, greedy | {"adapter": "b"})["model"]["adapter_version"] == version_of(store["b"])

        point("current", store["v2"])
        poll(lambda: version("default") == version_of(store["v2"]), timeout=60)
        answer = caption(client, greedy)
        first = f"default-{version_of(store['v2'])}"
        assert answer["model"]["adapter_version"] == version_of(store["v2"]) and answer["model"]["adapter"] == first
        assert answer["text"] == direct(vllm, prompt, im_end, model=first, temperature=0,
                                        max_tokens=24)["choices"][0]["text"].strip()
        assert first in modules() and ADAPTER_NAME in modules()  # vLLM's own module is never unloaded

        point("current", store["b"])  # a second rollout: the module of the first goes after the grace
        poll(lambda: version("default") == version_of(store["b"]), timeout=60)
        poll(lambda: first not in modules(), timeout=30)
        assert caption(client, greedy)["text"] == caption(client, greedy | {"adapter": "b"})["text"]

        broken = shutil.copytree(store["v2"], tmp_path / "broken")
        (broken / "adapter_model.safetensors").unlink()
        point("current", broken)
        poll(lambda: client.get("/health").json()["status"] == "degraded", timeout=60)
        assert caption(client, greedy)["model"]["adapter_version"] == version_of(store["b"])

        (served / "current").unlink()
        shutil.copytree(store["v2"], served / "current")  # a plain folder: refused, the link's version serves on
        r = client.post("/admin/adapters/reload", params={"name": "default"})
        assert r.status_code == 422 and "not a link" in r.json()["error"]["message"]
        assert caption(client, greedy)["model"]["adapter_version"] == version_of(store["b"])
        left = modules()
    for module in left - {BASE_NAME, ADAPTER_NAME}:  # leave vLLM as the other tests expect it
        httpx.post(f"{vllm.url}/v1/unload_lora_adapter", json={"lora_name": module})


def test_vllm_down_is_a_503_and_not_ready_then_everything_recovers(gateway, vllm, models, brands):
    vllm.stop()
    r = gateway.post("/caption", json=CAPTION)
    assert r.status_code == 503, r.text
    assert r.json()["error"]["code"] == "backend_unavailable" and int(r.headers["Retry-After"]) >= 1
    poll(lambda: gateway.get("/ready").status_code == 503, timeout=30)
    r = gateway.post("/caption", json=dict(CAPTION, stream=True))  # refused before the first byte
    assert r.status_code == 503 and r.json()["error"]["code"] == "backend_unavailable"
    assert gateway.post("/caption", json=dict(CAPTION, dry_run=True)).status_code == 200  # the tokenizer is enough

    # A gateway started while vLLM is away comes up not ready, and keeps asking.
    with gateway_not_waiting(models[0], brands, **gateway_settings(vllm.url)) as fresh:
        assert fresh.get("/ready").status_code == 503
        vllm.start()
        poll(lambda: is_ready(gateway) and is_ready(fresh), timeout=60)
        assert caption(gateway, CAPTION)["text"]
        assert caption(fresh, CAPTION)["model"]["adapter"] == ADAPTER_NAME
