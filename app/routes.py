"""HTTP routes. Each one fetches the service from app.state, calls it, and returns JSON,
or server-sent events when the request asks for a stream."""

import asyncio
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Path, Query, Request, Response
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from sse_starlette import EventSourceResponse, ServerSentEvent

from app.auth import KEY_SECURITY, has_valid_key, optional_api_key, require_api_key
from app.batch import BatchResponse, negotiate, table, to_csv, to_jsonl
from app.errors import APIError, error_body, error_responses
from app.health import Health, adapters_out
from app.batch_request import BatchRequest
from app.schemas import (
    AdaptersResponse, BrandResponse, BrandsResponse, CheckRequest,
    CheckResponse, GenerateResponse, ReadyResponse,
)
from app.service import DirectorService
from app.tasks import TASKS, Task


DISCONNECT_POLL_S = 0.1  # how often a waiting request checks that its client is still there


async def until_disconnect(request: Request, work):
    """Await `work`, but cancel it when the client goes away: a request nobody will read
    must not hold a place in the queue (vLLM aborts such requests too)."""
    task = asyncio.ensure_future(work)
    try:
        while True:
            done, _ = await asyncio.wait({task}, timeout=DISCONNECT_POLL_S)
            if done:
                return task.result()
            if await request.is_disconnected():
                request.app.state.metrics.cancelled.inc()
                raise APIError(499, "client_closed", "the client closed the connection; the request was cancelled")
    finally:
        task.cancel()


async def answer(request: Request, service: DirectorService, body):
    """JSON, or with `stream: true` an event stream: `delta` events, then `done` with the JSON body."""
    request_id = request.state.request_id
    if not body.stream:
        if body.dry_run:  # no model, no waiting: nothing to cancel
            return await service.generate(body, request_id)
        return await until_disconnect(request, service.generate(body, request_id))
    events = await service.stream(body, request_id)  # raises before the first byte: a plain JSON error
    keepalive = request.app.state.settings.stream_keepalive_s
    # A comment line while the request waits or thinks, so proxies keep the connection open.
    return EventSourceResponse(events, ping=keepalive, ping_message_factory=lambda: ServerSentEvent(comment="keep-alive"))


async def get_service(request: Request) -> DirectorService:
    # async: FastAPI runs a plain `def` dependency in a worker thread, a hop per request.
    return request.app.state.service


ServiceDep = Annotated[DirectorService, Depends(get_service)]
BrandName = Annotated[str, Path(description="A brand's name or alias, Thai or Latin.", examples=["คอฟฟี่แล็บ"])]


def operation_id(route: APIRoute) -> str:
    """Short operation ids for generated clients: `caption`, `health`, `health_head`."""
    method = next(iter(route.methods)).lower()
    return route.name if method in ("get", "post") else f"{route.name}_{method}"


api = APIRouter(dependencies=[Depends(require_api_key)], generate_unique_id_function=operation_id)
ops = APIRouter(generate_unique_id_function=operation_id)

# What each route can answer besides 200 (errors.py says when each happens): 401 only where
# the server has an API key; 431 (`python -m app` caps request heads) and 500 on any request.
GENERATION_ERRORS = error_responses(400, 401, 404, 408, 413, 422, 429, 431, 500, 503, 504)
CHECK_ERRORS = error_responses(400, 401, 404, 408, 413, 422, 431, 500, 503)


def _event(name: str, data: dict) -> dict:
    """One server-sent event as Open API 3.1 tools read an event stream's schema: per event."""
    return {"type": "object", "required": ["event", "data"], "properties": {
        "event": {"const": name},
        "data": {"type": "string", "contentMediaType": "application/json", "contentSchema": data},
    }}


EVENT_STREAM = {
    "schema": {
        "description": "With `stream: true`: `delta` events as the copy is written, then one `done` event with "
                       "the JSON body, or one `error` event in the error shape. Comment lines keep the connection "
                       "open while the request waits.",
        "oneOf": [
            _event("delta", {"type": "object", "required": ["text"], "properties": {"text": {"type": "string"}}}),
            _event("done", {"$ref": "#/components/schemas/GenerateResponse"}),
            _event("error", {"$ref": "#/components/schemas/ErrorResponse"}),
        ],
    },
    "example": 'event: delta\ndata: {"text": "☕ Cold Brew"}\n\nevent: done\ndata: {"brand": "CoffeeLab", ...}\n\n',
}
GENERATED = {200: {"description": "The copy, as JSON, or as server-sent events with `stream: true`.",
                   "content": {"text/event-stream": EVENT_STREAM}}} | GENERATION_ERRORS


def generation_routes() -> APIRouter:
    """One POST route per task (app/tasks.py), as the registry is when the app is built. The key
    of a POST is checked before its body is read (app/limits.py), so these routes, the hottest,
    only declare it: a dependency would have FastAPI solve three more per request (the check and
    its two header schemes), about a tenth of a dry run's cost."""
    router = APIRouter(generate_unique_id_function=operation_id)
    for task in TASKS.values():
        router.add_api_route(task.route, _endpoint(task), methods=["POST"], name=task.name, response_model=GenerateResponse,
                             response_model_exclude_unset=True, responses=GENERATED, openapi_extra={"security": KEY_SECURITY})
    return router


def _endpoint(task: Task):
    async def endpoint(body: task.request, request: Request):
        return await answer(request, request.app.state.service, body)

    endpoint.__doc__ = task.summary
    return endpoint


# 404, 504 and the like are an item's own result; the batch as a whole fails only when it is
# invalid (422), the queue has no room for it (429), or the server is not ready (503).
BATCH_ERRORS = error_responses(400, 401, 408, 413, 422, 429, 431, 500, 503)
_JSONL = {"schema": {"type": "string", "description": "One result object per line, as in `results`."},
          "example": '{"index": 0, "task": "caption", "brand": "CoffeeLab", "text": "☕ Cold Brew ...", ...}\n'
                     '{"index": 1, "task": "caption", "status": 404, "error": {"code": "brand_not_found", ...}}\n'}
EXPORTED = {200: {
    "description": "The results in the items' order: JSON by default; CSV or JSON lines with `format`, or the "
                   "Accept header (the parameter wins).",
    "content": {
        "text/csv": {
            "schema": {"type": "string", "description": "UTF-8 with a BOM, one row per item: index, task, brand, "
                       "platform, input, text, on_brand, score, reasons, finish_reason, error_code, error_message."},
            "example": "\ufeffindex,task,brand,platform,input,text,on_brand,score,reasons,finish_reason,error_code,"
                       "error_message\r\n"
                       "0,caption,CoffeeLab,instagram,เปิดตัวเมนูใหม่,☕ Cold Brew ...,true,1.0,,stop,,\r\n",
        },
        "application/x-ndjson": _JSONL,
        "application/jsonl": _JSONL,
    },
}} | BATCH_ERRORS
ExportFormat = Annotated[Literal["json", "csv", "jsonl"] | None, Query(
    alias="format", description="json (default), csv (UTF-8 with a BOM, for Excel) or jsonl; wins over Accept.")]


@api.post("/batch", response_model=BatchResponse, responses=EXPORTED)
async def batch(body: BatchRequest, service: ServiceDep, request: Request, export: ExportFormat = None):
    """Many captions, rewrites and briefs in one request, e.g. a month's content calendar."""
    kind, media_type = negotiate(export, request.headers.get("accept"))
    results = await until_disconnect(request, service.batch(body.items, request.state.request_id))
    if kind == "json":  # as built, each result already validated: `index` and `task` first, as in JSON lines
        return JSONResponse({"results": results})
    if kind == "csv":
        return Response(to_csv(table([item.model_dump() for item in body.items], results)), media_type=media_type)
    return Response(to_jsonl(results), media_type=media_type)


@api.post("/check", response_model=CheckResponse, responses=CHECK_ERRORS)
async def check(body: CheckRequest, service: ServiceDep):
    """The on-brand verdict for any copy: the brand guide as a linter."""
    return service.check(body)


@api.get("/brands", response_model=BrandsResponse, responses=error_responses(401, 431, 500, 503))
async def list_brands(service: ServiceDep):
    """Every brand served now, with the version of brands.json."""
    return service.brands()


# 422 never happens here (any name is a valid path), but FastAPI documents its own 422 shape otherwise.
@api.get("/brands/{name}", response_model=BrandResponse, responses=error_responses(401, 404, 422, 431, 500, 503))
async def get_brand(name: BrandName, service: ServiceDep):
    """One brand's full record, found by name or alias."""
    return service.brand(name)


@api.get("/adapters", response_model=AdaptersResponse, responses=error_responses(401, 431, 500))
async def adapters(request: Request, service: ServiceDep):
    """The adapters served, by the name a request's `adapter` field gives, with their versions."""
    return AdaptersResponse(base=request.app.state.settings.base_model,
                            adapters=adapters_out(request.app.state.adapters, service.backend))


AdapterName = Annotated[str | None, Query(description="Reload this adapter only; default: every one.")]


@api.post("/admin/adapters/reload", response_model=AdaptersResponse,
          responses=error_responses(401, 404, 422, 431, 500, 503))
async def reload_adapters(request: Request, service: ServiceDep, name: AdapterName = None):
    """Serve what is on disk now, where file events do not arrive (some network mounts); the watcher
    does the same on its own. 422 when a folder cannot be served: the version before keeps serving."""
    rollout = request.app.state.adapters
    if name is not None and name not in rollout.states:
        raise APIError(404, "adapter_not_found", f"no adapter folder is named {name!r}; this server watches: "
                       f"{', '.join(rollout.states) or 'none'} (GET /adapters)", param="name", adapters=list(rollout.states))
    if service.backend is None:
        raise APIError(503, "not_ready", "the model is still loading; it reads the adapter folders as it starts",
                       headers={"Retry-After": "10"})
    states = await rollout.reload([name] if name else None)
    failed = [s for s in states if s.error]
    if failed:
        raise APIError(422, "adapter_invalid", "; ".join(f"{s.name}: {s.error.message}" for s in failed))
    return AdaptersResponse(base=request.app.state.settings.base_model, adapters=adapters_out(rollout, service.backend))


# The key is optional here: without it (when one is set) /health answers status and ready only.
OPTIONAL_KEY = {"dependencies": [Depends(optional_api_key)], "openapi_extra": {"security": [{}]}}
HEALTH = {"response_model": Health, "response_model_exclude_unset": True, "responses": error_responses(431, 500)}


@ops.get("/health", **HEALTH, **OPTIONAL_KEY)
@ops.head("/health", **HEALTH, **OPTIONAL_KEY)
async def health(request: Request):
    """Liveness: 200 whenever the process is up. With an API key set, the detail needs the key."""
    detail: Health = request.app.state.health()
    if not has_valid_key(request):  # load balancers need no brand names, paths or errors
        return Health(status=detail.status, ready=detail.ready)
    return detail


@ops.get("/ready", response_model=ReadyResponse, responses=error_responses(431, 500, 503))
@ops.head("/ready", response_model=ReadyResponse, responses=error_responses(431, 500, 503))
async def ready(service: ServiceDep, request: Request):
    """200 once the model and the brands are loaded, 503 before."""
    if service.ready:
        return {"ready": True}
    reason = request.app.state.load_error or (service.backend and service.backend.last_error) or "the model is still loading"
    return JSONResponse(error_body("not_ready", reason), status_code=503, headers={"Retry-After": "5"})


# response_class=Response: a class with a media type would file the error bodies under text/plain too.
PROMETHEUS_TEXT = {200: {"description": "The Prometheus text exposition format, version 0.0.4.",
                         "content": {"text/plain": {"schema": {"type": "string"}}}}}


@ops.get("/metrics", response_class=Response, responses=PROMETHEUS_TEXT | error_responses(401, 431, 500),
         **OPTIONAL_KEY)
async def metrics(request: Request):
    """Prometheus metrics; behind the API key when AI_DIRECTOR_METRICS_REQUIRE_KEY is set."""
    if request.app.state.settings.metrics_require_key:
        await require_api_key(request)
    m = request.app.state.metrics
    service = request.app.state.service
    m.queue_depth.set(service.backend.depth if service.backend else 0)
    m.brand_reload_error.set(1 if service.store.last_error else 0)  # the same state /health reports
    return Response(m.render(), media_type="text/plain; version=0.0.4; charset=utf-8")
