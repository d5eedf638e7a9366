"""What /health reports: liveness for a load balancer, and the detail behind the API key."""

import time
from datetime import UTC, datetime
from typing import Literal

from fastapi import FastAPI
from pydantic import BaseModel, Field

from app.adapter_rollout import AdapterRollout
from app.schemas import AdapterFailure, AdapterOut
from app.vllm_backend import VLLMBackend


def utc(timestamp: float) -> datetime:
    """A time.time() value as an aware UTC datetime: it serializes as ISO 8601 with a `Z`."""
    return datetime.fromtimestamp(timestamp, tz=UTC)


class ModelHealth(BaseModel):
    loaded: bool
    base: str
    adapter: str | None = Field(description="The default adapter's folder (AI_DIRECTOR_ADAPTER_PATH).")
    adapters: list[AdapterOut] = Field(description="Every adapter served, the default first, as GET /adapters lists them.")
    device: str | None = Field(description="Set once the model is loaded.")
    quantization: str | None
    load_error: str | None = Field(description="Why the model failed to load; the process then stops.")


class ReloadFailure(BaseModel):
    message: str
    at: datetime = Field(description="When the reload failed, ISO 8601 UTC.")


class BrandsHealth(BaseModel):
    count: int
    version: str | None = Field(description="The brands.json version served: 12 hex digits of its sha256.")
    path: str
    loaded_at: datetime | None = Field(description="When the served version was loaded, ISO 8601 UTC.")
    last_reload_error: ReloadFailure | None = Field(
        description="Set while the file on disk is invalid; the last good version is still served."
    )


class VLLMHealth(BaseModel):
    url: str = Field(description="vLLM's base URL (AI_DIRECTOR_VLLM_URL).")
    model: str | None = Field(description="The served model name called; set once vLLM has answered.")
    serving: bool = Field(description="vLLM answered the latest probe of /v1/models (every 2 s) and lists `model`.")
    last_error: str | None = Field(description="Why vLLM is unavailable, while it is.")
    in_flight: int = Field(ge=0, description="Requests sent to vLLM and not yet answered.")


class Health(BaseModel):
    """Without the API key (when one is set) only `status` and `ready` are sent."""

    status: Literal["ok", "degraded"] = Field(
        description="`degraded` while the last reload of brands.json or of an adapter failed."
    )
    ready: bool = Field(description="Whether generation requests are served now (see /ready).")
    uptime_s: float | None = Field(None, ge=0, description="Seconds since the process started.")
    started_at: datetime | None = Field(None, description="When the process started, ISO 8601 UTC.")
    model: ModelHealth | None = None
    brands: BrandsHealth | None = None
    queue_depth: int | None = Field(None, ge=0, description="Requests waiting for the model.")
    vllm: VLLMHealth | None = Field(None, description="With AI_DIRECTOR_ENGINE=vllm only.")


def adapters_out(rollout: AdapterRollout, backend) -> list[AdapterOut]:
    """Each adapter a request can name, with the reason its folder on disk is not served, while
    it is not: the configured ones, then any other the backend serves (vLLM's own modules)."""
    listed = [
        AdapterOut(
            name=state.name, path=str(state.path),
            version=state.served.version if state.served else None,
            loaded_at=utc(state.served.loaded_at) if state.served else None,
            last_reload_error=AdapterFailure(message=state.error.message, at=utc(state.error.at)) if state.error else None,
        )
        for state in rollout.states.values()
    ]
    others = {} if backend is None else {n: v for n, v in backend.adapters().items() if n not in rollout.states}
    return listed + [AdapterOut(name=name, path=v.path, version=v.version, loaded_at=utc(v.loaded_at),
                                last_reload_error=None) for name, v in others.items()]


def health_report(app: FastAPI) -> Health:
    """The full report; the route leaves the detail out for a caller without the key."""
    service = getattr(app.state, "service", None)
    settings = app.state.settings
    store = service.store if service else None
    snapshot = store.snapshot if store else None
    error = store.last_error if store else None
    backend = service.backend if service else None
    rollout = getattr(app.state, "adapters", None)
    return Health(
        status="degraded" if error or (rollout and rollout.failing) else "ok",
        ready=bool(service and service.ready),
        uptime_s=round(time.time() - app.state.started, 1),
        started_at=utc(app.state.started),
        model=ModelHealth(
            loaded=backend is not None,
            base=settings.base_model,
            adapter=str(settings.adapter_path) if settings.adapter_path else None,
            adapters=adapters_out(rollout, backend) if rollout else [],
            device=backend.info.device if backend else None,
            quantization=backend.info.quantization if backend else None,
            load_error=app.state.load_error,
        ),
        brands=BrandsHealth(
            count=len(snapshot.brands) if snapshot else 0,
            version=snapshot.version if snapshot else None,
            path=str(settings.brands_path),
            loaded_at=utc(snapshot.loaded_at) if snapshot else None,
            last_reload_error=ReloadFailure(message=error.message, at=utc(error.at)) if error else None,
        ),
        queue_depth=backend.depth if backend else 0,
        # A keyword only in vLLM mode, so that the route's exclude_unset leaves it out otherwise.
        **({"vllm": VLLMHealth(**backend.health())} if isinstance(backend, VLLMBackend) else {}),
    )
