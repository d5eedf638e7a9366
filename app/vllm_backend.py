"""The vLLM backend (AI_DIRECTOR_ENGINE=vllm): the generation interface over HTTP.

The service renders and counts the prompt itself, and this backend sends vLLM that very
text with POST /v1/completions: the adapter sees the prompt it was trained on, byte for
byte, whatever chat template vLLM would apply. vLLM batches, so nothing is batched here:
each request is one HTTP request on one pooled client, and at most `max_queue` are in
flight (past that, a 429 at once). A request whose owner leaves (client gone, timeout) is
cancelled, which closes its connection, and vLLM aborts it.

A background probe of /v1/models every PROBE_INTERVAL_S says whether vLLM serves the
model now: `ready` follows it, and while it is down requests get 503 at once.
"""

import asyncio
import json
import logging
import math
import secrets
import time
from dataclasses import replace

import httpx

from app.adapters import AdapterFiles, AdapterVersion
from app.batching import Generation, QueueFullError
from app.engine import EngineLoadError, GenerationRequest, GenerationResult, ModelInfo, SamplingDefaults
from app.errors import APIError
from app.metrics import Metrics
from app.prompter import Prompter
from app.settings import Settings
from app.vllm_adapters import VLLMAdapters

log = logging.getLogger(__name__)

PROBE_INTERVAL_S = 2.0  # /ready follows vLLM within about this long
PROBE_TIMEOUT_S = 5.0  # a /v1/models slower than this counts as down
RETRY_AFTER_S = math.ceil(PROBE_INTERVAL_S)  # by then the probe has looked again
KEEPALIVE_S = 4.0  # below vLLM's own 5 s keep-alive


class UpstreamError(Exception):
    """vLLM answered, but with an error: its status and its own message."""

    def __init__(self, status: int, message: str):
        super().__init__(f"HTTP {status}: {message}")
        self.status, self.message = status, message


class RemoteGeneration(Generation):
    """A Generation whose work is an HTTP request: marking it cancelled cancels that request."""

    task: asyncio.Task | None = None
    _cancelled = False

    @property
    def cancelled(self) -> bool:
        return self._cancelled

    @cancelled.setter
    def cancelled(self, value: bool) -> None:
        self._cancelled = value
        if value and self.task is not None and not self.ended:
            self.task.cancel()  # closes the connection, so vLLM aborts the request


class Trimmed:
    """Text arriving in pieces, shown as the local engine shows it: leading whitespace dropped,
    trailing whitespace held back until text follows, so the pieces join to the stripped whole."""

    def __init__(self):
        self.text = ""
        self.shown = 0

    def push(self, piece: str) -> str:
        self.text += piece
        visible = self.text.strip()
        delta, self.shown = visible[self.shown :], len(visible)
        return delta

    @property
    def final_text(self) -> str:
        return self.text.strip()


def sampling_defaults(settings: Settings) -> SamplingDefaults:
    """The base model's generation_config.json, read as the local engine reads it, with no weights."""
    from transformers import GenerationConfig

    try:
        gen = GenerationConfig.from_pretrained(settings.base_model)
    except OSError:  # no generation_config.json: transformers' own defaults, as for a local model
        gen = GenerationConfig()
    return SamplingDefaults(
        temperature=float(gen.temperature if gen.do_sample and gen.temperature is not None else 0.0),
        top_p=float(gen.top_p if gen.top_p is not None else 1.0),
        top_k=int(gen.top_k if gen.top_k is not None else 0),
    )


def stop_token_ids(tokenizer) -> list[int]:
    """<|im_end|> ends an answer; vLLM adds the model's own eos ids from its generation config."""
    ids = {tokenizer.convert_tokens_to_ids("<|im_end|>"), tokenizer.eos_token_id}
    return sorted(i for i in ids if i is not None and i != tokenizer.unk_token_id)


def pick_model(models: list[dict]) -> str:
    """With AI_DIRECTOR_VLLM_MODEL unset: the LoRA served on a base, else the base."""
    adapters = [m["id"] for m in models if m.get("parent")]
    if len(adapters) > 1:
        log.warning("vLLM serves several adapters (%s); calling %s: set AI_DIRECTOR_VLLM_MODEL to choose",
                    ", ".join(adapters), adapters[0])
    return adapters[0] if adapters else models[0]["id"]


class VLLMBackend:
    """vLLM's OpenAI-compatible server, one base URL (a server, or a load balancer before many)."""

    def __init__(self, settings: Settings, metrics: Metrics, prompter: Prompter, defaults: SamplingDefaults):
        self.settings = settings
        self.metrics = metrics
        self.defaults = defaults
        self.url = settings.vllm_url
        self.model = settings.vllm_model  # None until the first probe picks one
        self.stop_ids = stop_token_ids(prompter.tokenizer)
        self.info = ModelInfo(base=settings.base_model, adapter=self.model, device="vllm", quantization=None)
        self.serving = False  # vLLM answered the latest probe and listed the model
        self.last_error: str | None = "vLLM has not been asked yet"
        self.in_flight: set[RemoteGeneration] = set()
        self.capacity = settings.max_queue
        self.latency_s = 1.0  # recent time per request, for a fair Retry-After
        key = settings.vllm_api_key
        self.client = httpx.AsyncClient(
            base_url=self.url,
            headers={"Authorization": f"Bearer {key.get_secret_value()}"} if key else None,
            timeout=httpx.Timeout(settings.vllm_read_timeout_s, connect=settings.vllm_connect_timeout_s),
            # Every admitted request has its connection, and the probe one more. vLLM's server
            # closes a connection idle for 5 s (VLLM_HTTP_TIMEOUT_KEEP_ALIVE): dropping it at 4 s
            # on this side means a request is never sent on one that is closing (a spurious 503).
            limits=httpx.Limits(max_connections=settings.max_queue + 1, max_keepalive_connections=settings.max_queue + 1,
                                keepalive_expiry=KEEPALIVE_S),
        )
        self._probe_task: asyncio.Task | None = None
        self.lora = VLLMAdapters(self.client, settings.vllm_unload_grace_s)

    @classmethod
    async def start(cls, settings: Settings, metrics: Metrics, prompter: Prompter) -> "VLLMBackend":
        """Ask vLLM once, then keep probing. A model vLLM does not serve is an EngineLoadError;
        an unreachable vLLM is not: the backend stays not ready until it answers."""
        backend = cls(settings, metrics, prompter, await asyncio.to_thread(sampling_defaults, settings))
        try:
            await backend.probe(startup=True)
        except BaseException:
            await backend.client.aclose()
            raise
        backend._probe_task = asyncio.create_task(backend._probe_loop(), name="vllm-probe")
        return backend

    # --- readiness ---
    @property
    def ready(self) -> bool:
        return self.serving

    def health(self) -> dict:
        """What /health shows of vLLM."""
        return {"url": self.url, "model": self.model, "serving": self.serving, "last_error": self.last_error,
                "in_flight": len(self.in_flight)}

    async def probe(self, startup: bool = False) -> None:
        asked_at = time.time()
        try:
            r = await self.client.get("/v1/models", timeout=PROBE_TIMEOUT_S)
            if r.status_code != 200:
                raise UpstreamError(r.status_code, r.text[:200])
            models = r.json()["data"]
            served = {m["id"]: m for m in models}
        except (httpx.HTTPError, UpstreamError, ValueError, KeyError, TypeError) as exc:
            return self._down(f"GET {self.url}/v1/models failed: {describe(exc)}")
        if not served:
            return self._down(f"vLLM at {self.url} serves no model yet")
        ours = {v.key for v in self.lora.loaded.values()}  # runtime modules of this gateway's rollouts
        model = self.settings.vllm_model or pick_model([m for m in models if m["id"] not in ours])
        if model not in served:
            message = (f"AI_DIRECTOR_VLLM_MODEL={model!r} is not served by vLLM at {self.url}, which serves: "
                       f"{', '.join(served)}; set AI_DIRECTOR_VLLM_MODEL to one of those, or start vLLM with "
                       f"--lora-modules {model}=ADAPTER_FOLDER")
            if startup:
                raise EngineLoadError(message)
            return self._down(message)  # e.g. an adapter unloaded at run time
        parent = served[model].get("parent")
        base = served.get(parent, served[model]) if parent else served[model]
        await self.lora.update(served, model, asked_at)
        self.model = model
        self.info = ModelInfo(base=str(base.get("root") or base["id"]), adapter=model if parent else None,
                              device="vllm", quantization=None)
        if not self.serving:
            log.info("vLLM at %s serves %s: ready", self.url, model)
        self.serving, self.last_error = True, None

    def _down(self, why: str) -> None:
        if self.serving or self.last_error != why:
            log.warning("vLLM unavailable: %s", why)
        self.serving, self.last_error = False, why

    async def _probe_loop(self) -> None:
        while True:
            await asyncio.sleep(PROBE_INTERVAL_S)
            await self.probe()

    # --- the Backend interface ---
    def submit(self, request: GenerationRequest, request_id: str = "-", stream: bool = False) -> Generation:
        """Send the request now, or raise QueueFullError (max_queue in flight) or a 503 (vLLM down)."""
        if not self.serving:
            raise self._unavailable(f"vLLM is unavailable ({self.last_error})")
        if len(self.in_flight) >= self.settings.max_queue:
            raise QueueFullError(f"{self.settings.max_queue} requests are already in flight to vLLM")
        generation = RemoteGeneration(request, request_id, stream, self.metrics, self.settings.stream_interval_ms / 1000)
        self.in_flight.add(generation)
        generation.task = asyncio.create_task(self._run(generation), name=f"vllm-{request_id}")
        generation.task.add_done_callback(lambda _: self.in_flight.discard(generation))
        return generation

    def admits(self, count: int) -> bool:
        return self.settings.max_queue - len(self.in_flight) >= count

    def adapters(self) -> dict[str, AdapterVersion]:
        return self.lora.served()

    async def install_adapter(self, files: AdapterFiles) -> AdapterVersion:
        return await self.lora.install(files)

    def retry_after_s(self) -> int:
        return max(1, round(self.latency_s))

    @property
    def depth(self) -> int:
        return len(self.in_flight)

    async def close(self) -> None:
        if self._probe_task:
            self._probe_task.cancel()
        self.lora.close()
        left = list(self.in_flight)
        for generation in left:
            if not generation.ended:
                generation.fail(RuntimeError("server is shutting down"))
            generation.task.cancel()
        await asyncio.gather(*(g.task for g in left), return_exceptions=True)
        await self.client.aclose()

    # --- one request ---
    async def _run(self, generation: RemoteGeneration) -> None:
        start = time.perf_counter()
        try:
            call = self._stream if generation.stream else self._complete
            model, version = self.lora.model_for(generation.request.adapter)
            payload = self._payload(model, generation.request, generation.stream)
            result = replace(await call(generation.request, payload, generation), adapter=version)
        except asyncio.CancelledError:
            raise  # the owner left; the closed connection has told vLLM to abort
        except Exception as exc:  # every failure reaches the owner as an APIError in the one shape
            generation.fail(self._failure(exc, generation.request_id))
            return
        elapsed = time.perf_counter() - start
        self.metrics.backend_latency.observe(elapsed)
        self.latency_s = 0.8 * self.latency_s + 0.2 * elapsed
        self.metrics.prompt_tokens.inc(result.prompt_tokens)
        self.metrics.generated_tokens.inc(result.completion_tokens)
        generation.finished(result)

    def _payload(self, model: str, request: GenerationRequest, stream: bool) -> dict:
        seed = request.seed if request.seed is not None else secrets.randbits(31)  # reported, so replayable
        payload = {
            "model": model,
            "prompt": request.prompt,
            "add_special_tokens": False,  # the rendered prompt holds its ChatML tokens already
            "max_tokens": request.max_new_tokens,
            "temperature": request.temperature,
            "top_p": request.top_p,
            "top_k": request.top_k if request.top_k > 0 else -1,  # -1: no top-k cut, in every vLLM version
            "seed": seed,
            "stop_token_ids": self.stop_ids,
            "skip_special_tokens": True,
            "stream": stream,
        }
        if stream:
            payload["stream_options"] = {"include_usage": True}  # usage arrives in the last chunk
        return payload

    async def _complete(self, request: GenerationRequest, payload: dict, generation: RemoteGeneration) -> GenerationResult:
        r = await self.client.post("/v1/completions", json=payload)
        if r.status_code != 200:
            raise UpstreamError(r.status_code, upstream_message(r.content))
        body = r.json()
        choice, usage = body["choices"][0], body["usage"]
        return GenerationResult(choice["text"].strip(), usage["prompt_tokens"], usage["completion_tokens"],
                                choice.get("finish_reason") or "stop", payload["seed"])

    async def _stream(self, request: GenerationRequest, payload: dict, generation: RemoteGeneration) -> GenerationResult:
        text, finish, usage = Trimmed(), None, None
        async with self.client.stream("POST", "/v1/completions", json=payload) as r:
            if r.status_code != 200:
                raise UpstreamError(r.status_code, upstream_message(await r.aread()))
            async for line in r.aiter_lines():
                if not line.startswith("data:"):
                    continue
                data = line[5:].strip()
                if data == "[DONE]":
                    continue  # read on to the end of the body: a response left unread loses its connection
                chunk = json.loads(data)
                if "error" in chunk:  # a failure after the 200: vLLM reports it as one more event
                    error = chunk["error"]
                    raise UpstreamError(int(error.get("code") or 500), str(error.get("message", error)))
                for choice in chunk.get("choices") or ():
                    if delta := text.push(choice.get("text") or ""):
                        generation.delta(delta)
                    finish = choice.get("finish_reason") or finish
                usage = chunk.get("usage") or usage
        if usage is None:
            raise ValueError("vLLM's stream ended without usage")
        return GenerationResult(text.final_text, usage["prompt_tokens"], usage["completion_tokens"], finish or "stop",
                                payload["seed"])

    # --- failures ---
    def _unavailable(self, why: str) -> APIError:
        return APIError(503, "backend_unavailable", f"{why}; retry after the Retry-After seconds",
                        headers={"Retry-After": str(RETRY_AFTER_S)})

    def _failure(self, exc: Exception, request_id: str) -> APIError:
        """The error a client gets, counted by kind; vLLM's internal text is logged, not sent."""
        kind, error = self._classify(exc)
        self.metrics.backend_errors.labels(kind=kind).inc()
        log.error("vLLM request %s failed (%s): %s", request_id, kind, describe(exc))
        return error

    def _classify(self, exc: Exception) -> tuple[str, APIError]:
        if isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout):
            self._down(f"cannot connect to {self.url}: {describe(exc)}")  # fail fast until the probe sees it back
            return "unreachable", self._unavailable(f"vLLM at {self.url} cannot be reached")
        if isinstance(exc, httpx.TimeoutException):
            timeout = self.settings.vllm_read_timeout_s
            return "timeout", APIError(
                504, "timeout", f"vLLM sent nothing for {timeout:g} s (AI_DIRECTOR_VLLM_READ_TIMEOUT_S); it is busy "
                "or max_new_tokens is large; retry or ask for fewer tokens",
            )
        if isinstance(exc, httpx.TransportError):
            return "disconnected", self._unavailable("the connection to vLLM broke during the answer")
        if not isinstance(exc, UpstreamError):
            return "bad_response", self._unavailable("vLLM's answer could not be read (it is logged)")
        status = exc.status
        if status >= 500:
            return "server_error", self._unavailable(f"vLLM failed on this request (HTTP {status})")
        if status == 429:
            return "rejected", APIError(429, "queue_full", "vLLM is at capacity; retry after the Retry-After seconds",
                                        headers={"Retry-After": str(self.retry_after_s())})
        if status in (401, 403):
            return "rejected", self._unavailable(f"vLLM refused the gateway's API key (HTTP {status}); "
                                                 "check AI_DIRECTOR_VLLM_API_KEY")
        if status == 404:
            return "rejected", self._unavailable(f"vLLM does not serve {self.model!r} now ({exc.message})")
        return "rejected", APIError(422, "backend_rejected", f"vLLM refused this request: {exc.message}")


def upstream_message(content: bytes) -> str:
    """vLLM's own error sentence from its error body ({"error": {"message"}} or the older flat shape)."""
    try:
        body = json.loads(content)
        error = body.get("error", body)
        return str(error.get("message") if isinstance(error, dict) else error)[:500]
    except (ValueError, AttributeError):
        return content.decode("utf-8", "replace")[:500]


def describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
