"""The FastAPI application: lifespan (brands, model, worker, watcher), middleware, routes."""

import asyncio
import logging
import time
import uuid
from collections.abc import Callable
from contextlib import asynccontextmanager

from fastapi import FastAPI

from app import thai
from app.adapter_rollout import AdapterRollout
from app.adapters import check_all
from app.admission import QueueGate
from app.backend import LocalBackend
from app.brand_store import BrandStore
from app.docs import install_docs
from app.drain import Drain, DrainMiddleware
from app.engine import Engine, HFEngine
from app.errors import install_error_handlers
from app.health import health_report
from app.limits import RequestLimits
from app.metrics import Metrics
from app.prompter import Prompter
from app.routes import api, generation_routes, ops
from app.service import DirectorService
from app.settings import Settings, get_settings
from app.studio import install_studio
from app.vllm_backend import VLLMBackend

log = logging.getLogger("app")


def create_app(settings: Settings | None = None, engine_factory: Callable[[Settings], Engine] | None = None) -> FastAPI:
    """Build the app; nothing heavy happens until the lifespan starts."""
    settings = settings or get_settings()
    engine_factory = engine_factory or HFEngine.load
    metrics = Metrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        loop = asyncio.get_running_loop()

        def on_reload(ok: bool) -> None:
            metrics.brand_reloads.labels(result="ok" if ok else "failed").inc()
            metrics.brand_reload_error.set(0 if ok else 1)
            if ok and store.snapshot:
                metrics.brands.set(len(store.snapshot.brands))
                loop.call_soon_threadsafe(warm)  # reloads may report from the watcher's thread

        def warm() -> None:
            """The new brands' first-use work, in the background (DirectorService.warm)."""
            previous = app.state.warming
            if previous is not None:
                previous.cancel()
            app.state.warming = asyncio.create_task(service.warm(), name="brands-warm")

        store = BrandStore(settings.brands_path, on_reload)
        # Both raise with a message naming the file / setting: a bad start stops here.
        snapshot = store.load()
        metrics.brands.set(len(snapshot.brands))
        check_all(settings)
        await asyncio.to_thread(thai.warm_up)
        await _route_once(app)

        service = app.state.service = DirectorService(settings, store, metrics)
        rollout = app.state.adapters = AdapterRollout(settings, metrics, lambda: service.backend)
        stop = asyncio.Event()
        watcher = asyncio.create_task(store.watch(stop), name="brands-watch")
        app.state.warming = None
        loader = asyncio.create_task(_load_engine(app, service, engine_factory, rollout, stop, warm),
                                     name="engine-load")
        log.info("serving %d brands (version %s) from %s", len(snapshot.brands), snapshot.version, settings.brands_path)
        try:
            yield
        finally:
            stop.set()
            loader.cancel()
            if app.state.warming is not None:
                app.state.warming.cancel()
            if service.backend:
                await service.backend.close()
            await asyncio.gather(watcher, loader, return_exceptions=True)

    app = FastAPI(title="AI Director", version="0.1.0", lifespan=lifespan, docs_url=None, redoc_url=None,
                  description="On-brand Thai marketing content: captions, brand-voice rewrites and campaign briefs.")
    app.state.settings = settings
    app.state.metrics = metrics
    app.state.load_error = None
    app.state.request_shutdown = None  # set by `python -m app` to stop uvicorn on a fatal load error
    app.state.started = time.time()
    app.state.drain = Drain()
    app.state.health = lambda: health_report(app)
    install_error_handlers(app)
    install_docs(app)
    install_studio(app)
    app.include_router(generation_routes())
    app.include_router(api)
    app.include_router(ops)

    app.add_middleware(QueueGate, service=lambda: getattr(app.state, "service", None))
    app.add_middleware(RequestLimits, max_body_bytes=settings.max_body_bytes, body_timeout_s=settings.body_timeout_s)
    app.add_middleware(DrainMiddleware, drain=app.state.drain)
    app.add_middleware(ObserveMiddleware, metrics=metrics)  # outermost: limited requests are counted too
    return app


class ObserveMiddleware:
    """Request ids and per-route metrics, as plain ASGI: a BaseHTTPMiddleware would hide the
    client's disconnect from the routes, and they cancel work nobody will read."""

    def __init__(self, app, metrics: Metrics):
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        given = dict(scope["headers"]).get(b"x-request-id", b"").decode("latin-1")[:64]
        request_id = given or uuid.uuid4().hex[:16]
        scope.setdefault("state", {})["request_id"] = request_id
        status = 500  # what a request that dies without a response counts as

        async def send_with_id(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", []), (b"x-request-id", request_id.encode("latin-1"))]
            await send(message)

        start = time.perf_counter()
        try:
            await self.app(scope, receive, send_with_id)
        finally:
            route = scope.get("route")  # set by the router; the queue gate's refusals never reach it
            label = route.path if route is not None else scope["state"].get("route_path", "unmatched")
            self.metrics.requests.labels(route=label, status=str(status)).inc()
            self.metrics.latency.labels(route=label).observe(time.perf_counter() - start)


async def _route_once(app: FastAPI) -> None:
    """Walk the router once before serving. FastAPI builds its routes' matching state on the
    first request (~20 ms: a TypeAdapter per parameter), which would fall on the event loop
    while the first burst waits. A path no route has walks them all and ends in a 404 that no
    client sees; the router alone is called, so no metric counts it."""
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET", "scheme": "http",
             "path": "/.route-once", "raw_path": b"/.route-once", "root_path": "", "query_string": b"",
             "headers": [], "client": None, "server": None, "state": {}}  # no "app": a plain 404, not raised

    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message):
        pass

    await app.router(scope, receive, send)


async def _load_engine(app: FastAPI, service: DirectorService, factory, rollout: AdapterRollout,
                       stop: asyncio.Event, warm: Callable[[], None]) -> None:
    """Load the tokenizer, then the model, off the event loop: /health answers while a 7B
    model loads, and dry runs as soon as the tokenizer is there. With AI_DIRECTOR_ENGINE=vllm
    the tokenizer is all this process loads (vLLM holds the weights): it starts in seconds."""
    settings = service.settings
    try:
        service.prompter = await asyncio.to_thread(Prompter.load, settings)
        warm()  # the brands' first-use work, while the model loads
        if settings.engine == "vllm":
            backend = await VLLMBackend.start(settings, service.metrics, service.prompter)
        else:
            backend = LocalBackend(await asyncio.to_thread(factory, settings), settings, service.metrics)
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        app.state.load_error = f"model failed to load: {exc}"
        log.critical("%s", app.state.load_error)
        if app.state.request_shutdown:  # a server that can never answer must not look alive
            app.state.request_shutdown()
        return
    service.backend = backend
    log.info("backend started: %s", backend.info)
    rollout.adopt(backend.adapters())
    await rollout.reload()  # what changed on disk while the model loaded
    await rollout.watch(stop)

