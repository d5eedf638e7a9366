"""HTTP routes. Each one fetches the service from app.state, calls it, and returns JSON."""

from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import JSONResponse

from app.auth import require_api_key
from app.schemas import AdaptVoiceRequest, BriefRequest, CaptionRequest, CheckRequest, GenerateResponse
from app.service import DirectorService


def get_service(request: Request) -> DirectorService:
    return request.app.state.service


ServiceDep = Annotated[DirectorService, Depends(get_service)]

api = APIRouter(dependencies=[Depends(require_api_key)])
ops = APIRouter()


@api.post("/caption", response_model=GenerateResponse, response_model_exclude_unset=True)
async def caption(body: CaptionRequest, service: ServiceDep, request: Request):
    """A social caption for a brand and an occasion."""
    return await service.generate(body, request.state.request_id)


@api.post("/adapt-voice", response_model=GenerateResponse, response_model_exclude_unset=True)
async def adapt_voice(body: AdaptVoiceRequest, service: ServiceDep, request: Request):
    """A generic message rewritten in a brand's voice."""
    return await service.generate(body, request.state.request_id)


@api.post("/brief", response_model=GenerateResponse, response_model_exclude_unset=True)
async def brief(body: BriefRequest, service: ServiceDep, request: Request):
    """A campaign brief for a brand and its objectives."""
    return await service.generate(body, request.state.request_id)


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


@ops.get("/health")
async def health(request: Request):
    """Liveness with detail: 200 whenever the process is up."""
    return request.app.state.health()


@ops.get("/ready")
async def ready(service: ServiceDep, request: Request):
    """200 once the model and the brands are loaded, 503 before."""
    if service.ready:
        return {"ready": True}
    from app.errors import error_body

    reason = request.app.state.load_error or "the model is still loading"
    return JSONResponse(error_body("not_ready", reason), status_code=503, headers={"Retry-After": "5"})


@ops.get("/metrics")
async def metrics(request: Request):
    """Prometheus metrics."""
    m = request.app.state.metrics
    m.queue_depth.set(request.app.state.service.worker.depth if request.app.state.service.worker else 0)
    return Response(m.render(), media_type="text/plain; version=0.0.4; charset=utf-8")
