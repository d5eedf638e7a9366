"""Streaming: Thai-safe incremental decoding, per-row streams in one batch, and server-sent
events from the real server, with the tiny model and with engines that fail on purpose."""

import json
import threading
import time

import httpx
import pytest

from app.detokenize import IncrementalDecoder
from conftest import REPO
from test_server import poll, running_app, serving_in_thread


def read_events(response: httpx.Response) -> list[tuple[str, str]]:
    """(event, data) pairs of a text/event-stream body, comments as ("comment", text)."""
    events, name, data = [], "message", []
    for line in response.iter_lines():
        if line.startswith(":"):
            events.append(("comment", line[1:].strip()))
        elif line.startswith("event:"):
            name = line[6:].strip()
        elif line.startswith("data:"):
            data.append(line[5:].removeprefix(" "))
        elif line == "" and data:
            events.append((name, "\n".join(data)))
            name, data = "message", []
    return events


def stream(client: httpx.Client, path: str, body: dict) -> tuple[list[str], dict, list]:
    with client.stream("POST", path, json=dict(body, stream=True)) as r:
        assert r.status_code == 200, r.read()
        assert r.headers["content-type"].startswith("text/event-stream")
        events = read_events(r)
    deltas = [json.loads(d)["text"] for e, d in events if e == "delta"]
    [done] = [json.loads(d) for e, d in events if e == "done"]
    return deltas, done, events


# --- incremental decoding -------------------------------------------------------------

def test_every_thai_character_split_across_byte_tokens_comes_out_whole(tiny_tokenizer):
    text = "เปิดตัว! กาแฟที่ใช่ ☕️ #CoffeeLab 👍🏽"
    # One token per UTF-8 byte: every Thai character (3 bytes) and emoji spans several tokens.
    byte_tokens = [tiny_tokenizer.convert_tokens_to_ids(t) for t in tiny_tokenizer.tokenize(text)]
    ids = []
    for token in byte_tokens:
        for char in tiny_tokenizer.convert_ids_to_tokens([token])[0]:
            ids.append(tiny_tokenizer.convert_tokens_to_ids(char))  # the byte-level alphabet: one char per byte
    assert len(ids) == len(text.encode("utf-8"))
    decoder = IncrementalDecoder(tiny_tokenizer)
    deltas = [decoder.push(i) for i in ids] + [decoder.finish()]
    assert "".join(deltas) == decoder.final_text == text
    assert not any("\ufffd" in d for d in deltas)
    assert sum(1 for d in deltas if d) < len(ids)  # characters waited for their last byte


def test_whitespace_around_the_answer_is_never_shown(tiny_tokenizer):
    ids = tiny_tokenizer("\n  สวัสดี ครับ  \n", add_special_tokens=False)["input_ids"]
    decoder = IncrementalDecoder(tiny_tokenizer)
    deltas = [decoder.push(i) for i in ids] + [decoder.finish()]
    assert "".join(deltas) == decoder.final_text == "สวัสดี ครับ"


def test_fifty_seeded_generations_stream_exactly_their_text(tiny_model_dir):
    """Rows of one batch each get their own deltas; joined, they are the result's text."""
    from app.engine import GenerationRequest, HFEngine
    from app.prompter import Prompter
    from app.prompts import build_messages
    from app.settings import Settings

    engine = HFEngine.load(Settings(base_model=str(tiny_model_dir), device="cpu", load_in_4bit=False, _env_file=None))
    prompt = Prompter(engine.tokenizer).render(build_messages("caption", "TechZone", {"context": "เปิดตัว"}, None))

    class Listener:
        cancelled = False

        def __init__(self):
            self.deltas, self.result = [], None

        def delta(self, text):
            self.deltas.append(text)

        def finished(self, result):
            self.result = result

    split_chars = 0
    for first in range(0, 50, 10):
        requests = [GenerationRequest(prompt, 24, temperature=1.0, top_p=1.0, seed=s) for s in range(first, first + 10)]
        listeners = [Listener() for _ in requests]
        results = engine.generate(requests, listeners)
        for listener, result in zip(listeners, results, strict=True):
            assert listener.result == result
            assert "".join(listener.deltas) == result.text
        split_chars += sum(1 for r in results for c in r.text if len(c.encode()) > 1)
    assert split_chars > 0  # multi-byte characters were produced, so splits were exercised


# --- the real server ------------------------------------------------------------------

@pytest.fixture(scope="module")
def served(tiny_model_dir, tmp_path_factory):
    import shutil

    folder = tmp_path_factory.mktemp("streamed-brands")
    shutil.copy(REPO / "brands" / "brands.json", folder / "brands.json")
    with running_app(tiny_model_dir, folder / "brands.json", timeout=60, max_new_tokens=400, max_seq_length=4096,
                     context_token_budget=384, batch_timeout_ms=200) as (client, _):
        yield client


@pytest.mark.parametrize("path,body", [
    ("/caption", {"brand": "TechZone", "context": "Gaming mouse launch", "platform": "instagram"}),
    ("/adapt-voice", {"brand": "FitFlow", "message": "เรามีโปรโมชั่นพิเศษ"}),
    ("/brief", {"brand": "GreenLeaf", "objectives": ["ให้ความรู้", "สร้างความเชื่อมั่น"]}),
])
def test_each_endpoint_streams_the_same_answer_it_returns(served, path, body):
    body = dict(body, seed=7, max_new_tokens=24)
    deltas, done, events = stream(served, path, body)
    assert events[-1][0] == "done"
    assert "".join(deltas) == done["text"]
    plain = served.post(path, json=body)
    assert plain.status_code == 200
    assert done == plain.json()  # the same JSON body, byte for byte in meaning


def test_seeded_streams_join_to_their_text_over_http(served):
    for seed in range(50):
        deltas, done, _ = stream(served, "/caption", {"brand": "CoffeeLab", "context": "เปิดตัวเมนูใหม่",
                                                       "seed": seed, "temperature": 1.0, "max_new_tokens": 16})
        assert "".join(deltas) == done["text"], seed


def test_a_short_row_ends_before_its_long_neighbour(served):
    """Both rows share one generate call; the short one's done comes while the long one runs."""
    finished = {}

    def run(name, tokens):
        deltas, done, _ = stream(served, "/caption", {"brand": "TechZone", "context": "launch", "temperature": 0,
                                                       "max_new_tokens": tokens})
        finished[name] = (time.perf_counter(), done, len(deltas))

    before = served.get("/metrics").text
    threads = [threading.Thread(target=run, args=("short", 2)), threading.Thread(target=run, args=("long", 400))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert finished["long"][1]["finish_reason"] == "length"
    assert finished["long"][1]["usage"]["completion_tokens"] == 400
    assert finished["short"][1]["usage"]["completion_tokens"] <= 2
    assert finished["short"][0] < finished["long"][0]
    batches = [line for line in served.get("/metrics").text.splitlines() if line.startswith("ai_director_batch_size_count")]
    count_before = next(line for line in before.splitlines() if line.startswith("ai_director_batch_size_count"))
    assert float(batches[0].split()[-1]) - float(count_before.split()[-1]) == 1  # one batch for both


def test_stream_with_attempts_is_refused_naming_attempts(served):
    r = served.post("/caption", json={"brand": "TechZone", "context": "launch", "stream": True, "attempts": 2})
    assert r.status_code == 422 and r.json()["error"]["param"] == "attempts"


def test_errors_before_the_first_byte_stay_plain_json(served):
    r = served.post("/caption", json={"brand": "NoSuchBrandAtAll", "context": "launch", "stream": True})
    assert r.status_code == 404 and r.headers["content-type"].startswith("application/json")
    assert r.json()["error"]["code"] == "brand_not_found"


def test_stream_metrics_are_exported(served):
    stream(served, "/caption", {"brand": "TechZone", "context": "launch", "max_new_tokens": 4})
    text = served.get("/metrics").text
    assert "ai_director_time_to_first_token_seconds_count" in text
    assert "ai_director_inter_token_latency_seconds_count" in text
    assert "ai_director_open_streams 0.0" in text


def test_a_client_that_leaves_mid_stream_frees_its_place(tiny_model_dir, brands_file):
    """Batch size 1: the long stream holds the model until its client hangs up; then the
    row stops at the next step and the request queued behind it runs."""
    with running_app(tiny_model_dir, brands_file, timeout=120, max_batch_size=1, max_new_tokens=3000,
                     max_seq_length=4096) as (client, _):
        long = {"brand": "TechZone", "context": "launch", "temperature": 0, "max_new_tokens": 3000, "stream": True}
        with client.stream("POST", "/caption", json=long) as r:
            for line in r.iter_lines():
                if line.startswith("event: delta"):
                    break  # the first text arrived: hang up now
        queued = client.post("/caption", json={"brand": "TechZone", "context": "next", "max_new_tokens": 4})
        assert queued.status_code == 200

        def settled():
            text = client.get("/metrics").text
            return text if "ai_director_open_streams 0.0" in text else None

        metrics, _ = poll(settled, 10)
        assert "ai_director_requests_cancelled_total 1.0" in metrics
        generated = next(float(line.split()[-1]) for line in metrics.splitlines()
                         if line.startswith("ai_director_generated_tokens_total"))
        assert generated < 3000  # the long row stopped instead of running to its limit


# --- failures after the first byte, on a real uvicorn with an engine that breaks ---------

class BreaksMidStream:
    """Sends two pieces of text, then fails; slow enough for keep-alive comments to show."""

    def __init__(self, tokenizer):
        from app.engine import ModelInfo, SamplingDefaults

        self.info = ModelInfo(base="breaking", adapter=None, device="cpu", quantization=None)
        self.defaults = SamplingDefaults(0.0, 1.0, 0)
        self.tokenizer = tokenizer

    def generate(self, requests, listeners=None):
        time.sleep(0.5)
        for listener in listeners or []:
            listener.delta("เปิด")
            listener.delta("ตัว")
        raise RuntimeError("CUDA error: an illegal memory access was encountered")


def test_a_failure_mid_stream_sends_an_error_event(brands_file, tiny_tokenizer):
    from app.main import create_app
    from app.settings import Settings

    settings = Settings(brands_path=brands_file, base_model=tiny_tokenizer.name_or_path, stream_keepalive_s=0.1,
                        _env_file=None)
    app = create_app(settings, engine_factory=lambda s: BreaksMidStream(tiny_tokenizer))
    with serving_in_thread(app) as (client, _):
        with client.stream("POST", "/caption", json={"brand": "TechZone", "context": "launch", "stream": True}) as r:
            assert r.status_code == 200
            events = read_events(r)
        names = [e for e, _ in events]
        assert ("comment", "keep-alive") in events  # sent while the request waited
        assert "".join(json.loads(d)["text"] for e, d in events if e == "delta") == "เปิดตัว"
        assert names[-1] == "error" and "done" not in names
        error = json.loads(events[-1][1])["error"]
        assert error["code"] == "generation_failed" and "illegal memory access" not in error["message"]
        assert client.get("/ready").status_code == 200  # the service keeps serving
