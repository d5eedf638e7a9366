"""The API in-process with a fake engine: shapes, errors, dry runs, auth, overload."""

import asyncio
import json
import threading
import time

import httpx
import pytest
from fastapi.responses import JSONResponse
from fastapi.testclient import TestClient

from app.main import create_app
from app.settings import Settings
from fakes import FakeEngine


def make_client(brands_file, tokenizer, engine=None, **overrides):
    # The prompter loads the tokenizer from the base model's folder: the tiny one.
    overrides.setdefault("base_model", tokenizer.name_or_path)
    settings = Settings(brands_path=brands_file, _env_file=None, **overrides)
    engine = engine or FakeEngine(tokenizer)
    app = create_app(settings, engine_factory=lambda s: engine)
    return TestClient(app), engine


def wait_ready(client, timeout=10.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if client.get("/ready").status_code == 200:
            return
        time.sleep(0.02)
    raise AssertionError("service never became ready")


@pytest.fixture
def client(brands_file, tiny_tokenizer):
    c, engine = make_client(brands_file, tiny_tokenizer)
    with c:
        wait_ready(c)
        c.engine = engine
        yield c


def assert_error(response, status, code):
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and body["error"]["code"] == code and body["error"]["message"]
    return body["error"]


def test_caption_response_shape(client):
    r = client.post("/caption", json={"brand": "techzone", "context": "Gaming mouse launch", "platform": "instagram"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["brand"] == "TechZone"
    assert body["text"]
    assert body["usage"]["prompt_tokens"] > 50 and body["usage"]["completion_tokens"] == 7
    assert len(body["brand_version"]) == 12
    assert body["model"] == {"base": "fake-base", "adapter": None}
    assert body["brand_match"] == {"method": "exact", "score": 100.0, "matched": "TechZone"}
    assert body["checks"]["brand_mentioned"] is True
    assert r.headers["x-request-id"]


def test_each_task_reaches_the_engine_with_its_fields(client):
    client.post("/adapt-voice", json={"brand": "FitFlow", "message": "เรามีโปรโมชั่นพิเศษ"})
    client.post("/brief", json={"brand": "GreenLeaf", "objectives": ["ให้ความรู้", "สร้างความเชื่อมั่น"]})
    prompts = [batch[0].prompt for batch in client.engine.batches]
    assert "Message: เรามีโปรโมชั่นพิเศษ" in prompts[0] and "Brand: FitFlow" in prompts[0]
    assert "Objectives: ให้ความรู้; สร้างความเชื่อมั่น" in prompts[1] and "Brand: GreenLeaf" in prompts[1]


def test_dry_run_returns_prompt_and_context_without_generating(client):
    r = client.post("/caption", json={"brand": "TechZone", "context": "Gaming mouse launch", "dry_run": True})
    body = r.json()
    assert r.status_code == 200 and body["text"] == ""
    assert body["prompt"].endswith("<|im_start|>assistant\n")
    assert "Brand: TechZone" in body["context"]["profile"]
    assert body["context"]["tokens"] <= body["context"]["budget"]
    assert client.engine.batches == []


def test_max_new_tokens_is_capped_by_settings(brands_file, tiny_tokenizer):
    c, engine = make_client(brands_file, tiny_tokenizer, max_new_tokens=32)
    with c:
        wait_ready(c)
        c.post("/caption", json={"brand": "TechZone", "context": "launch", "max_new_tokens": 4000})
    assert engine.batches[0][0].max_new_tokens == 32


def test_unknown_brand_is_404_with_suggestions(client):
    err = assert_error(client.post("/caption", json={"brand": "Coffee Labz Shop", "context": "x launch"}), 404, "brand_not_found")
    assert "CoffeeLab" in err["suggestions"] and len(err["suggestions"]) <= 3
    assert err["param"] == "brand"


@pytest.mark.parametrize(
    "payload,param",
    [
        ({"brand": "TechZone"}, "context"),
        ({"brand": "TechZone", "context": "   "}, "context"),
        ({"brand": "TechZone", "context": "🎮🎮🎮"}, "context"),
        ({"brand": "TechZone", "context": "x" * 100_000}, "context"),
        ({"brand": "TechZone", "context": "launch", "temperature": 9}, "temperature"),
        ({"brand": "TechZone", "context": "launch", "platform": "myspace"}, "platform"),
        ({"brand": "TechZone", "context": "launch", "contxt": "typo"}, "contxt"),
        # The document says integer, number, boolean: no lax reading of another JSON type.
        ({"brand": "TechZone", "context": "launch", "max_new_tokens": True}, "max_new_tokens"),
        ({"brand": "TechZone", "context": "launch", "seed": "7"}, "seed"),
        ({"brand": "TechZone", "context": "launch", "temperature": True}, "temperature"),
        ({"brand": "TechZone", "context": "launch", "dry_run": 1}, "dry_run"),
        ({"brand": "TechZone", "context": "launch", "stream": "yes"}, "stream"),
    ],
)
def test_invalid_request_is_422_naming_the_field(client, payload, param):
    err = assert_error(client.post("/caption", json=payload), 422, "invalid_request")
    assert err["param"] == param and param in err["message"]


def test_malformed_json_is_422(client):
    r = client.post("/caption", content=b'{"brand": ', headers={"content-type": "application/json"})
    err = assert_error(r, 422, "invalid_request")
    assert "JSON" in err["message"]


def test_unknown_route_uses_the_error_shape(client):
    assert_error(client.get("/nope"), 404, "not_found")


def test_not_ready_is_503(brands_file, tiny_tokenizer):
    engine = FakeEngine(tiny_tokenizer)
    gate = threading.Event()

    def slow_factory(settings):
        gate.wait(10)
        return engine

    settings = Settings(brands_path=brands_file, base_model=tiny_tokenizer.name_or_path, _env_file=None)
    app = create_app(settings, engine_factory=slow_factory)
    with TestClient(app) as c:
        assert c.get("/health").status_code == 200
        assert c.get("/health").json()["model"]["loaded"] is False
        assert_error(c.get("/ready"), 503, "not_ready")
        err = assert_error(c.post("/caption", json={"brand": "TechZone", "context": "launch"}), 503, "not_ready")
        assert "loading" in err["message"]
        # The tokenizer loads in seconds, apart from the model: dry runs answer meanwhile.
        dry = {"brand": "TechZone", "context": "launch", "dry_run": True}
        for _ in range(200):
            r = c.post("/caption", json=dry)
            if r.status_code == 200:
                break
            time.sleep(0.02)
        assert r.status_code == 200 and r.json()["prompt"] and r.json()["model"]["base"] == settings.base_model
        gate.set()
        wait_ready(c)


def test_api_key(brands_file, tiny_tokenizer):
    c, _ = make_client(brands_file, tiny_tokenizer, api_key="s3cret")
    with c:
        wait_ready(c)
        payload = {"brand": "TechZone", "context": "launch"}
        assert_error(c.post("/caption", json=payload), 401, "unauthorized")
        assert_error(c.post("/caption", json=payload, headers={"Authorization": "Bearer wrong"}), 401, "unauthorized")
        assert_error(c.get("/brands"), 401, "unauthorized")
        assert c.post("/caption", json=payload, headers={"Authorization": "Bearer s3cret"}).status_code == 200
        assert c.post("/caption", json=payload, headers={"X-API-Key": "s3cret"}).status_code == 200
        for open_path in ("/health", "/ready", "/metrics"):
            assert c.get(open_path).status_code == 200
        # The open /health tells a load balancer what it needs and nothing about brands or paths.
        assert c.get("/health").json() == {"status": "ok", "ready": True}
        detail = c.get("/health", headers={"X-API-Key": "s3cret"}).json()
        assert detail["brands"]["path"] and detail["model"]["base"]
        assert c.head("/health").status_code == 200 and c.head("/ready").status_code == 200


def test_metrics_can_require_the_key(brands_file, tiny_tokenizer):
    c, _ = make_client(brands_file, tiny_tokenizer, api_key="s3cret", metrics_require_key=True)
    with c:
        wait_ready(c)
        assert_error(c.get("/metrics"), 401, "unauthorized")
        assert "ai_director_brands" in c.get("/metrics", headers={"Authorization": "Bearer s3cret"}).text


def test_reload_gauge_and_health_agree_after_a_revert(brands_file, tiny_tokenizer):
    """A bad write, then the served content written back: no error anywhere."""
    c, _ = make_client(brands_file, tiny_tokenizer)
    with c:
        wait_ready(c)
        store = c.app.state.service.store
        served = brands_file.read_bytes()
        brands_file.write_text("{ not json", encoding="utf-8")
        store.reload()
        assert "ai_director_brand_reload_error 1.0" in c.get("/metrics").text
        brands_file.write_bytes(served)
        store.reload()
        assert c.get("/health").json()["brands"]["last_reload_error"] is None
        assert "ai_director_brand_reload_error 0.0" in c.get("/metrics").text


async def _fire(app, n, payload):
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        return await asyncio.gather(*[http.post("/caption", json=payload) for _ in range(n)])


def test_full_queue_is_429_with_retry_after(brands_file, tiny_tokenizer):
    engine = FakeEngine(tiny_tokenizer)
    engine.release.clear()  # the first batch blocks, so the queue fills behind it
    c, _ = make_client(brands_file, tiny_tokenizer, engine=engine, max_queue=2, max_batch_size=1, batch_timeout_ms=0)
    with c:
        wait_ready(c)
        app = c.app

        async def scenario():
            task = asyncio.ensure_future(_fire(app, 6, {"brand": "TechZone", "context": "launch"}))
            await asyncio.sleep(0.5)
            engine.release.set()
            return await task

        responses = c.portal.call(scenario)
    codes = sorted(r.status_code for r in responses)
    assert codes.count(200) >= 2 and 429 in codes, codes
    refused = next(r for r in responses if r.status_code == 429)
    assert int(refused.headers["retry-after"]) >= 1
    assert refused.json()["error"]["code"] == "queue_full"


def test_a_refused_request_costs_no_prompt_work(brands_file, tiny_tokenizer):
    """Admission first: with the queue full, a request is refused before retrieval and rendering."""
    engine = FakeEngine(tiny_tokenizer)
    engine.release.clear()
    c, _ = make_client(brands_file, tiny_tokenizer, engine=engine, max_queue=1, max_batch_size=1, batch_timeout_ms=0)
    with c:
        wait_ready(c)
        service = c.app.state.service
        prepared = []
        original = service.prepare
        service.prepare = lambda req, *rest: prepared.append(req) or original(req, *rest)

        async def until(condition):
            for _ in range(1000):
                if condition():
                    return
                await asyncio.sleep(0.01)
            raise AssertionError("the queue never reached the expected state")

        async def scenario():
            body = {"brand": "TechZone", "context": "launch"}
            first = asyncio.ensure_future(_fire(c.app, 1, body))
            await until(lambda: len(prepared) == 1 and service.backend.depth == 0)  # in the model
            second = asyncio.ensure_future(_fire(c.app, 1, body))
            await until(lambda: service.backend.depth == 1)  # waiting: the queue is full
            before = len(prepared)
            refused = await _fire(c.app, 1, dict(body, stream=True))
            after = len(prepared)
            # At the door, before the body is validated: no place, no look at what it asks.
            unread = await _fire(c.app, 1, {"brand": "TechZone"})
            dry = await _fire(c.app, 1, dict(body, dry_run=True))  # takes no place: still answered
            engine.release.set()
            return refused, before, after, unread, dry, [*await first, *await second]

        refused, before, after, unread, dry, done = c.portal.call(scenario)
        refusals = c.get("/metrics").text
    assert refused[0].status_code == 429 and refused[0].json()["error"]["code"] == "queue_full"
    assert after == before  # refused without building a prompt
    assert unread[0].status_code == 429 and unread[0].headers["retry-after"]
    assert 'ai_director_requests_total{route="/caption",status="429"} 2.0' in refusals  # under its route
    assert dry[0].status_code == 200 and dry[0].json()["prompt"]
    assert [r.status_code for r in done] == [200, 200]


def test_request_timeout_is_504(brands_file, tiny_tokenizer):
    engine = FakeEngine(tiny_tokenizer, delay_s=1.0)
    c, _ = make_client(brands_file, tiny_tokenizer, engine=engine, request_timeout_s=0.2)
    with c:
        wait_ready(c)
        err = assert_error(c.post("/caption", json={"brand": "TechZone", "context": "launch"}), 504, "timeout")
        assert "REQUEST_TIMEOUT_S" in err["message"]


def test_engine_failure_fails_only_that_request(brands_file, tiny_tokenizer):
    engine = FakeEngine(tiny_tokenizer, delay_s=0.05)
    engine.fail_on = "POISON"
    c, _ = make_client(brands_file, tiny_tokenizer, engine=engine, batch_timeout_ms=200)
    with c:
        wait_ready(c)

        async def scenario():
            transport = httpx.ASGITransport(app=c.app)
            async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
                return await asyncio.gather(
                    http.post("/caption", json={"brand": "TechZone", "context": "POISON launch"}),
                    http.post("/caption", json={"brand": "TechZone", "context": "good launch"}),
                )

        bad, good = c.portal.call(scenario)
    assert good.status_code == 200
    assert_error(bad, 500, "generation_failed")
    assert len(engine.batches[0]) == 2  # they were batched, then split to isolate the failure


def test_brands_endpoints(client):
    listing = client.get("/brands").json()
    assert listing["count"] >= 14 and any(b["name"] == "TechZone" for b in listing["brands"])
    one = client.get("/brands/เทคโซน").json()
    assert one["brand"]["name"] == "TechZone" and one["brand_match"]["method"] == "alias"
    assert_error(client.get("/brands/NoSuchBrandAtAll"), 404, "brand_not_found")


def test_metrics_count_requests_and_reloads(client):
    client.post("/caption", json={"brand": "TechZone", "context": "launch"})
    text = client.get("/metrics").text
    assert 'ai_director_requests_total{route="/caption",status="200"} 1.0' in text
    assert "ai_director_batch_size_bucket" in text and "ai_director_generated_tokens_total 7.0" in text
    assert 'ai_director_brand_reloads_total{result="failed"} 0.0' in text


def test_failed_model_load_is_reported_not_hidden(brands_file, tiny_model_dir):
    def broken(settings):
        raise RuntimeError("CUDA out of memory while loading")

    app = create_app(Settings(brands_path=brands_file, base_model=str(tiny_model_dir), _env_file=None),
                     engine_factory=broken)
    with TestClient(app) as c:
        for _ in range(100):
            if c.get("/health").json()["model"]["load_error"]:
                break
            time.sleep(0.02)
        assert "CUDA out of memory" in c.get("/health").json()["model"]["load_error"]
        err = assert_error(c.get("/ready"), 503, "not_ready")
        assert "model failed to load" in err["message"]


def test_a_brand_profile_over_the_budget_is_named_not_the_request(tmp_path, tiny_tokenizer):
    brands = tmp_path / "brands.json"
    brands.write_text(json.dumps({"brands": [
        {"name": "Verbose", "description": "แบรนด์ที่เล่าเรื่องยาวมาก " * 150},
        {"name": "TechZone"},
    ]}, ensure_ascii=False), encoding="utf-8")
    c, _ = make_client(brands, tiny_tokenizer)
    with c:
        wait_ready(c)
        for body in ({"brand": "Verbose", "context": "launch"}, {"brand": "Verbose", "context": "launch", "dry_run": True}):
            err = assert_error(c.post("/caption", json=body), 422, "brand_profile_too_long")
            assert err["param"] == "brand" and "Verbose" in err["message"]
            assert "brands.json" in err["message"] and "CONTEXT_TOKEN_BUDGET" in err["message"]
        assert c.post("/caption", json={"brand": "TechZone", "context": "launch"}).status_code == 200


def test_a_burst_past_what_the_backend_holds_is_refused_at_the_door():
    """Requests past the door count before they reach the queue: with room for two, the third of a
    burst is refused at once, before the first two have even been parsed."""
    from types import SimpleNamespace

    from app.admission import QueueGate
    from app.service import DirectorService

    inner_calls, release = [], asyncio.Event()

    async def inner(scope, receive, send):
        inner_calls.append(scope["path"])
        await release.wait()
        await JSONResponse({"ok": True})(scope, receive, send)

    backend = SimpleNamespace(capacity=2, admits=lambda count: True, retry_after_s=lambda: 3)
    service = SimpleNamespace(backend=backend, settings=SimpleNamespace(max_queue=8),
                              queue_full=DirectorService.queue_full)
    gate = QueueGate(inner, lambda: service)

    async def scenario():
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=gate), base_url="http://test") as http:
            held = [asyncio.ensure_future(http.post("/caption", json={"brand": "A", "context": "x"})) for _ in range(2)]
            while len(inner_calls) < 2:
                await asyncio.sleep(0.01)
            refused = await http.post("/caption", json={"brand": "A", "context": "x"})
            dry = asyncio.ensure_future(http.post("/caption", json={"brand": "A", "context": "x", "dry_run": True}))
            other = asyncio.ensure_future(http.get("/health"))
            while len(inner_calls) < 4:
                await asyncio.sleep(0.01)
            release.set()
            return refused, [r.status_code for r in await asyncio.gather(*held, dry, other)]

    refused, answered = asyncio.run(scenario())
    assert refused.status_code == 429 and refused.headers["retry-after"] == "3"
    assert refused.json()["error"]["code"] == "queue_full" and "2 requests are already in progress" in refused.text
    assert answered == [200, 200, 200, 200] and sorted(inner_calls) == ["/caption"] * 3 + ["/health"]
    assert gate.inside == 0


def test_in_a_burst_refusals_are_answered_before_the_admitted_requests_work():
    """Admitted requests let the loop's turn go first, then go on one per turn while refusals are
    near: refusals that arrived with them in a burst are answered first, not after every
    admitted request's prompt work."""
    from types import SimpleNamespace

    from app.admission import QueueGate
    from app.service import DirectorService

    events = []

    async def inner(scope, receive, send):
        events.append(scope["client"][0])
        await JSONResponse({"ok": True})(scope, receive, send)

    backend = SimpleNamespace(capacity=2, admits=lambda count: True, retry_after_s=lambda: 1)
    service = SimpleNamespace(backend=backend, settings=SimpleNamespace(max_queue=8),
                              queue_full=DirectorService.queue_full)
    gate = QueueGate(inner, lambda: service)
    body = json.dumps({"brand": "A", "context": "x"}).encode()

    def request(name: str):
        scope = {"type": "http", "method": "POST", "path": "/caption", "headers": [], "client": (name, 1),
                 "query_string": b"", "root_path": ""}

        async def receive():
            return {"type": "http.request", "body": body, "more_body": False}

        async def send(message):
            if message["type"] == "http.response.start" and message["status"] == 429:
                events.append("refused")

        return gate(scope, receive, send)

    async def burst():  # in arrival order, as uvicorn starts one task per request
        requests = [asyncio.ensure_future(request(name)) for name in ("a1", "a2", "r1", "r2", "r3")]
        while not all(r.done() for r in requests):  # marks each turn of the loop
            events.append("turn")
            await asyncio.sleep(0)

    asyncio.run(burst())
    assert [e for e in events if e != "turn"] == ["refused"] * 3 + ["a1", "a2"]
    # refusals near (the backend full), the admitted requests go on one per turn of the loop
    assert "turn" in events[events.index("a1"):events.index("a2")]
    assert gate.inside == 0


def test_the_routes_are_ready_before_the_first_request(brands_file, tiny_tokenizer, monkeypatch):
    """FastAPI builds its routes' matching state on the first request that walks them (~20 ms on
    the event loop, while the first burst waits): the service walks them once while it starts."""
    import fastapi.routing

    context = getattr(fastapi.routing, "_EffectiveRouteContext", None)
    if context is None:
        pytest.skip("this FastAPI builds its routes' state as they are added")
    built, original = [], context.from_api_route.__func__

    def counted(cls, **kwargs):
        built.append(kwargs["original_route"].path)
        return original(cls, **kwargs)

    monkeypatch.setattr(context, "from_api_route", classmethod(counted))
    c, _ = make_client(brands_file, tiny_tokenizer)
    with c:
        at_start = len(built)
        assert "/caption" in built
        c.get("/health")
        c.post("/caption", json={"brand": "CoffeeLab", "context": "ลดราคา", "dry_run": True})
        assert len(built) == at_start


def test_brands_are_indexed_in_the_background_after_start_and_after_a_reload(brands_file, tiny_tokenizer):
    """A brand's first-use work (index, token counts) is done before its first request needs it."""
    c, _ = make_client(brands_file, tiny_tokenizer)
    with c:
        wait_ready(c)
        service = c.app.state.service

        def all_warm():
            snapshot, count = service.store.snapshot, service.prompter.count_tokens
            return all(snapshot.retriever.is_warm(b, count) for b in snapshot.brands)

        deadline = time.time() + 10
        while not all_warm() and time.time() < deadline:
            time.sleep(0.05)
        assert all_warm()
        data = json.loads(brands_file.read_text(encoding="utf-8"))
        data["brands"][0]["description"] += " ใหม่"
        brands_file.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
        before = service.store.snapshot
        deadline = time.time() + 20
        while (service.store.snapshot is before or not all_warm()) and time.time() < deadline:
            time.sleep(0.05)
        assert service.store.snapshot is not before and all_warm()
