"""Serving logic behind the routes: resolve the brand, retrieve its context, build the
prompt, queue the generation, check the answer. Routes only translate HTTP."""

import asyncio
import logging
from dataclasses import dataclass

from app.batching import BatchWorker, QueueFullError
from app.brand_resolver import BrandMatch
from app.brand_store import BrandSnapshot, BrandStore
from app.checks import CheckReport, check_text
from app.composer import compose, request_fields
from app.engine import Engine, GenerationRequest, GenerationResult
from app.errors import APIError
from app.metrics import Metrics
from app.prompts import BrandContext, profile_lines
from app.schemas import REQUEST_MODELS, CheckRequest
from app.settings import Settings

log = logging.getLogger(__name__)

TASK_OF = {model: task for task, model in REQUEST_MODELS.items()}


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


class DirectorService:
    def __init__(self, settings: Settings, store: BrandStore, metrics: Metrics):
        self.settings = settings
        self.store = store
        self.metrics = metrics
        self.engine: Engine | None = None
        self.worker: BatchWorker | None = None

    @property
    def ready(self) -> bool:
        return self.engine is not None and self.store.snapshot is not None

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

    def prepare(self, req) -> Prepared:
        task = TASK_OF[type(req)]
        snapshot = self._snapshot()
        match = self.resolve(snapshot, req.brand)
        engine = self._engine()
        composed = compose(
            task, match.brand, request_fields(req), snapshot.retriever, engine.count_tokens,
            engine.special_tokens, self.settings.context_token_budget,
        )
        prompt = engine.render(composed.messages)
        prompt_tokens = engine.count_tokens(prompt)
        room = self.settings.max_seq_length - prompt_tokens
        if room < 16:
            raise APIError(
                422, "prompt_too_long",
                f"the prompt is {prompt_tokens} tokens, leaving no room for an answer within max_seq_length "
                f"{self.settings.max_seq_length}; shorten the request text",
                param={"caption": "context", "adapt_voice": "message", "brief": "objectives"}[task],
            )
        wanted = min(req.max_new_tokens or self.settings.max_new_tokens, self.settings.max_new_tokens)
        return Prepared(
            task, snapshot, match, composed.context, composed.context_tokens, composed.messages, prompt,
            prompt_tokens, min(wanted, room),
        )

    def _engine(self) -> Engine:
        if self.engine is None or self.worker is None:
            raise APIError(503, "not_ready", "the model is still loading; retry shortly", headers={"Retry-After": "10"})
        return self.engine

    async def generate(self, req, request_id: str = "-") -> dict:
        p = self.prepare(req)
        body = {
            "brand": p.match.brand.name,
            "brand_version": p.snapshot.version,
            "brand_match": p.match.summary(),
            "model": {"base": self.engine.info.base, "adapter": self.engine.info.adapter},
        }
        if req.dry_run:
            return body | {"text": "", "usage": {"prompt_tokens": p.prompt_tokens, "completion_tokens": 0},
                           "prompt": p.prompt, "context": self._context_out(p)}
        defaults = self.engine.defaults
        requests = [
            GenerationRequest(
                prompt=p.prompt,
                max_new_tokens=p.max_new_tokens,
                temperature=defaults.temperature if req.temperature is None else req.temperature,
                top_p=defaults.top_p if req.top_p is None else req.top_p,
                top_k=defaults.top_k,
                seed=None if req.seed is None else (req.seed + attempt) % 2**31,
            )
            for attempt in range(req.attempts)
        ]
        results = await self._run(requests, request_id)
        leaks = p.snapshot.leaks
        reports = [check_text(r.text, p.match.brand, req.platform, leaks) for r in results]
        chosen = next((i for i, rep in enumerate(reports) if rep.on_brand), None)
        if chosen is None:
            chosen = max(range(len(reports)), key=lambda i: reports[i].score)
        self._count_failures(reports[chosen])
        result = results[chosen]
        body |= {
            "text": result.text,
            "usage": {"prompt_tokens": result.prompt_tokens, "completion_tokens": sum(r.completion_tokens for r in results)},
            "finish_reason": result.finish_reason,
            "seed": result.seed,
            "checks": reports[chosen].model_dump(),
        }
        if req.attempts > 1:
            body["candidates"] = [
                {"text": r.text, "seed": r.seed, "checks": rep.model_dump(), "chosen": i == chosen}
                for i, (r, rep) in enumerate(zip(results, reports))
            ]
        return body

    async def _run(self, requests: list[GenerationRequest], request_id: str) -> list[GenerationResult]:
        worker = self.worker
        timeout = self.settings.request_timeout_s
        tasks = [asyncio.ensure_future(worker.submit(r, request_id)) for r in requests]
        gathered = asyncio.gather(*tasks)
        # When the caller is cancelled (client gone), nobody awaits the gather's outcome: read it
        # here so asyncio does not log "exception was never retrieved".
        gathered.add_done_callback(lambda f: f.cancelled() or f.exception())
        try:
            return await asyncio.wait_for(gathered, timeout)
        except QueueFullError as exc:
            raise APIError(
                429, "queue_full", f"the server is at capacity ({exc}); retry after the Retry-After seconds",
                headers={"Retry-After": str(worker.retry_after_s())},
            ) from exc
        except TimeoutError as exc:
            raise APIError(
                504, "timeout", f"no answer within {timeout:g} s (AI_DIRECTOR_REQUEST_TIMEOUT_S); the server is busy "
                "or max_new_tokens is large; retry or ask for fewer tokens",
            ) from exc
        except Exception as exc:  # logged with the request id by the worker
            raise APIError(
                500, "generation_failed", f"the model failed on this request (id {request_id}): {exc}; it is logged",
            ) from exc
        finally:
            for task in tasks:
                task.cancel()  # a timed-out or refused request leaves nothing queued behind it

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

    def check(self, req: CheckRequest) -> dict:
        snapshot = self._snapshot()
        match = self.resolve(snapshot, req.brand)
        report = check_text(req.text, match.brand, req.platform, snapshot.leaks)
        return {
            "brand": match.brand.name,
            "brand_version": snapshot.version,
            "brand_match": match.summary(),
            "checks": report.model_dump(),
        }

    def brand(self, name: str) -> dict:
        snapshot = self._snapshot()
        match = self.resolve(snapshot, name)
        return {"brand_version": snapshot.version, "brand_match": match.summary(), "brand": match.brand.model_dump()}

    def brands(self) -> dict:
        snapshot = self._snapshot()
        return {
            "brand_version": snapshot.version,
            "count": len(snapshot.brands),
            "brands": [{"name": b.name, "aliases": b.aliases, "industry": b.industry} for b in snapshot.brands],
        }
