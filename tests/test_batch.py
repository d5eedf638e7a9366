"""POST /batch and `ai-director batch`: a content calendar in one request, through the same
queue as single requests, exported as JSON, JSON lines or CSV for Excel. Real uvicorn,
fake engine."""

import asyncio
import csv
import io
import json
import os
import pty
import re
import socket
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from app.batch import run_batch, window
from app.errors import APIError
from app.batch_request import BatchRequest
from app.settings import Settings
from conftest import REPO
from fakes import FakeEngine
from test_contract import GatedEngine, Server, app_with
from test_server import poll, serving_in_thread

HANG_GUARD_S = 60  # only against hangs; no test asserts a duration
# Thai with what CSV must quote: a comma, double quotes, a line break.
REPLY = 'ลดราคา 20%, "พิเศษ" ทุกเมนูที่ CoffeeLab\nสั่งเลยวันนี้ #CoffeeLab'
FAILS = "ล้มเหลวโดยตั้งใจ"  # a context the engine fails on
MAX_ITEMS = 40
SCRIPT = Path(sys.executable).parent / "ai-director"
BOM = "\ufeff".encode()

MIXED = [
    {"task": "caption", "brand": "คอฟฟี่แล็บ", "context": "เปิดตัวเมนูใหม่, Cold Brew", "platform": "instagram",
     "seed": 3},
    {"task": "adapt_voice", "brand": "GlowLab", "message": "ลดราคา 20% ทุกรายการ", "platform": "facebook", "seed": 4},
    {"task": "brief", "brand": "ครัวคุณยาย", "objectives": ["เพิ่มยอดสั่งกลับบ้าน", "ให้คนรู้จักแกงเขียวหวาน"],
     "seed": 5},
    {"task": "caption", "brand": "ร้านที่ไม่มีจริงเลย", "context": "เปิดร้านใหม่"},
    {"task": "caption", "brand": "CoffeeLab", "context": FAILS},
    {"task": "caption", "brand": "TechZone", "context": "เมาส์เกมมิ่ง", "dry_run": True},
]
SINGLE = {"caption": "/caption", "adapt_voice": "/adapt-voice", "brief": "/brief"}


@pytest.fixture(scope="module")
def served(tiny_tokenizer, tmp_path_factory):
    brands_file = tmp_path_factory.mktemp("batch-brands") / "brands.json"
    brands_file.write_bytes((REPO / "brands" / "brands.json").read_bytes())
    engine = FakeEngine(tiny_tokenizer, reply=REPLY)
    app = app_with(brands_file, tiny_tokenizer, engine, max_batch_items=MAX_ITEMS, stream_interval_ms=0)
    with serving_in_thread(app) as (client, _):
        yield Server(client, app, engine)


def post_batch(served: Server, items: list, **kwargs) -> httpx.Response:
    return served.conforms("/batch", served.client.post("/batch", json={"items": items}, **kwargs))


def failing(served: Server):
    """The engine fails on FAILS for the length of a `with` block."""

    class Failing:
        def __enter__(self):
            served.engine.fail_on = FAILS

        def __exit__(self, *exc):
            served.engine.fail_on = None

    return Failing()


# --- JSON ---------------------------------------------------------------------------------

def test_every_item_is_answered_in_order_and_one_failure_fails_only_itself(served):
    with failing(served):
        response = post_batch(served, MIXED)
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert [(r["index"], r["task"]) for r in results] == [(i, item["task"]) for i, item in enumerate(MIXED)]

    # A success is the single request's own body, plus index and task.
    for item, result in zip(MIXED[:3], results[:3]):
        alone = served.client.post(SINGLE[item["task"]], json={k: v for k, v in item.items() if k != "task"})
        assert {k: v for k, v in result.items() if k not in ("index", "task")} == alone.json()
        assert result["text"] == REPLY and "checks" in result and "error" not in result
    assert results[0]["brand"] == "CoffeeLab" and results[0]["checks"]["platform"]["name"] == "instagram"

    unknown, failed, dry = results[3:]
    assert unknown["status"] == 404 and unknown["error"]["code"] == "brand_not_found"
    assert unknown["error"]["param"] == "brand" and "text" not in unknown
    assert failed["status"] == 500 and failed["error"]["code"] == "generation_failed"
    assert dry["text"] == "" and dry["prompt"] and "checks" not in dry
    prompts = [r.prompt for batch in served.engine.batches for r in batch]
    assert not any("เมาส์เกมมิ่ง" in p for p in prompts)  # the dry run never reached the model


def test_a_batch_over_the_limit_is_422_naming_the_setting(served):
    item = {"task": "caption", "brand": "CoffeeLab", "context": "กาแฟ"}
    response = post_batch(served, [item] * (MAX_ITEMS + 1))
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["param"] == "items" and "AI_DIRECTOR_MAX_BATCH_ITEMS" in error["message"]
    assert f"{MAX_ITEMS + 1} items" in error["message"] and f"limit of {MAX_ITEMS}" in error["message"]
    assert post_batch(served, [item] * MAX_ITEMS).status_code == 200


@pytest.mark.parametrize("bad, param, words", [
    ({"task": "caption", "brand": "CoffeeLab", "context": "🎮🎮"}, "items[1].context", "no words"),
    ({"task": "brief", "brand": "ครัวคุณยาย", "objectives": []}, "items[1].objectives", "objectives"),
    ({"task": "caption", "brand": "CoffeeLab", "context": "กาแฟ", "stream": True}, "items[1].stream",
     "does not stream"),
    ({"task": "post", "brand": "CoffeeLab", "context": "กาแฟ"}, "items[1].task", "caption, adapt_voice, brief"),
    ({"brand": "CoffeeLab", "context": "กาแฟ"}, "items[1].task", "required"),
    ({"task": "caption", "brand": "CoffeeLab", "message": "กาแฟ"}, "items[1].context", "required"),
])
def test_an_invalid_item_is_a_422_for_the_whole_batch_naming_it(served, bad, param, words):
    before = len(served.engine.batches)
    response = post_batch(served, [MIXED[0], bad])
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "invalid_request" and param in [e["param"] for e in error["errors"]]
    assert words in next(e["message"] for e in error["errors"] if e["param"] == param)
    assert len(served.engine.batches) == before  # nothing of it was generated


# --- export -------------------------------------------------------------------------------

def read_csv(response: httpx.Response) -> list[dict]:
    assert response.content.startswith(BOM)
    return list(csv.DictReader(io.StringIO(response.content.decode("utf-8-sig"), newline="")))


def test_csv_export_has_a_bom_and_the_thai_of_the_json(served):
    with failing(served):
        as_json = post_batch(served, MIXED).json()["results"]
        response = post_batch(served, MIXED, params={"format": "csv"})
    assert response.status_code == 200 and response.headers["content-type"] == "text/csv; charset=utf-8"
    rows = read_csv(response)
    assert [row["index"] for row in rows] == [str(i) for i in range(len(MIXED))]
    assert list(rows[0]) == ["index", "task", "brand", "platform", "input", "text", "on_brand", "score", "reasons",
                             "finish_reason", "error_code", "error_message"]
    for row, result in zip(rows[:3], as_json[:3]):
        assert row["text"].encode("utf-8") == result["text"].encode("utf-8") == REPLY.encode("utf-8")
        assert row["on_brand"] == str(result["checks"]["on_brand"]).lower()
        assert float(row["score"]) == result["checks"]["score"]
        assert row["reasons"] == "; ".join(result["checks"]["reasons"]) and row["finish_reason"] == "stop"
    assert rows[0]["input"] == "เปิดตัวเมนูใหม่, Cold Brew" and rows[0]["brand"] == "CoffeeLab"
    assert rows[1]["input"] == "ลดราคา 20% ทุกรายการ" and rows[1]["platform"] == "facebook"
    assert rows[2]["input"] == "เพิ่มยอดสั่งกลับบ้าน; ให้คนรู้จักแกงเขียวหวาน" and rows[2]["task"] == "brief"
    assert rows[3]["error_code"] == "brand_not_found" and rows[3]["text"] == ""
    assert rows[3]["brand"] == "ร้านที่ไม่มีจริงเลย" and "ร้านที่ไม่มีจริงเลย" in rows[3]["error_message"]
    assert rows[4]["error_code"] == "generation_failed"


def test_jsonl_export_is_one_result_per_line(served):
    as_json = post_batch(served, MIXED[:4]).json()["results"]
    response = post_batch(served, MIXED[:4], params={"format": "jsonl"})
    assert response.headers["content-type"] == "application/x-ndjson"
    lines = response.content.decode("utf-8").splitlines()
    assert [json.loads(line) for line in lines] == as_json
    assert "ทุกเมนูที่ CoffeeLab" in lines[0]  # Thai as it is, not \u escapes


@pytest.mark.parametrize("accept, params, expected", [
    ("text/csv", {}, "text/csv; charset=utf-8"),
    ("application/x-ndjson", {}, "application/x-ndjson"),
    ("application/jsonl", {}, "application/jsonl"),
    ("application/json;q=0.5, text/csv", {}, "text/csv; charset=utf-8"),
    ("text/csv;q=0.2, application/json", {}, "application/json"),
    ("*/*", {}, "application/json"),
    ("text/csv", {"format": "json"}, "application/json"),  # the parameter wins
    ("application/x-ndjson", {"format": "csv"}, "text/csv; charset=utf-8"),
])
def test_the_accept_header_picks_the_format_and_the_parameter_wins(served, accept, params, expected):
    item = {"task": "caption", "brand": "CoffeeLab", "context": "กาแฟ", "seed": 1}
    response = post_batch(served, [item], params=params, headers={"Accept": accept})
    assert response.status_code == 200 and response.headers["content-type"] == expected
    if expected.startswith("text/csv"):
        assert read_csv(response)[0]["text"] == REPLY
    elif expected == "application/json":
        assert response.json()["results"][0]["text"] == REPLY
    else:
        assert json.loads(response.content.decode("utf-8").splitlines()[0])["text"] == REPLY


# --- the queue ----------------------------------------------------------------------------

def test_a_batch_the_queue_has_no_room_for_is_429(brands_file, tiny_tokenizer):
    engine = GatedEngine(tiny_tokenizer)  # one request stays in the model, two wait behind it
    app = app_with(brands_file, tiny_tokenizer, engine, max_queue=2, max_batch_size=1, batch_timeout_ms=0)
    assert window(app.state.settings) == 1  # max(1, min(1 per model batch, 2 // 2))
    caption = {"brand": "CoffeeLab", "context": "กาแฟ"}
    with serving_in_thread(app) as (client, _), ThreadPoolExecutor(3) as pool:
        served = Server(client, app, engine)
        first = pool.submit(client.post, "/caption", json=caption)
        poll(engine.entered.is_set, HANG_GUARD_S)
        waiting = [pool.submit(client.post, "/caption", json=caption) for _ in range(2)]
        poll(lambda: app.state.service.backend.depth == 2, HANG_GUARD_S)
        try:
            refused = post_batch(served, [{"task": "caption", **caption}])
            dry = post_batch(served, [{"task": "caption", **caption, "dry_run": True}])  # takes no place
        finally:
            engine.release.set()
        assert refused.status_code == 429 and refused.json()["error"]["code"] == "queue_full"
        assert int(refused.headers["retry-after"]) >= 1 and "a batch needs 1 free place in the queue" in refused.text
        assert dry.status_code == 200
        assert [f.result().status_code for f in (first, *waiting)] == [200, 200, 200]


class SteppedEngine(FakeEngine):
    """Each model call waits for a step from the test; `calls` counts the calls that began."""

    def __init__(self, tokenizer):
        super().__init__(tokenizer, reply=REPLY)
        self.steps = threading.Semaphore(0)
        self.calls = 0

    def generate(self, requests, listeners=None):
        self.calls += 1
        assert self.steps.acquire(timeout=HANG_GUARD_S), "the test gave no step"
        return super().generate(requests, listeners)


def test_a_large_batch_holds_its_window_and_never_starves_a_single_request(brands_file, tiny_tokenizer):
    engine = SteppedEngine(tiny_tokenizer)
    # A window of 2 places: the batch's 12 items take 6 model calls, 2 at a time.
    app = app_with(brands_file, tiny_tokenizer, engine, max_queue=8, max_batch_size=2, batch_timeout_ms=1000)
    items = [{"task": "caption", "brand": "CoffeeLab", "context": f"โปรโมชั่นที่ {i}"} for i in range(12)]
    finished = []
    with serving_in_thread(app) as (client, _), ThreadPoolExecutor(2) as pool:
        def send(name, path, body):
            response = client.post(path, json=body, timeout=HANG_GUARD_S)
            finished.append(name)
            return response

        backend = app.state.service.backend
        batch = pool.submit(send, "batch", "/batch", {"items": items})
        try:
            poll(lambda: engine.calls == 1, HANG_GUARD_S)  # items 0 and 1 in the model, the rest wait for places
            assert backend.depth == 0  # the window is full: none of the other ten is queued
            single = pool.submit(send, "single", "/caption", {"brand": "GlowLab", "context": "คำขอเดี่ยว"})
            poll(lambda: backend.depth == 1, HANG_GUARD_S)  # the single request is queued
            engine.steps.release(2)  # the batch's first call, then the next: the single request is in it
            assert single.result(timeout=HANG_GUARD_S).status_code == 200
            assert finished == ["single"] and not batch.done()  # answered while the batch still waits
        finally:
            engine.steps.release(100)
        response = batch.result(timeout=HANG_GUARD_S)
    assert response.status_code == 200 and finished == ["single", "batch"]
    assert [r["text"] for r in response.json()["results"]] == [REPLY] * 12
    calls = [[r.prompt for r in call] for call in engine.batches]
    assert len(calls[0]) == 2 and all("โปรโมชั่นที่" in p for p in calls[0])  # batch items generated together
    assert any("คำขอเดี่ยว" in p for p in calls[1])
    assert max(len(call) for call in calls) == 2 and sum(map(len, calls)) == 13


def test_a_client_that_hangs_up_cancels_the_rest_of_its_batch(brands_file, tiny_tokenizer):
    engine = GatedEngine(tiny_tokenizer)
    app = app_with(brands_file, tiny_tokenizer, engine, max_queue=8, max_batch_size=2, batch_timeout_ms=1000)
    items = [{"task": "caption", "brand": "CoffeeLab", "context": f"โพสต์ที่ {i}"} for i in range(6)]
    body = json.dumps({"items": items}).encode()
    with serving_in_thread(app) as (client, port):
        with socket.create_connection(("127.0.0.1", port)) as raw:
            raw.sendall(b"POST /batch HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
                        b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
            poll(engine.entered.is_set, HANG_GUARD_S)  # two items in the model, four waiting for places

        def cancelled():
            text = client.get("/metrics").text
            return text if 'route="/batch",status="499"' in text else None

        try:
            metrics, _ = poll(cancelled, HANG_GUARD_S)
        finally:
            engine.release.set()
        assert 'route="/batch",status="499"} 1.0' in metrics
        poll(lambda: len(engine.batches) == 1, HANG_GUARD_S)
        assert client.post("/caption", json={"brand": "CoffeeLab", "context": "กาแฟ"}).status_code == 200
    assert [len(batch) for batch in engine.batches] == [2, 1]  # the batch's other four never reached the model


def run(coroutine):
    return asyncio.run(coroutine)


def items_of(count: int, **fields) -> list:
    return BatchRequest.model_validate({"items": [
        {"task": "caption", "brand": "CoffeeLab", "context": f"โพสต์ที่ {i}", **fields} for i in range(count)
    ]}).items


def test_items_the_queue_refuses_wait_and_retry_within_the_window():
    """The runner alone, with a generate() that counts what it holds and refuses at first."""
    held, most, refusals = 0, 0, {}

    async def generate(request, request_id):
        nonlocal held, most
        if refusals.setdefault(request_id, 0) < 2:  # single requests filled the queue twice
            refusals[request_id] += 1
            raise APIError(429, "queue_full", "the server is at capacity")
        held += 1
        most = max(most, held)
        await asyncio.sleep(0.01)
        held -= 1
        return {"brand": "CoffeeLab", "text": request.context, "usage": {"prompt_tokens": 1, "completion_tokens": 1},
                "brand_version": "0" * 12, "model": {"base": "b", "adapter": None},
                "brand_match": {"method": "exact", "score": 100.0, "matched": "CoffeeLab"}}

    results = run(run_batch(items_of(7), generate, places=3, patience_s=HANG_GUARD_S, request_id="r"))
    assert [r["text"] for r in results] == [f"โพสต์ที่ {i}" for i in range(7)]
    assert most <= 3 and set(refusals) == {f"r.{i}" for i in range(7)}


def test_an_item_refused_past_its_patience_keeps_the_429_and_other_errors_are_not_retried():
    calls = []

    async def generate(request, request_id):
        calls.append(request_id)
        if request_id == "r.0":
            raise APIError(429, "queue_full", "the server is at capacity")
        raise APIError(404, "brand_not_found", "no brand matches", param="brand", suggestions=[])

    first, second = run(run_batch(items_of(2), generate, places=1, patience_s=0.1, request_id="r"))
    assert first["status"] == 429 and first["error"]["code"] == "queue_full"
    assert second == {"index": 1, "task": "caption", "status": 404,
                      "error": {"code": "brand_not_found", "message": "no brand matches", "param": "brand",
                                "suggestions": []}}
    assert calls.count("r.1") == 1 and calls.count("r.0") > 1


def test_the_window_leaves_half_the_queue_to_single_requests():
    def of(**s):
        return window(Settings(_env_file=None, **s))

    assert of(max_batch_size=8, max_queue=64) == 8
    assert of(max_batch_size=32, max_queue=10) == 5
    assert of(max_batch_size=8, max_queue=1) == 1


# --- ai-director batch --------------------------------------------------------------------

needs_script = pytest.mark.skipif(not SCRIPT.exists(), reason="the ai-director console script is not installed")


def c_locale_env() -> dict:
    """A container's or cron job's environment: the C locale, no UTF-8 mode."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("AI_DIRECTOR_", "LC_", "PYTHONIOENCODING", "PYTHONUTF8"))}
    return env | {"LANG": "C", "LC_ALL": "C", "PYTHONUTF8": "0", "PYTHONCOERCECLOCALE": "0"}


def on_a_terminal(*args: str, cwd: Path) -> tuple[int, str]:
    """The command with stderr on a pseudo-terminal, as a person runs it; (status, stderr)."""
    controller, terminal = pty.openpty()
    proc = subprocess.Popen([str(SCRIPT), *args], env=c_locale_env(), cwd=cwd, stdout=subprocess.DEVNULL,
                            stderr=terminal)
    os.close(terminal)
    received = bytearray()

    def read():
        while True:
            try:
                chunk = os.read(controller, 4096)
            except OSError:  # EIO: the command closed the terminal
                return
            if not chunk:
                return
            received.extend(chunk)

    reader = threading.Thread(target=read)
    reader.start()
    try:
        proc.wait(timeout=HANG_GUARD_S)
    finally:
        reader.join(timeout=HANG_GUARD_S)
        os.close(controller)
    return proc.returncode, received.decode("utf-8")


def batch_requests(served: Server) -> float:
    found = re.search(r'ai_director_requests_total\{route="/batch",status="200"\} (\S+)',
                      served.client.get("/metrics").text)
    return float(found[1]) if found else 0.0


BRANDS = ["CoffeeLab", "เทคโซน", "ครัวคุณยาย", "GlowLab", "FitFlow"]


def calendar_rows() -> list[dict]:
    """30 posts of April: captions, rewrites (both spellings of the task) and briefs; one unknown brand."""
    rows = []
    for i in range(30):
        row = {"date": f"2025-04-{i + 1:02d}", "brand": BRANDS[i % len(BRANDS)], "platform": "", "context": "",
               "message": "", "objectives": "", "tone": "", "audience": ""}
        if i < 10:
            row.update(task="caption", context=f"โปรสงกรานต์ วันที่ {i + 1}, ลด 20%", platform="Instagram",
                       tone="สดใส")
        elif i < 20:
            row.update(task="adapt-voice" if i % 2 else "adapt_voice", platform="line",
                       message=f'แจ้งเวลาเปิดร้าน "ใหม่" ครั้งที่ {i}')
        else:
            row.update(task="brief", objectives="เพิ่มยอดขาย; สร้างการรับรู้\nให้คนรู้จักเมนูใหม่", audience="คนทำงาน")
        rows.append(row)
    rows[17]["brand"] = "ร้านที่ไม่มีจริงเลย"
    return rows


def write_calendar(path: Path, rows: list[dict]) -> Path:
    out = io.StringIO(newline="")
    writer = csv.DictWriter(out, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    path.write_bytes(BOM + out.getvalue().encode("utf-8"))  # as Excel saves "CSV UTF-8"
    return path


@needs_script
def test_a_month_calendar_in_one_command(served, tmp_path):
    rows = calendar_rows()
    write_calendar(tmp_path / "cal.csv", rows)
    before = batch_requests(served)
    status, stderr = on_a_terminal("--url", str(served.client.base_url), "batch", "cal.csv", "-o", "out.csv",
                                   cwd=tmp_path)
    assert status == 1, stderr  # one row failed
    assert "30/30" in stderr and "Writing 30 items" in stderr  # the progress bar, drawn to the end
    assert "29 succeeded, 1 failed; written to out.csv" in stderr
    assert "row 19: no brand matches 'ร้านที่ไม่มีจริงเลย'" in stderr  # the header is row 1
    assert batch_requests(served) - before == 2  # 30 rows in chunks of 20

    data = (tmp_path / "out.csv").read_bytes()
    assert data.startswith(BOM)
    out = list(csv.DictReader(io.StringIO(data.decode("utf-8-sig"), newline="")))
    assert list(out[0])[:3] == ["date", "index", "task"]
    assert [r["index"] for r in out] == [str(i) for i in range(30)]
    assert [r["date"] for r in out] == [r["date"] for r in rows]
    assert [r["task"] for r in out] == ["caption"] * 10 + ["adapt_voice"] * 10 + ["brief"] * 10
    for i, (row, result) in enumerate(zip(rows, out)):
        if i == 17:
            assert result["error_code"] == "brand_not_found" and result["text"] == ""
            assert result["brand"] == "ร้านที่ไม่มีจริงเลย" and "ร้านที่ไม่มีจริงเลย" in result["error_message"]
            continue
        assert result["text"] == REPLY and result["error_code"] == "" and result["on_brand"] in ("true", "false")
        given = row["context"] or row["message"] or "เพิ่มยอดขาย; สร้างการรับรู้; ให้คนรู้จักเมนูใหม่"
        assert result["input"] == given
    assert out[0]["platform"] == "instagram" and out[0]["brand"] == "CoffeeLab" and out[1]["brand"] == "TechZone"
    prompts = [r.prompt for batch in served.engine.batches for r in batch]
    assert any("สดใส" in p for p in prompts) and any("คนทำงาน" in p for p in prompts)  # tone and audience sent


@needs_script
def test_json_lines_to_stdout_carry_the_date(served, tmp_path):
    write_calendar(tmp_path / "cal.csv", calendar_rows()[:3])
    result = subprocess.run([str(SCRIPT), "--url", str(served.client.base_url), "batch", "cal.csv", "--format",
                             "jsonl"], env=c_locale_env(), cwd=tmp_path, capture_output=True, timeout=HANG_GUARD_S)
    assert result.returncode == 0, result.stderr.decode()
    lines = [json.loads(line) for line in result.stdout.decode("utf-8").splitlines()]
    assert [(r["index"], r["date"], r["text"]) for r in lines] == [(i, f"2025-04-0{i + 1}", REPLY) for i in range(3)]
    stderr = result.stderr.decode("utf-8")
    assert "Writing 3 items" in stderr and "3 items: 3 succeeded, 0 failed" in stderr


@needs_script
@pytest.mark.parametrize("change, complaint", [
    (lambda rows: rows[2].update(task="post"), "row 4: task 'post' is not one of caption, adapt-voice, brief"),
    (lambda rows: rows[5].update(context=""), "row 7: a caption needs its context, and that cell is empty"),
    (lambda rows: rows[0].update(platform="myspace"), "row 2: platform 'myspace' is not one of"),
    (lambda rows: [row.pop("task") for row in rows], "has no 'task' column"),
])
def test_a_malformed_calendar_is_a_usage_error_before_anything_is_sent(served, tmp_path, change, complaint):
    rows = calendar_rows()
    change(rows)
    write_calendar(tmp_path / "cal.csv", rows)
    before = batch_requests(served)
    result = subprocess.run([str(SCRIPT), "--url", str(served.client.base_url), "batch", "cal.csv", "-o", "out.csv"],
                            env=c_locale_env(), cwd=tmp_path, capture_output=True, timeout=HANG_GUARD_S)
    stderr = result.stderr.decode("utf-8")
    assert result.returncode == 2 and complaint in stderr and "Usage:" in stderr, stderr
    assert batch_requests(served) == before and not (tmp_path / "out.csv").exists()


@needs_script
def test_a_chunk_the_server_refuses_names_its_row_and_keeps_the_rows_before(served, tmp_path):
    rows = calendar_rows()[:25]
    rows[21]["context"], rows[21]["task"] = "🎉🎉", "caption"  # no words: the server's own rule, in the 2nd chunk
    write_calendar(tmp_path / "cal.csv", rows)
    result = subprocess.run([str(SCRIPT), "--url", str(served.client.base_url), "batch", "cal.csv", "-o", "out.csv"],
                            env=c_locale_env(), cwd=tmp_path, capture_output=True, timeout=HANG_GUARD_S)
    stderr = result.stderr.decode("utf-8")
    assert result.returncode == 1, stderr
    assert "field 'row 23.context': context has no words" in stderr and "(invalid_request, HTTP 422)" in stderr
    assert "the results of the 20 rows before are written to out.csv" in stderr
    out = list(csv.DictReader(io.StringIO((tmp_path / "out.csv").read_text(encoding="utf-8-sig"), newline="")))
    assert [r["date"] for r in out] == [r["date"] for r in rows[:20]]


def test_a_calendar_row_may_pick_an_adapter():
    from app.batch import read_calendar

    calendar = "brand,task,context,platform,adapter\nCoffeeLab,caption,เปิดตัว,Instagram,agency-a\n"
    [row] = read_calendar(calendar.encode())
    assert row.item == {"task": "caption", "brand": "CoffeeLab", "context": "เปิดตัว", "platform": "instagram",
                        "adapter": "agency-a"}
