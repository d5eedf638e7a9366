"""The API document tells the truth: fuzzed requests and the real answers of every route,
errors included, conform to /openapi.json, and the docs pages work without internet."""

import json
import re
import threading
import unicodedata
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import FailureGroup
from schemathesis.specs.openapi.checks import (
    content_type_conformance, negative_data_rejection, positive_data_acceptance, response_headers_conformance,
    response_schema_conformance, status_code_conformance,
)

from app.main import create_app
from app.settings import Settings
from conftest import REPO
from fakes import FakeEngine
from test_server import poll, serving_in_thread, write_atomically


# A response conforms: a documented status, content type, headers and body.
CONFORMS = [status_code_conformance, content_type_conformance, response_headers_conformance,
            response_schema_conformance]
# A fuzzed request also gets no 5xx, and the answer its validity calls for: 2xx (or 404) for a valid
# one, 4xx for an invalid one.
FUZZ_CHECKS = [*CONFORMS, not_a_server_error, positive_data_acceptance, negative_data_rejection]

BRANDS = json.loads((REPO / "brands" / "brands.json").read_text(encoding="utf-8"))["brands"]
NAMES = [label for b in BRANDS for label in (b["name"], *b["aliases"])]  # Thai and Latin spellings
FUZZ_CASES = 45  # per operation and mode: 7 operations with inputs x 2 modes x 45, + 5 without inputs = 635
THAI = re.compile("[\u0e00-\u0e7f]")
KEY = "s3cret"


def app_with(brands_file, tokenizer, engine=None, engine_factory=None, **overrides):
    settings = Settings(brands_path=brands_file, base_model=tokenizer.name_or_path, _env_file=None, **overrides)
    engine = engine or FakeEngine(tokenizer)
    return create_app(settings, engine_factory=engine_factory or (lambda s: engine))


class Server:
    """A real uvicorn serving one app, with the API document as schemathesis reads it."""

    def __init__(self, client: httpx.Client, app, engine: FakeEngine):
        self.client, self.app, self.engine = client, app, engine
        self.document = schemathesis.openapi.from_url(str(client.base_url.join("/openapi.json")))

    def conforms(self, path: str, response: httpx.Response) -> httpx.Response:
        """Validate one real answer against the document's `path` and the request's method."""
        operation = self.document[path][response.request.method]
        operation.Case().validate_response(response, checks=CONFORMS)
        return response


class GatedEngine(FakeEngine):
    """Holds every batch until `release` is set; `entered` tells that one is in the model."""

    def __init__(self, tokenizer):
        super().__init__(tokenizer)
        self.entered = threading.Event()
        self.release.clear()

    def generate(self, requests, listeners=None):
        self.entered.set()
        return super().generate(requests, listeners)


@pytest.fixture(scope="module")
def served(tiny_tokenizer, tmp_path_factory):
    brands_file = tmp_path_factory.mktemp("contract-brands") / "brands.json"
    brands_file.write_bytes((REPO / "brands" / "brands.json").read_bytes())
    engine = FakeEngine(tiny_tokenizer)
    app = app_with(brands_file, tiny_tokenizer, engine)
    with serving_in_thread(app) as (client, _):
        yield Server(client, app, engine)


def with_real_brands(schema):
    """Positive cases name a real brand (Thai or Latin), in the body or the path, so that they reach
    generation instead of a 404; negative cases keep their generated brand, which mostly is a 404."""

    def named(case, name):
        if isinstance(case.body, dict):
            case.body = {**case.body, "brand": name}
        else:
            case.path_parameters = {**case.path_parameters, "name": name}
        return case

    @schema.hook
    def flatmap_case(context, case):
        names_a_brand = isinstance(case.body, dict) and "brand" in case.body or "name" in (case.path_parameters or {})
        if not names_a_brand or case.meta is None or not case.meta.generation.mode.is_positive:
            return st.just(case)
        return st.sampled_from(NAMES).map(lambda name: named(case, name))

    return schema


def test_fuzzed_requests_get_documented_answers_and_no_5xx(served):
    schema = with_real_brands(schemathesis.openapi.from_url(str(served.client.base_url.join("/openapi.json"))))
    sent, statuses = Counter(), Counter()
    for result in schema.get_all_operations():
        operation = result.ok()
        inputs = [*operation.body, *operation.path_parameters, *operation.query, *operation.headers]
        # A negative case needs an input to spoil: /health, /ready and /metrics take none.
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE) if inputs else (GenerationMode.POSITIVE,):

            @settings(max_examples=FUZZ_CASES, deadline=None, database=None, suppress_health_check=list(HealthCheck))
            @given(case=operation.as_strategy(generation_mode=mode))
            def fuzz(case):
                response = case.call_and_validate(checks=FUZZ_CHECKS, timeout=30)
                sent[operation.label] += 1
                statuses[response.status_code] += 1

            fuzz()
    assert sum(sent.values()) >= 500 and len(sent) == 14, sent
    assert statuses[200] >= 250, statuses  # most of them reached generation, not a refusal


def test_every_documented_example_is_thai_and_answered(served):
    doc = served.client.get("/openapi.json").json()
    names = {b["name"] for b in BRANDS}
    posted = 0
    for path, operations in doc["paths"].items():
        for operation in operations.values():
            if "requestBody" not in operation:
                continue
            ref = operation["requestBody"]["content"]["application/json"]["schema"]["$ref"]
            [example] = doc["components"]["schemas"][ref.rsplit("/", 1)[1]]["examples"]
            bodies = example.get("items", [example])  # a batch's example is a list of requests
            assert all(b["brand"] in names for b in bodies) and THAI.search(json.dumps(example, ensure_ascii=False))
            response = served.conforms(path, served.client.post(path, json=example))
            assert response.status_code == 200, response.text
            assert all("error" not in r for r in response.json().get("results", [])), response.text
            posted += 1
    assert posted == 5


def test_the_document_and_the_server_agree_on_what_is_valid(served):
    """Boundary bodies: the server refuses (422) exactly those the document calls invalid."""
    ok = {"brand": "CoffeeLab", "context": "กาแฟ"}
    bodies = {
        "/caption": [
            ok, {**ok, "context": "  ๑๒๓  "}, {**ok, "brand": "คอฟฟี่แล็บ"}, {**ok, "context": "ลาเต้ 🥥"},
            {**ok, "context": "🎮🎮🎮"}, {**ok, "context": "   "}, {**ok, "context": ""}, {**ok, "context": "!!! ???"},
            {**ok, "context": "x" * 2001}, {**ok, "brand": "🎮"}, {**ok, "tone": "ก" * 201},
            {**ok, "stream": True, "attempts": 2}, {**ok, "stream": True, "attempts": 1}, {**ok, "attempts": 4},
            {**ok, "attempts": 5}, {**ok, "temperature": 2.5}, {**ok, "top_p": 0}, {**ok, "contxt": "typo"},
            {"brand": "CoffeeLab"},
        ],
        "/brief": [
            {"brand": "ครัวคุณยาย", "objectives": "ยอดขาย"}, {"brand": "ครัวคุณยาย", "objectives": ["ยอดขาย"] * 10},
            {"brand": "ครัวคุณยาย", "objectives": ["ยอดขาย"] * 11}, {"brand": "ครัวคุณยาย", "objectives": []},
            {"brand": "ครัวคุณยาย", "objectives": ["🎉"]}, {"brand": "ครัวคุณยาย", "objectives": ["ก" * 301]},
            {"brand": "ครัวคุณยาย", "objectives": "🎉"},
        ],
        "/check": [
            {"brand": "CoffeeLab", "text": ""}, {"brand": "CoffeeLab", "text": "🎮"},
            {"brand": "CoffeeLab", "text": "x" * 70_001}, {"brand": "", "text": "กาแฟ"},
        ],
    }
    for path, cases in bodies.items():
        body_schema = served.document[path]["POST"].body[0]
        for body in cases:
            response = served.conforms(path, served.client.post(path, json=body))
            assert (response.status_code != 422) == body_schema.is_valid(body), (path, body, response.text)


def test_the_letter_or_digit_rule_reads_as_the_server_does_in_every_script(served):
    """Every assigned character: the document's rule, as schemathesis reads it, is `str.isalnum`."""
    body_schema = served.document["/caption"]["POST"].body[0]
    wrong = [
        hex(cp) for cp in range(0x30000)  # up to the CJK extensions; surrogates cannot be sent
        if not 0xD800 <= cp < 0xE000 and unicodedata.category(chr(cp)) != "Cn"
        and body_schema.is_valid({"brand": "CoffeeLab", "context": chr(cp)}) != chr(cp).isalnum()
    ]
    assert wrong == []
    assert body_schema.is_valid({"brand": "CoffeeLab", "context": "ก"}) and body_schema.is_valid(
        {"brand": "CoffeeLab", "context": "\u0e51"}  # a Thai digit
    )


def test_answers_and_errors_of_a_served_app_conform(served):
    c = served.client
    caption = {"brand": "CoffeeLab", "context": "เปิดตัวเมนูใหม่"}
    many = served.conforms("/caption", c.post("/caption", json={**caption, "attempts": 3, "platform": "x"}))
    assert len(many.json()["candidates"]) == 3 and many.json()["checks"]["platform"]["name"] == "x"
    dry = served.conforms("/adapt-voice", c.post("/adapt-voice", json={"brand": "GlowLab", "message": "ลดราคา",
                                                                       "dry_run": True}))
    assert dry.json()["prompt"] and "checks" not in dry.json()
    stream = served.conforms("/brief", c.post("/brief", json={"brand": "ครัวคุณยาย", "objectives": ["ยอดขาย"],
                                                              "stream": True}))
    assert stream.headers["content-type"].startswith("text/event-stream") and "event: done" in stream.text
    served.conforms("/check", c.post("/check", json={"brand": "คอฟฟี่แล็บ", "text": "☕ #CoffeeLab TechZone"}))
    assert served.conforms("/brands", c.get("/brands")).json()["count"] == len(BRANDS)
    served.conforms("/brands/{name}", c.get("/brands/ครัวคุณยาย"))
    for path in ("/health", "/ready"):
        served.conforms(path, c.get(path))
        served.conforms(path, c.head(path))
    assert served.conforms("/metrics", c.get("/metrics")).text.startswith("# HELP")

    # 404 for an unknown brand, in the body or the path.
    for path, response in [("/caption", c.post("/caption", json={**caption, "brand": "ร้านที่ไม่มีจริง"})),
                           ("/check", c.post("/check", json={"brand": "Nope Brand", "text": "กาแฟ"})),
                           ("/brands/{name}", c.get("/brands/Nope Brand"))]:
        assert served.conforms(path, response).status_code == 404
        assert response.json()["error"]["code"] == "brand_not_found"
    # 422 in the one error shape, not FastAPI's {"detail": [...]}.
    invalid = served.conforms("/caption", c.post("/caption", json={**caption, "context": "🎮🎮"}))
    assert invalid.status_code == 422 and invalid.json()["error"]["errors"][0]["param"] == "context"
    # 400: a body that is not UTF-8.
    undecodable = c.post("/caption", content=b'{"brand": "\xff\xfe"}', headers={"content-type": "application/json"})
    assert served.conforms("/caption", undecodable).status_code == 400
    # 500 from the model, as JSON and as an `error` event of a stream that had started.
    served.engine.fail_on = "ล้มเหลวโดยตั้งใจ"
    try:
        failed = {**caption, "context": "ล้มเหลวโดยตั้งใจ"}
        assert served.conforms("/caption", c.post("/caption", json=failed)).status_code == 500
        failed_stream = served.conforms("/caption", c.post("/caption", json={**failed, "stream": True}))
        assert failed_stream.status_code == 200 and "event: error" in failed_stream.text
    finally:
        served.engine.fail_on = None


def test_the_document_rejects_the_shapes_it_used_to_promise(served):
    """The validation bites: FastAPI's own 422 body and an untyped `checks` no longer pass."""

    def answer(status: int, body: dict) -> httpx.Response:
        request = httpx.Request("POST", served.client.base_url.join("/caption"))
        response = httpx.Response(status, json=body, request=request)
        response.elapsed = timedelta(0)
        return response

    fastapi_422 = {"detail": [{"loc": ["body", "context"], "msg": "Field required", "type": "missing"}]}
    with pytest.raises(FailureGroup, match="Response violates schema"):
        served.conforms("/caption", answer(422, fastapi_422))
    good = served.client.post("/caption", json={"brand": "CoffeeLab", "context": "กาแฟ"}).json()
    with pytest.raises(FailureGroup, match="Response violates schema"):
        served.conforms("/caption", answer(200, {**good, "checks": {"anything": True}}))


def test_api_key_errors_body_limit_and_health_detail_conform(brands_file, tiny_tokenizer):
    app = app_with(brands_file, tiny_tokenizer, api_key=KEY, metrics_require_key=True, max_body_bytes=1024)
    with serving_in_thread(app) as (client, _):
        served = Server(client, app, None)
        for path, response in [("/caption", client.post("/caption", json={"brand": "CoffeeLab", "context": "กาแฟ"})),
                               ("/brands", client.get("/brands")), ("/metrics", client.get("/metrics"))]:
            assert served.conforms(path, response).status_code == 401
            assert response.headers["www-authenticate"] == "Bearer"
        assert served.conforms("/health", client.get("/health")).json() == {"status": "ok", "ready": True}
        detail = served.conforms("/health", client.get("/health", headers={"Authorization": f"Bearer {KEY}"}))
        assert detail.json()["brands"]["count"] == len(BRANDS)
        answered = client.post("/caption", json={"brand": "CoffeeLab", "context": "กาแฟ"}, headers={"X-API-Key": KEY})
        assert served.conforms("/caption", answered).status_code == 200
        # 413: a body over AI_DIRECTOR_MAX_BODY_BYTES (small, so that it is all sent before the answer).
        huge = client.post("/check", json={"brand": "CoffeeLab", "text": "ก" * 700}, headers={"X-API-Key": KEY})
        assert served.conforms("/check", huge).status_code == 413


def test_not_ready_is_a_documented_503(brands_file, tiny_tokenizer):
    gate = threading.Event()
    engine = FakeEngine(tiny_tokenizer)
    app = app_with(brands_file, tiny_tokenizer, engine_factory=lambda s: gate.wait(30) and engine)
    with serving_in_thread(app, wait_ready=False) as (client, _):
        served = Server(client, app, engine)
        try:
            for path, response in [
                ("/ready", client.get("/ready")), ("/ready", client.head("/ready")),
                ("/caption", client.post("/caption", json={"brand": "CoffeeLab", "context": "กาแฟ"})),
            ]:
                assert served.conforms(path, response).status_code == 503 and int(response.headers["retry-after"]) >= 1
            assert served.conforms("/health", client.get("/health")).json()["ready"] is False
        finally:
            gate.set()


def test_a_full_queue_is_a_documented_429(brands_file, tiny_tokenizer):
    engine = GatedEngine(tiny_tokenizer)  # the first request stays in the model, the second waits behind it
    app = app_with(brands_file, tiny_tokenizer, engine, max_queue=1, max_batch_size=1, batch_timeout_ms=0)
    body = {"brand": "CoffeeLab", "context": "กาแฟ"}
    with serving_in_thread(app) as (client, _), ThreadPoolExecutor(2) as pool:
        served = Server(client, app, engine)
        first = pool.submit(client.post, "/caption", json=body)
        poll(engine.entered.is_set, 30)
        second = pool.submit(client.post, "/caption", json=body)
        poll(lambda: app.state.service.backend.depth == 1, 30)
        refused = served.conforms("/caption", client.post("/caption", json=body))
        engine.release.set()
        assert refused.status_code == 429 and refused.json()["error"]["code"] == "queue_full"
        assert [served.conforms("/caption", f.result()).status_code for f in (first, second)] == [200, 200]


def test_a_request_timeout_is_a_documented_504(brands_file, tiny_tokenizer):
    engine = GatedEngine(tiny_tokenizer)
    app = app_with(brands_file, tiny_tokenizer, engine, request_timeout_s=0.5)
    with serving_in_thread(app) as (client, _):
        served = Server(client, app, engine)
        try:
            late = served.conforms("/caption", client.post("/caption", json={"brand": "CoffeeLab", "context": "กาแฟ"}))
        finally:
            engine.release.set()
        assert late.status_code == 504 and late.json()["error"]["code"] == "timeout"


def test_health_is_degraded_while_a_reload_fails_with_iso_times(brands_file, tiny_tokenizer):
    app = app_with(brands_file, tiny_tokenizer)
    with serving_in_thread(app) as (client, _):
        served = Server(client, app, None)
        good = brands_file.read_bytes()
        write_atomically(brands_file, b"{ not json")
        health, _ = poll(lambda: (h := client.get("/health").json())["status"] == "degraded" and h, 30)
        served.conforms("/health", client.get("/health"))
        failed_at = datetime.fromisoformat(health["brands"]["last_reload_error"]["at"])
        started_at = datetime.fromisoformat(health["started_at"])
        assert failed_at.utcoffset() == timedelta(0) and started_at.utcoffset() == timedelta(0)
        assert started_at <= failed_at and isinstance(health["uptime_s"], float)
        assert health["brands"]["last_reload_error"]["at"].endswith("Z")
        write_atomically(brands_file, good)
        poll(lambda: client.get("/health").json()["status"] == "ok", 30)


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_docs_pages_need_no_internet(served, page):
    html = served.client.get(page).text
    assert not re.findall(r"https?://", html), "the page must load nothing from another host"
    assets = re.findall(r"""(?:src|href)="([^"]+)"|url: '([^']+)'|spec-url="([^"]+)\"""", html)
    assets = [next(filter(None, groups)) for groups in assets]
    assert "/openapi.json" in assets and len(assets) >= 3, assets
    for asset in assets:
        response = served.client.get(asset)
        assert response.status_code == 200 and len(response.content) > 50, asset


def test_the_authorize_button_has_both_key_schemes(served):
    doc = served.client.get("/openapi.json").json()
    schemes = doc["components"]["securitySchemes"]
    assert schemes["Bearer"] == {**schemes["Bearer"], "type": "http", "scheme": "bearer"}
    assert schemes["ApiKey"] == {**schemes["ApiKey"], "type": "apiKey", "in": "header", "name": "X-API-Key"}
    assert doc["paths"]["/caption"]["post"]["security"] == [{"Bearer": []}, {"ApiKey": []}]
    assert {} in doc["paths"]["/health"]["get"]["security"]  # open, with more detail given the key


def test_the_document_is_valid_openapi_3_1(served):
    from schemathesis.specs.openapi.definitions import OPENAPI_31_VALIDATOR  # the meta-schema schemathesis ships

    doc = served.client.get("/openapi.json").json()
    assert doc["openapi"].startswith("3.1") and [e.message for e in OPENAPI_31_VALIDATOR.iter_errors(doc)] == []
    operation_ids = [op["operationId"] for ops in doc["paths"].values() for op in ops.values()]
    assert len(set(operation_ids)) == len(operation_ids) == 14
    for ops in doc["paths"].values():
        for op in ops.values():
            for status, response in op["responses"].items():
                if status != "200":  # every error in the one shape, none in FastAPI's
                    assert response["content"]["application/json"]["schema"] == {
                        "$ref": "#/components/schemas/ErrorResponse"}, (op["operationId"], status)
    assert "HTTPValidationError" not in doc["components"]["schemas"]
    assert set(doc["paths"]["/metrics"]["get"]["responses"]["200"]["content"]) == {"text/plain"}
