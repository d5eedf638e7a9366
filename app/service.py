"""Serving logic behind the routes: resolve the brand, retrieve its context, build the
prompt, queue the generation, check the answer. Routes only translate HTTP."""

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass

from app.adapters import BASE, DEFAULT, AdapterVersion, served_adapters
from app.backend import Backend, QueueFullError
from app.batch import places_of, run_batch, window
from app.batching import Generation
from app.brand_resolver import BrandMatch
from app.brand_store import BrandSnapshot, BrandStore
from app.checks import CheckReport, check_text
from app.composer import compose, request_fields
from app.engine import GenerationRequest, GenerationResult, SamplingDefaults
from app.errors import APIError, error_body
from app.health import utc
from app.metrics import Metrics
from app.prompter import Prompter
from app.prompts import BrandContext, profile_lines
from app.reload_pacing import unpaced
from app.schemas import (
    BrandResponse, BrandsResponse, BrandSummary, Candidate, CheckRequest, CheckResponse,
    GenerateResponse,
)
from app.settings import Settings
from app.tasks import task_of

log = logging.getLogger(__name__)

WARM_BRANDS = 200  # brands warmed after a start or a reload, ~10 ms of a thread's time each


@dataclass(frozen=True)
class Prepared:
    task: str
    snapshot: BrandSnapshot
    match: BrandMatch
    context: BrandContext
    context_tokens: int
    messages: list
    prompt: str
    prompt_tokens: int
    max_new_tokens: int
    prompt_ids: tuple[int, ...]


class DirectorService:
    def __init__(self, settings: Settings, store: BrandStore, metrics: Metrics):
        self.settings = settings
        self.store = store
        self.metrics = metrics
        self.prompter: Prompter | None = None  # the tokenizer: loaded in seconds, before the model
        self.backend: Backend | None = None

    @property
    def ready(self) -> bool:
        backend = self.backend  # a remote backend is ready only while its engine answers
        return (backend is not None and backend.ready and self.prompter is not None
                and self.store.snapshot is not None)

    def _snapshot(self) -> BrandSnapshot:
        snapshot = self.store.snapshot
        if snapshot is None:
            raise APIError(503, "not_ready", "brands are not loaded yet; retry shortly", headers={"Retry-After": "5"})
        return snapshot

    def resolve(self, snapshot: BrandSnapshot, query: str) -> BrandMatch:
        match = snapshot.resolver.resolve(query, self.settings.fuzzy_threshold)
        if match is None:
            suggestions = snapshot.resolver.suggest(query)
            hint = f" Did you mean: {', '.join(suggestions)}?" if suggestions else " See GET /brands for the list."
            raise APIError(
                404, "brand_not_found", f"no brand matches {query!r}.{hint} New brands are added in brands.json.",
                param="brand", suggestions=suggestions,
            )
        return match

    async def _prepared(self, req) -> Prepared:
        """prepare(), with a brand's first-use work (its index and token counts, ~10 ms) done in a
        thread: on the event loop it would hold up every other request, /health included."""
        with self.store.pacer:  # brand work: a reload running meanwhile gives way to it
            snapshot = self._snapshot()
            match = self.resolve(snapshot, req.brand)
        if self.prompter is not None:
            await self._warm_brand(snapshot, match.brand, self.prompter)
        with self.store.pacer:
            return self.prepare(req, snapshot, match)

    async def warm(self, limit: int = WARM_BRANDS) -> int:
        """Do the first-use work of the snapshot served now, brand by brand, in a thread: after a
        start or a reload the first requests then find it done. Stops early when the brands are
        replaced meanwhile. Returns how many brands it warmed (requests may have done others)."""
        snapshot, prompter = self.store.snapshot, self.prompter
        if snapshot is None or prompter is None:
            return 0
        warmed = 0
        for brand in snapshot.brands[:limit]:
            if self.store.snapshot is not snapshot:
                break
            warmed += await self._warm_brand(snapshot, brand, prompter, background=True)
        return warmed

    async def _warm_brand(
        self, snapshot: BrandSnapshot, brand, prompter: Prompter, background: bool = False
    ) -> bool:
        """The brand's first-use work in a thread, unless done already; True if it was done now.
        In the background it gives way to requests' brand work as a reload does: after a reload,
        200 brands' warm-up competed with requests for the GIL for ~2 s, and their p99 was 4-7x
        the idle one (1.6x paced). A request's own brand is warmed at full speed: it waits."""
        if snapshot.retriever.is_warm(brand, prompter.count_tokens):
            return False
        pacer = self.store.pacer

        def warm() -> None:
            with pacer.reloading():
                snapshot.retriever.warm(brand, prompter.count_tokens, pacer.pace if background else unpaced)

        await asyncio.to_thread(warm)
        return True

    def prepare(self, req, snapshot: BrandSnapshot | None = None, match: BrandMatch | None = None) -> Prepared:
        task = task_of(req)
        snapshot = snapshot or self._snapshot()
        match = match or self.resolve(snapshot, req.brand)
        prompter = self.prompter
        if prompter is None:
            raise APIError(503, "not_ready", "the tokenizer is still loading; retry shortly", headers={"Retry-After": "2"})
        composed = compose(
            task.name, match.brand, request_fields(req), snapshot.retriever, prompter.count_tokens,
            prompter.special_tokens, self.settings.context_token_budget,
        )
        prompt = prompter.render(composed.messages)
        prompt_ids = tuple(prompter.encode(prompt))  # counted here, and the engine needs not encode again
        prompt_tokens = len(prompt_ids)
        room = self.settings.max_seq_length - prompt_tokens
        budget = self.settings.context_token_budget
        if room < 16 and composed.context_tokens > budget:  # the brand record is at fault, not the request
            raise APIError(
                422, "brand_profile_too_long",
                f"brand {match.brand.name!r} has a profile of {composed.context_tokens} tokens before any product or "
                f"example post, over the {budget}-token brand budget (AI_DIRECTOR_CONTEXT_TOKEN_BUDGET), and the "
                f"prompt no longer fits max_seq_length {self.settings.max_seq_length}; shorten its description, "
                "tone or other profile fields in brands.json",
                param="brand",
            )
        if room < 16:
            raise APIError(
                422, "prompt_too_long",
                f"the prompt is {prompt_tokens} tokens, leaving no room for an answer within max_seq_length "
                f"{self.settings.max_seq_length}; shorten the request text",
                param=task.main_field,
            )
        wanted = min(req.max_new_tokens or self.settings.max_new_tokens, self.settings.max_new_tokens)
        return Prepared(
            task.name, snapshot, match, composed.context, composed.context_tokens, composed.messages, prompt,
            prompt_tokens, min(wanted, room), prompt_ids,
        )

    def _backend(self) -> Backend:
        if self.backend is None:
            raise APIError(503, "not_ready", "the model is still loading; retry shortly", headers={"Retry-After": "10"})
        return self.backend

    def _head(self, p: Prepared) -> dict:
        """What every answer to this request starts with, generated or not."""
        return {"brand": p.match.brand.name, "brand_version": p.snapshot.version, "brand_match": p.match.summary()}

    def _model(self, version: AdapterVersion | None) -> dict:
        """The model that wrote an answer: the base, and the adapter version if one took part."""
        info = self.backend.info if self.backend else None
        base = {"base": info.base if info else self.settings.base_model}
        if version is None:
            return base | {"adapter": None}
        where = version.key if self.settings.engine == "vllm" else version.path  # vLLM: the module it called
        return base | {"adapter": where, "adapter_name": version.name, "adapter_version": version.version,
                       "adapter_loaded_at": utc(version.loaded_at)}

    def _adapter(self, backend: Backend | None, req) -> AdapterVersion | None:
        """The version a request's `adapter` names now (None: the base alone); 404 for a name not served."""
        served = backend.adapters() if backend else {}
        name = req.adapter
        if name is None or name == BASE:
            return served.get(DEFAULT) if name is None else None
        if name in served:
            return served[name]
        known = list(served) if backend else list(served_adapters(self.settings))
        if name not in known:
            raise APIError(
                404, "adapter_not_found", f"no adapter is named {name!r}; this server serves: "
                f"{', '.join([BASE, *known])} (GET /adapters); more are added with AI_DIRECTOR_ADAPTERS",
                param="adapter", adapters=[BASE, *known],
            )
        return None  # a dry run while the model loads: the name is configured, its version not known yet

    def _dry(self, p: Prepared, req) -> dict:
        return {"text": "", "usage": {"prompt_tokens": p.prompt_tokens, "completion_tokens": 0},
                "prompt": p.prompt, "context": self._context_out(p), "model": self._model(self._adapter(self.backend, req))}

    @staticmethod
    def _requests(p: Prepared, req, defaults: SamplingDefaults) -> list[GenerationRequest]:
        return [
            GenerationRequest(
                prompt=p.prompt,
                max_new_tokens=p.max_new_tokens,
                temperature=defaults.temperature if req.temperature is None else req.temperature,
                top_p=defaults.top_p if req.top_p is None else req.top_p,
                top_k=defaults.top_k,
                seed=None if req.seed is None else (req.seed + attempt) % 2**31,
                prompt_ids=p.prompt_ids,
                adapter=req.adapter,
            )
            for attempt in range(req.attempts)
        ]

    def _answer(self, p: Prepared, req, results: list[GenerationResult]) -> dict:
        """The generated part of the body: the first on-brand candidate, else the best scored."""
        leaks = p.snapshot.leaks
        platform = getattr(req, "platform", None)  # a task may have no platform field
        with self.store.pacer:
            reports = [check_text(r.text, p.match.brand, platform, leaks) for r in results]
        chosen = next((i for i, rep in enumerate(reports) if rep.on_brand), None)
        if chosen is None:
            chosen = max(range(len(reports)), key=lambda i: reports[i].score)
        self._count_failures(reports[chosen])
        result = results[chosen]
        body = {
            "text": result.text,
            "usage": {"prompt_tokens": result.prompt_tokens, "completion_tokens": sum(r.completion_tokens for r in results)},
            "finish_reason": result.finish_reason,
            "seed": result.seed,
            "checks": reports[chosen],
            "model": self._model(result.adapter),
        }
        if req.attempts > 1:
            body["candidates"] = [
                Candidate(text=r.text, seed=r.seed, checks=rep, chosen=i == chosen)
                for i, (r, rep) in enumerate(zip(results, reports))
            ]
        return body

    def _admission(self, req) -> None:
        """Admission first: a request the queue cannot take is refused before any prompt work."""
        if req.dry_run:
            return
        backend = self._backend()
        self._adapter(backend, req)
        if not backend.admits(req.attempts):
            raise self.queue_full(backend, f"{self.settings.max_queue} requests are already waiting")

    @staticmethod
    def queue_full(backend: Backend, why: str) -> APIError:
        return APIError(
            429, "queue_full", f"the server is at capacity ({why}); retry after the Retry-After seconds",
            headers={"Retry-After": str(backend.retry_after_s())},
        )

    async def generate(self, req, request_id: str = "-") -> dict:
        self._admission(req)
        p = await self._prepared(req)
        if req.dry_run:
            return self._head(p) | self._dry(p, req)
        backend = self._backend()
        generations = self._admit(backend, self._requests(p, req, backend.defaults), request_id, stream=False)
        results = await self._results(generations, request_id)
        return self._head(p) | self._answer(p, req, results)

    async def batch(self, items: list, request_id: str = "-") -> list[dict]:
        """Each item through generate(), in order, holding at most a window of the queue (app/batch.py).
        Only the batch as a whole can be refused here; an item's failure is its own result."""
        limit = self.settings.max_batch_items
        if len(items) > limit:
            raise APIError(
                422, "invalid_request", f"the batch has {len(items)} items, over the limit of {limit} "
                "(AI_DIRECTOR_MAX_BATCH_ITEMS); send it as several batches", param="items",
            )
        places = window(self.settings)
        needed = min(places, sum(places_of(item) for item in items))
        if needed:  # refused at once, as a single request is, when the queue has no room for its window
            backend = self._backend()
            if not backend.admits(needed):
                raise self.queue_full(backend, f"a batch needs {needed} free place{'s' * (needed > 1)} in the queue")
        return await run_batch(items, self.generate, places, self.settings.request_timeout_s, request_id)

    async def stream(self, req, request_id: str = "-") -> AsyncIterator[dict]:
        """Server-sent events for one request. Everything that can fail before the first
        byte (brand, prompt, readiness, a full queue) raises here, as an APIError."""
        self._admission(req)
        p = await self._prepared(req)
        if req.dry_run:
            return self._events(p, req, None, request_id)
        backend = self._backend()
        [generation] = self._admit(backend, self._requests(p, req, backend.defaults), request_id, stream=True)
        return self._events(p, req, generation, request_id)

    async def _events(self, p: Prepared, req, generation: Generation | None, request_id: str) -> AsyncIterator[dict]:
        self.metrics.open_streams.inc()
        finished = False
        try:
            if generation is None:
                body = self._head(p) | self._dry(p, req)
            else:
                result = None
                # A deadline per wait, not asyncio.timeout(): that must never span a `yield`.
                loop = asyncio.get_running_loop()
                deadline = loop.time() + self.settings.request_timeout_s
                events = aiter(generation)
                try:
                    while result is None:
                        event = await asyncio.wait_for(anext(events), deadline - loop.time())
                        if isinstance(event, str):
                            yield {"event": "delta", "data": json.dumps({"text": event}, ensure_ascii=False)}
                        else:
                            result = event
                finally:
                    await events.aclose()  # stops the row if the stream ends early
                body = self._head(p) | self._answer(p, req, [result])
            done = GenerateResponse.model_validate(body).model_dump(mode="json", exclude_unset=True)
            finished = True
            yield {"event": "done", "data": json.dumps(done, ensure_ascii=False)}
        except (asyncio.CancelledError, GeneratorExit):
            if not finished:
                self.metrics.cancelled.inc()  # the client left mid-stream; the row has stopped
            raise
        except Exception as exc:
            finished = True
            error = self._failure(exc, request_id)
            yield {"event": "error", "data": json.dumps(error_body(error.code, error.message), ensure_ascii=False)}
        finally:
            self.metrics.open_streams.dec()

    def _admit(self, backend: Backend, requests: list[GenerationRequest], request_id: str, stream: bool) -> list:
        generations: list[Generation] = []
        try:
            for request in requests:
                generations.append(backend.submit(request, request_id, stream))
        except QueueFullError as exc:
            for generation in generations:
                generation.cancelled = True  # admitted attempts of a refused request leave too
            raise self.queue_full(backend, str(exc)) from exc
        return generations

    def _failure(self, exc: Exception, request_id: str) -> APIError:
        if isinstance(exc, APIError):  # the backend's own mapping, e.g. vLLM unreachable: a 503
            return APIError(exc.status, exc.code, exc.message, param=exc.param, headers=exc.headers, **exc.extra)
        if isinstance(exc, TimeoutError):
            timeout = self.settings.request_timeout_s
            return APIError(
                504, "timeout", f"no answer within {timeout:g} s (AI_DIRECTOR_REQUEST_TIMEOUT_S); the server is busy "
                "or max_new_tokens is large; retry or ask for fewer tokens",
            )
        return APIError(  # the cause is logged with the request id; the client gets no internal text
            500, "generation_failed", f"the model failed on this request (id {request_id}); it is logged with that id",
        )

    async def _results(self, generations: list[Generation], request_id: str) -> list[GenerationResult]:
        try:
            # In turn, not gathered: all of them are generating already, so the last one back sets
            # the time either way, and no task is made per attempt.
            async with asyncio.timeout(self.settings.request_timeout_s):
                return [await generation.result() for generation in generations]
        except Exception as exc:
            raise self._failure(exc, request_id) from exc
        finally:
            for generation in generations:
                if not generation.ended:
                    generation.cancelled = True  # a timed-out request leaves nothing queued behind it

    def _count_failures(self, report: CheckReport) -> None:
        for name in report.failed:
            self.metrics.check_failures.labels(check=name).inc()

    def _context_out(self, p: Prepared) -> dict:
        return {
            "profile": profile_lines(p.context.brand),
            "products": [vars(item) for item in p.context.products],
            "examples": [vars(item) for item in p.context.examples],
            "dropped": list(p.context.dropped),
            "tokens": p.context_tokens,
            "budget": self.settings.context_token_budget,
        }

    def check(self, req: CheckRequest) -> CheckResponse:
        with self.store.pacer:
            snapshot = self._snapshot()
            match = self.resolve(snapshot, req.brand)
            report = check_text(req.text, match.brand, req.platform, snapshot.leaks)
        return CheckResponse(
            brand=match.brand.name, brand_version=snapshot.version, brand_match=match.summary(), checks=report,
        )

    def brand(self, name: str) -> BrandResponse:
        snapshot = self._snapshot()
        match = self.resolve(snapshot, name)
        return BrandResponse(brand_version=snapshot.version, brand_match=match.summary(), brand=match.brand)

    def brands(self) -> BrandsResponse:
        snapshot = self._snapshot()
        return BrandsResponse(
            brand_version=snapshot.version,
            count=len(snapshot.brands),
            brands=[BrandSummary(name=b.name, aliases=b.aliases, industry=b.industry) for b in snapshot.brands],
        )
