"""HTTP routes. Each one fetches the service from app.state, calls it, and returns JSON,
or server-sent events when the request asks for a stream."""

import asyncio
from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import JSONResponse
from sse_starlette import EventSourceResponse, ServerSentEvent

from app.auth import has_valid_key, require_api_key
from app.errors import APIError, error_body
from app.schemas import AdaptVoiceRequest, BriefRequest, CaptionRequest, CheckRequest, GenerateResponse
from app.service import DirectorService


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
        return await until_disconnect(request, service.generate(body, request_id))
    events = service.stream(body, request_id)  # raises before the first byte: a plain JSON error
    keepalive = request.app.state.settings.stream_keepalive_s
    # A comment line while the request waits or thinks, so proxies keep the connection open.
    return EventSourceResponse(events, ping=keepalive, ping_message_factory=lambda: ServerSentEvent(comment="keep-alive"))


def get_service(request: Request) -> DirectorService:
    return request.app.state.service


ServiceDep = Annotated[DirectorService, Depends(get_service)]

api = APIRouter(dependencies=[Depends(require_api_key)])
ops = APIRouter()


@api.post("/caption", response_model=GenerateResponse, response_model_exclude_unset=True)
async def caption(body: CaptionRequest, service: ServiceDep, request: Request):
    """A social caption for a brand and an occasion."""
    return await answer(request, service, body)


@api.post("/adapt-voice", response_model=GenerateResponse, response_model_exclude_unset=True)
async def adapt_voice(body: AdaptVoiceRequest, service: ServiceDep, request: Request):
    """A generic message rewritten in a brand's voice."""
    return await answer(request, service, body)


@api.post("/brief", response_model=GenerateResponse, response_model_exclude_unset=True)
async def brief(body: BriefRequest, service: ServiceDep, request: Request):
    """A campaign brief for a brand and its objectives."""
    return await answer(request, service, body)


@api.post("/check")
async def check(body: CheckRequest, service: ServiceDep):
    """The on-brand verdict for any copy: the brand guide as a linter."""
    return service.check(body)


@api.get("/brands")
async def list_brands(service: ServiceDep):
    """Every brand served now, with the version of brands.json."""
    return service.brands()


@api.get("/brands/{name}")
async def get_brand(name: str, service: ServiceDep):
    """One brand's full record, found by name or alias."""
    return service.brand(name)


@ops.api_route("/health", methods=["GET", "HEAD"])
async def health(request: Request):
    """Liveness: 200 whenever the process is up. With an API key set, the detail needs the key."""
    detail = request.app.state.health()
    if not has_valid_key(request):  # load balancers need no brand names, paths or errors
        return {"status": detail["status"], "ready": detail["ready"]}
    return detail


@ops.api_route("/ready", methods=["GET", "HEAD"])
async def ready(service: ServiceDep, request: Request):
    """200 once the model and the brands are loaded, 503 before."""
    if service.ready:
        return {"ready": True}
    reason = request.app.state.load_error or "the model is still loading"
    return JSONResponse(error_body("not_ready", reason), status_code=503, headers={"Retry-After": "5"})


@ops.get("/metrics")
async def metrics(request: Request):
    """Prometheus metrics; behind the API key when AI_DIRECTOR_METRICS_REQUIRE_KEY is set."""
    if request.app.state.settings.metrics_require_key:
        await require_api_key(request)
    m = request.app.state.metrics
    service = request.app.state.service
    m.queue_depth.set(service.backend.depth if service.backend else 0)
    m.brand_reload_error.set(1 if service.store.last_error else 0)  # the same state /health reports
    return Response(m.render(), media_type="text/plain; version=0.0.4; charset=utf-8")
