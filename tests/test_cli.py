"""The command line: `python -m app --help`, and the installed `ai-director` client run as a
user runs it, against a real server, under the C locale."""

import json
import os
import shutil
import subprocess
import sys
import threading
from importlib.metadata import version
from pathlib import Path

import httpx
import pytest

from app.settings import Settings
from conftest import REPO
from fakes import FakeEngine
from test_server import free_port, poll, serving_in_thread

SCRIPT = Path(sys.executable).parent / "ai-director"
HANG_GUARD_S = 60  # only against hangs; no test asserts a duration
THAI_REPLY = "🎮 เทคโซน เมาส์เกมมิ่งตัวใหม่ ตอบสนองไวทันใจ สั่งเลยวันนี้ #TechZone"

if not SCRIPT.exists():
    pytest.skip(f"the ai-director console script is not installed next to {sys.executable}; "
                "run `pip install -e .` (make install does)", allow_module_level=True)


def c_locale_env(**extra) -> dict:
    """The environment of a container or cron job: the C locale, no UTF-8 mode, no coercion."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("AI_DIRECTOR_", "LC_", "PYTHONIOENCODING", "PYTHONUTF8"))}
    env.update(LANG="C", LC_ALL="C", PYTHONUTF8="0", PYTHONCOERCECLOCALE="0", **extra)
    return env


def ai_director(*args, url=None, env=None, check_status=None) -> subprocess.CompletedProcess:
    """The console script with these arguments; stdout and stderr as bytes."""
    command = [str(SCRIPT), *(["--url", url] if url else []), *args]
    result = subprocess.run(command, env=env or c_locale_env(), capture_output=True, timeout=HANG_GUARD_S)
    if check_status is not None:
        assert result.returncode == check_status, (result.returncode, result.stdout, result.stderr.decode())
    return result


def text(stream: bytes) -> str:
    return stream.decode("utf-8")  # strict: a wrongly encoded byte fails the test


def fake_app(brands_file, tokenizer, engine, **settings):
    from app.main import create_app

    settings = Settings(brands_path=brands_file, base_model=tokenizer.name_or_path, stream_interval_ms=0,
                        _env_file=None, **settings)
    return create_app(settings, engine_factory=lambda s: engine)


@pytest.fixture(scope="module")
def server(tiny_tokenizer, tmp_path_factory):
    """A real uvicorn serving the real app, with an engine that answers THAI_REPLY; yields (client, url, engine)."""
    brands_file = tmp_path_factory.mktemp("cli-brands") / "brands.json"
    shutil.copy(REPO / "brands" / "brands.json", brands_file)
    engine = FakeEngine(tiny_tokenizer, reply=THAI_REPLY)
    with serving_in_thread(fake_app(brands_file, tiny_tokenizer, engine)) as (client, port):
        yield client, f"http://127.0.0.1:{port}", engine


# --- python -m app ----------------------------------------------------------------------

def run_module(*args, tmp_path) -> subprocess.CompletedProcess:
    env = dict(os.environ, AI_DIRECTOR_BASE_MODEL=str(tmp_path / "no-such-model"), HF_HUB_OFFLINE="1",
               AI_DIRECTOR_PORT="not-a-port")  # a bad setting too: the arguments come first
    return subprocess.run([sys.executable, "-X", "importtime", "-m", "app", *args], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=HANG_GUARD_S)


def imported(stderr: str) -> set[str]:
    """Module names from `-X importtime` lines: `import time: self | cumulative | name`."""
    return {line.rsplit("|", 1)[1].strip() for line in stderr.splitlines() if line.startswith("import time:")}


def test_python_m_app_help_lists_every_setting_and_loads_nothing(tmp_path):
    result = run_module("--help", tmp_path=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.startswith("usage: python -m app")
    for name, field in Settings.model_fields.items():
        assert f"AI_DIRECTOR_{name.upper()}  (default: " in result.stdout, name
        if field.description:
            assert field.description.split()[0] in result.stdout
    assert "AI_DIRECTOR_BASE_MODEL  (default: Qwen/Qwen2.5-7B-Instruct)" in result.stdout
    modules = imported(result.stderr)
    assert "app.settings" in modules  # the table is read from the settings object
    assert not modules & {"torch", "transformers", "uvicorn", "fastapi", "app.main", "app.engine"}


def test_python_m_app_version_and_unknown_arguments(tmp_path):
    shown = run_module("--version", tmp_path=tmp_path)
    assert shown.returncode == 0 and shown.stdout.strip() == f"ai-director {version('ai-director')}"
    assert "torch" not in imported(shown.stderr)

    unknown = run_module("--serve-fast", tmp_path=tmp_path)
    assert unknown.returncode == 2 and unknown.stdout == ""
    assert "usage: python -m app" in unknown.stderr and "--serve-fast" in unknown.stderr


# --- ai-director: help, usage, serve ------------------------------------------------------

def test_the_default_url_is_where_the_server_listens_by_default():
    from app.cli import DEFAULT_URL

    host, port = Settings.model_fields["host"].default, Settings.model_fields["port"].default
    assert DEFAULT_URL == f"http://{host}:{port}"


def test_help_for_every_command_and_version():
    top = text(ai_director("--help", check_status=0).stdout)
    for command in ("serve", "caption", "adapt-voice", "brief", "check", "brands"):
        assert command in top
        assert f"Usage: ai-director {command}" in text(ai_director(command, "--help", check_status=0).stdout)
    assert "เปิดตัวเมาส์เกมมิ่ง" in top  # the Thai examples print under the C locale
    assert "AI_DIRECTOR_MAX_NEW_TOKENS" in text(ai_director("serve", "--help", check_status=0).stdout)
    assert text(ai_director("--version", check_status=0).stdout).strip() == f"ai-director {version('ai-director')}"


@pytest.mark.parametrize("args, complaint", [
    (["caption", "TechZone"], "Missing argument 'CONTEXT'"),
    (["caption", "TechZone", "launch", "--platform", "myspace"], "'myspace' is not one of"),
    (["brief", "TechZone"], "Missing argument 'OBJECTIVES...'"),
    (["caption", "TechZone", "launch", "--temperature", "3"], "--temperature"),
    (["--url", "localhost:8000", "brands"], "http:// or https://"),
    (["dance"], "No such command 'dance'"),
])
def test_bad_usage_exits_2_before_any_request(args, complaint):
    result = ai_director(*args, check_status=2)
    assert complaint in text(result.stderr) and "Usage:" in text(result.stderr)


def test_serve_runs_the_same_start_up_as_python_m_app(tmp_path):
    missing = c_locale_env(AI_DIRECTOR_BRANDS_PATH=str(tmp_path / "brands.json"), HF_HUB_OFFLINE="1")
    result = ai_director("serve", env=missing, check_status=1)  # the brands pre-check, before any model
    assert "brands.json: file not found" in text(result.stderr)
    bad = ai_director("serve", env=c_locale_env(AI_DIRECTOR_PORT="0x"), check_status=2)
    assert "AI_DIRECTOR_PORT" in text(bad.stderr)


def test_serve_then_the_client_against_it(tiny_model_dir, brands_file):
    """`ai-director serve` with the tiny model, and `ai-director caption --stream` against it."""
    port = free_port()
    env = c_locale_env(AI_DIRECTOR_BASE_MODEL=str(tiny_model_dir), AI_DIRECTOR_BRANDS_PATH=str(brands_file),
                       AI_DIRECTOR_DEVICE="cpu", AI_DIRECTOR_MAX_NEW_TOKENS="8", AI_DIRECTOR_LOG_LEVEL="warning",
                       AI_DIRECTOR_PORT=str(port), HF_HUB_OFFLINE="1")
    proc = subprocess.Popen([str(SCRIPT), "serve"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    try:
        def ready():
            assert proc.poll() is None, proc.stderr.read().decode()
            try:
                return httpx.get(f"{url}/ready").status_code == 200
            except httpx.TransportError:
                return False

        poll(ready, timeout=120, every=0.2)
        result = ai_director("caption", "TechZone", "เปิดตัวเมาส์", "--stream", "--seed", "3", url=url, check_status=0)
        answer = httpx.post(f"{url}/caption", json={"brand": "TechZone", "context": "เปิดตัวเมาส์", "seed": 3},
                            timeout=HANG_GUARD_S).json()
        assert text(result.stdout) == answer["text"] + "\n"
    finally:
        proc.terminate()
        proc.wait(timeout=30)


# --- ai-director against a real server --------------------------------------------------

def test_caption_prints_the_thai_text_then_a_summary_under_the_c_locale(server):
    client, url, _ = server
    args = ["caption", "เทคโซน", "เปิดตัวเมาส์เกมมิ่ง", "--platform", "instagram", "--tone", "สนุก", "--seed", "7"]
    result = ai_director(*args, url=url, check_status=0)
    answer = client.post("/caption", json={"brand": "เทคโซน", "context": "เปิดตัวเมาส์เกมมิ่ง", "platform": "instagram",
                                           "tone": "สนุก", "seed": 7}).json()
    assert answer["text"] == THAI_REPLY
    assert result.stdout == (answer["text"] + "\n").encode("utf-8")
    verdict = "on brand" if answer["checks"]["on_brand"] else "NOT on brand"
    assert text(result.stderr).startswith(f"TechZone: {verdict} (score ")
    for reason in answer["checks"]["reasons"]:
        assert reason in text(result.stderr)


def test_caption_json_is_the_server_body_unescaped(server):
    client, url, _ = server
    result = ai_director("caption", "TechZone", "เปิดตัวเมาส์", "--seed", "5", "--max-new-tokens", "16",
                         "--temperature", "0", "--top-p", "0.9", "--json", url=url, check_status=0)
    answer = client.post("/caption", json={"brand": "TechZone", "context": "เปิดตัวเมาส์", "seed": 5,
                                           "max_new_tokens": 16, "temperature": 0, "top_p": 0.9}).json()
    assert json.loads(text(result.stdout)) == answer
    assert THAI_REPLY in text(result.stdout) and "\\u0e" not in text(result.stdout)
    assert result.stderr == b""


def test_caption_stream_prints_the_final_text(server):
    client, url, _ = server
    streamed = ai_director("caption", "TechZone", "เปิดตัวเมาส์", "--stream", url=url, check_status=0)
    assert text(streamed.stdout) == THAI_REPLY + "\n"
    assert "TechZone:" in text(streamed.stderr)
    as_json = ai_director("caption", "TechZone", "เปิดตัวเมาส์", "--stream", "--json", "--seed", "1", url=url,
                          check_status=0)
    answer = client.post("/caption", json={"brand": "TechZone", "context": "เปิดตัวเมาส์", "seed": 1}).json()
    assert json.loads(text(as_json.stdout)) == answer  # the `done` event is the plain JSON body


class PausingEngine(FakeEngine):
    """Streams the first part of its reply, then waits for the test before the rest."""

    def __init__(self, tokenizer, first: str, rest: str):
        super().__init__(tokenizer, reply=first + rest)
        self.first, self.rest = first, rest
        self.go_on = threading.Event()

    def generate(self, requests, listeners=None):
        [request], [listener] = requests, listeners
        listener.delta(self.first)
        self.go_on.wait(timeout=HANG_GUARD_S)
        listener.delta(self.rest)
        result = self.result(request)
        listener.finished(result)
        return [result]

    def result(self, request):
        from app.engine import GenerationResult

        return GenerationResult(self.first + self.rest, self.count_tokens(request.prompt), 7, "stop", request.seed)


def test_stream_prints_each_piece_as_it_arrives(brands_file, tiny_tokenizer):
    first, rest = "🎮 เมาส์ใหม่จาก TechZone", " ไวทันใจ #TechZone"
    engine = PausingEngine(tiny_tokenizer, first, rest)
    with serving_in_thread(fake_app(brands_file, tiny_tokenizer, engine)) as (_, port):
        proc = subprocess.Popen([str(SCRIPT), "--url", f"http://127.0.0.1:{port}", "caption", "TechZone", "เปิดตัว",
                                 "--stream"], env=c_locale_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        received = bytearray()

        def read_stdout():  # as bytes arrive, not when the process ends
            while chunk := os.read(proc.stdout.fileno(), 1024):
                received.extend(chunk)

        reader = threading.Thread(target=read_stdout)
        reader.start()
        try:
            poll(lambda: bytes(received) == first.encode("utf-8"), timeout=HANG_GUARD_S)
            assert proc.poll() is None  # the first piece is out while the rest is not yet written
        finally:
            engine.go_on.set()
            proc.wait(timeout=HANG_GUARD_S)
            reader.join(timeout=HANG_GUARD_S)
        assert proc.returncode == 0, proc.stderr.read()
        assert bytes(received).decode("utf-8") == first + rest + "\n"


def test_adapt_voice(server):
    client, url, _ = server
    message = "เรามีโปรโมชั่นพิเศษ ลด 20% ถึงสิ้นเดือน"
    result = ai_director("adapt-voice", "FitFlow", message, "--platform", "line", "--tone", "สดใส", url=url,
                         check_status=0)
    answer = client.post("/adapt-voice", json={"brand": "FitFlow", "message": message, "platform": "line",
                                               "tone": "สดใส"}).json()
    assert text(result.stdout) == answer["text"] + "\n"
    assert text(result.stderr).startswith("FitFlow: ")


def test_brief_sends_every_objective(server):
    _, url, engine = server
    objectives = ["ให้ความรู้เรื่องผักออร์แกนิก", "สร้างความเชื่อมั่น", "เพิ่มยอดขายออนไลน์"]
    result = ai_director("brief", "GreenLeaf", *objectives, "--audience", "คนรักสุขภาพ", "--platform", "facebook",
                         "--json", url=url, check_status=0)
    prompt = engine.batches[-1][0].prompt
    assert all(objective in prompt for objective in objectives) and "คนรักสุขภาพ" in prompt
    body = json.loads(text(result.stdout))
    assert body["brand"] == "GreenLeaf" and body["text"] == THAI_REPLY
    assert body["checks"]["platform"]["name"] == "facebook"


def test_check_prints_the_verdict_and_reasons(server):
    client, url, _ = server
    copy = "☕ เริ่มเช้าใหม่กับ CoffeeLab #TechZone"
    result = ai_director("check", "TechZone", copy, "--platform", "x", url=url, check_status=0)
    answer = client.post("/check", json={"brand": "TechZone", "text": copy, "platform": "x"}).json()
    assert not answer["checks"]["on_brand"]
    lines = text(result.stdout).splitlines()
    assert lines[0].startswith("TechZone: NOT on brand")
    assert lines[1:] == [f"  - {reason}" for reason in answer["checks"]["reasons"]]
    as_json = ai_director("check", "TechZone", copy, "--platform", "x", "--json", url=url, check_status=0)
    assert json.loads(text(as_json.stdout)) == answer


def test_brands_lists_every_brand_and_shows_one(server):
    client, url, _ = server
    listed = ai_director("brands", url=url, check_status=0)
    every = client.get("/brands").json()
    lines = text(listed.stdout).splitlines()
    assert [line.split(" ")[0] for line in lines] == [b["name"].split(" ")[0] for b in every["brands"]]
    assert any("โกลว์แล็บ" in line for line in lines)
    assert f"{every['count']} brands" in text(listed.stderr)

    one = ai_director("brands", "โกลว์แล็บ", url=url, check_status=0)
    record = client.get("/brands/โกลว์แล็บ").json()
    import yaml

    assert yaml.safe_load(text(one.stdout)) == record["brand"]
    assert json.loads(text(ai_director("brands", "โกลว์แล็บ", "--json", url=url, check_status=0).stdout)) == record


def test_an_unknown_brand_is_exit_1_with_the_message_and_suggestions(server):
    client, url, _ = server
    result = ai_director("caption", "Coffee Labz Shop", "เปิดตัวเมนูใหม่", url=url, check_status=1)
    error = client.post("/caption", json={"brand": "Coffee Labz Shop", "context": "เปิดตัวเมนูใหม่"}).json()["error"]
    stderr = text(result.stderr)
    assert result.stdout == b""
    assert stderr.startswith(f"error: {error['message']} (brand_not_found, HTTP 404)")
    assert "param: brand" in stderr and f"did you mean: {', '.join(error['suggestions'])}" in stderr
    assert "CoffeeLab" in error["suggestions"]

    streamed = ai_director("caption", "Coffee Labz Shop", "เปิดตัว", "--stream", url=url, check_status=1)
    assert "brand_not_found" in text(streamed.stderr)
    assert "brand_not_found" in text(ai_director("brands", "Coffee Labz Shop", url=url, check_status=1).stderr)


def test_a_request_the_server_refuses_shows_its_field(server):
    _, url, _ = server
    result = ai_director("caption", "TechZone", "🎮🎮", url=url, check_status=1)
    assert "(invalid_request, HTTP 422)" in text(result.stderr) and "param: context" in text(result.stderr)


def test_adapter_option_is_sent_and_an_unknown_one_named(server):
    _, url, _ = server
    result = ai_director("caption", "TechZone", "เปิดตัว", "--adapter", "agency-z", url=url, check_status=1)
    assert "(adapter_not_found, HTTP 404)" in text(result.stderr) and "param: adapter" in text(result.stderr)
    assert ai_director("caption", "TechZone", "เปิดตัว", "--adapter", "none", url=url).returncode == 0


def test_api_key_from_the_option_or_the_environment(brands_file, tiny_tokenizer):
    engine = FakeEngine(tiny_tokenizer, reply=THAI_REPLY)
    with serving_in_thread(fake_app(brands_file, tiny_tokenizer, engine, api_key="right-key")) as (_, port):
        url = f"http://127.0.0.1:{port}"
        for args in (["brands"], ["--api-key", "wrong-key", "brands"], ["--api-key", "wrong-key", "caption",
                                                                          "TechZone", "เปิดตัว", "--stream"]):
            refused = text(ai_director(*args, url=url, check_status=1).stderr)
            assert "missing or wrong API key" in refused and "(unauthorized, HTTP 401)" in refused
        ai_director("--api-key", "right-key", "brands", url=url, check_status=0)
        from_env = ai_director("caption", "TechZone", "เปิดตัว", env=c_locale_env(AI_DIRECTOR_URL=url,
                                                                                  AI_DIRECTOR_API_KEY="right-key"))
        assert from_env.returncode == 0 and text(from_env.stdout) == THAI_REPLY + "\n"


def test_an_unreachable_server_is_exit_1_naming_the_url():
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    for args in (["brands"], ["caption", "TechZone", "เปิดตัว", "--stream"]):
        result = ai_director(*args, url=url, check_status=1)
        stderr = text(result.stderr)
        assert f"cannot reach the AI Director server at {url}" in stderr and "ai-director serve" in stderr
        assert "Traceback" not in stderr


def test_python_m_app_cli_is_the_same_client(server):
    _, url, _ = server
    result = subprocess.run([sys.executable, "-m", "app.cli", "--url", url, "brands", "เทคโซน", "--json"],
                            env=c_locale_env(), cwd=REPO, capture_output=True, timeout=HANG_GUARD_S)
    assert result.returncode == 0 and json.loads(text(result.stdout))["brand"]["name"] == "TechZone"
