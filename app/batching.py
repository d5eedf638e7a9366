"""Dynamic batching: requests that arrive together are generated in one model call.

The loop takes the first waiting request, then keeps collecting until the batch holds
`max_batch_size` requests or `batch_timeout_ms` has passed, and runs the batch in a
worker thread so the event loop keeps accepting requests. The queue is bounded: a full
queue is refused at once (429) instead of growing without limit.

Each request is a `Generation`: the engine's thread reports its row's new text and its
result through it as they happen, and the request's owner reads them as an async
iterator. An owner that stops reading cancels the row, which then leaves the batch at the
next step, or never enters one.
"""

import asyncio
import logging
import threading
import time
from collections import deque
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor

from app.engine import Engine, GenerationRequest, GenerationResult
from app.metrics import Metrics

log = logging.getLogger(__name__)

_STOP = object()


class QueueFullError(RuntimeError):
    pass


class Courier:
    """Carries the rows' new text from the generation thread to the event loop, one wake-up of the
    loop for all the rows that have text waiting. The rows of a batch produce their tokens in the
    same instant, and a wake-up per row was as many turns of the loop asking the generation thread
    for the GIL, each slowing the next step."""

    def __init__(self, loop: asyncio.AbstractEventLoop):
        self.loop = loop
        self._waiting: list[tuple["Generation", GenerationResult | None]] = []
        self._lock = threading.Lock()

    def post(self, generation: "Generation", result: GenerationResult | None = None) -> None:
        """Hand the row's waiting text over, and then its result if it has one."""
        with self._lock:
            self._waiting.append((generation, result))
            if len(self._waiting) > 1:  # a wake-up is already on its way
                return
        self.loop.call_soon_threadsafe(self._deliver)

    def _deliver(self) -> None:
        with self._lock:
            waiting, self._waiting = self._waiting, []
        for generation, result in waiting:
            generation._hand_over()
            if result is not None:
                generation.events.put_nowait(result)


class Generation:
    """One request's channel between the generation thread and its owner on the event loop."""

    def __init__(self, request: GenerationRequest, request_id: str, stream: bool, metrics: Metrics,
                 interval_s: float = 0.0, courier: Courier | None = None):
        self.request = request
        self.request_id = request_id
        self.stream = stream
        self.metrics = metrics
        self.interval_s = interval_s  # text is handed over at most this often; the rest waits and joins
        self.loop = asyncio.get_running_loop()
        self.events: asyncio.Queue = asyncio.Queue()  # text deltas, then a result or an exception
        self.cancelled = False  # set by the owner; read by the generation thread every step
        self.ended = False  # set by the generation thread when the row's result is out
        self.enqueued = self.last = time.perf_counter()
        self.deltas = 0
        self._pending: deque[str] = deque()  # text from the thread not yet handed to the loop
        self._handed = float("-inf")
        self.courier = courier or Courier(self.loop)

    # --- called from the generation thread ---
    def delta(self, text: str) -> None:
        now = time.perf_counter()
        if self.deltas == 0:
            self.metrics.time_to_first_token.observe(now - self.enqueued)
        else:
            self.metrics.inter_token_latency.observe(now - self.last)
        self.deltas, self.last = self.deltas + 1, now
        if self.stream:
            self._pending.append(text)
            # Waking the event loop for every token of every row costs it (and the GIL) more
            # than the text is worth: one hand-over per interval carries all that waited.
            if now - self._handed >= self.interval_s:
                self._handed = now
                self.courier.post(self)

    def finished(self, result: GenerationResult) -> None:
        self.ended = True
        self.courier.post(self, result)  # text still waiting goes before the result

    # --- the owner's side, on the event loop ---
    def _hand_over(self) -> None:
        text = ""
        while self._pending:
            text += self._pending.popleft()
        if text:
            self.events.put_nowait(text)

    def fail(self, exc: BaseException) -> None:
        self.ended = True
        self._hand_over()
        self.events.put_nowait(exc)

    async def __aiter__(self) -> AsyncIterator[str | GenerationResult]:
        """Text deltas, then the result; raises what generation raised. Deltas that piled up
        while the owner was busy come out joined, so a slow reader falls behind by less."""
        try:
            while True:
                event = await self.events.get()
                while isinstance(event, str) and not self.events.empty():
                    following = self.events.get_nowait()
                    if not isinstance(following, str):
                        yield event
                        event = following
                        break
                    event += following
                if isinstance(event, BaseException):
                    raise event
                yield event
                if isinstance(event, GenerationResult):
                    return
        finally:
            if not self.ended:
                self.cancelled = True  # the owner left: the row stops at the next step

    async def result(self) -> GenerationResult:
        async for event in self:
            if isinstance(event, GenerationResult):
                return event
        raise RuntimeError("generation ended without a result")


async def collect_batch(queue: asyncio.Queue, max_batch_size: int, timeout_s: float) -> list:
    """Wait for one item, then gather more until the batch is full or `timeout_s` has passed.

    Returns the items; a `_STOP` sentinel ends the batch and is returned as its last item.
    """
    batch = [await queue.get()]
    deadline = time.perf_counter() + timeout_s
    while len(batch) < max_batch_size and batch[-1] is not _STOP:
        remaining = deadline - time.perf_counter()
        try:
            item = queue.get_nowait() if remaining <= 0 else await asyncio.wait_for(queue.get(), remaining)
        except (asyncio.QueueEmpty, TimeoutError):
            break
        batch.append(item)
    return batch


class BatchWorker:
    def __init__(self, engine: Engine, max_batch_size: int, batch_timeout_ms: float, max_queue: int, metrics: Metrics,
                 stream_interval_ms: float = 0.0):
        if max_batch_size < 1:
            raise ValueError("max_batch_size must be greater than 0")
        if batch_timeout_ms < 0:
            raise ValueError("batch_timeout_ms must be 0 or more")
        self.engine = engine
        self.max_batch_size = max_batch_size
        self.timeout_s = batch_timeout_ms / 1000
        self.metrics = metrics
        self.stream_interval_s = stream_interval_ms / 1000
        self.queue: asyncio.Queue = asyncio.Queue(maxsize=max_queue)
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="generate")  # one model, one caller
        self._task: asyncio.Task | None = None
        self._courier: Courier | None = None  # made on the event loop, with the first request
        self.last_batch_s = 1.0

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="batch-worker")

    async def stop(self) -> None:
        if self._task is None:
            return
        while True:  # make room for the sentinel; whatever is left is failed below
            try:
                self.queue.put_nowait(_STOP)
                break
            except asyncio.QueueFull:
                item = self.queue.get_nowait()
                if isinstance(item, Generation):
                    item.fail(RuntimeError("server is shutting down"))
        await self._task
        self._pool.shutdown(wait=True)

    @property
    def depth(self) -> int:
        return self.queue.qsize()

    async def between_batches(self, fn, *args):
        """Run `fn` on the generation thread between two batches, e.g. an adapter swap: the
        thread runs one call at a time, so no batch sees the model change under it."""
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    def retry_after_s(self) -> int:
        """A client's fair wait: the queue's batches at the latest batch time."""
        batches = max(1, self.depth // self.max_batch_size)
        return max(1, round(batches * self.last_batch_s))

    def submit(self, request: GenerationRequest, request_id: str = "-", stream: bool = False) -> Generation:
        """Queue a request at once, or raise QueueFullError; read the returned Generation for its output."""
        if self._courier is None:
            self._courier = Courier(asyncio.get_running_loop())
        generation = Generation(request, request_id, stream, self.metrics, self.stream_interval_s, self._courier)
        try:
            self.queue.put_nowait(generation)
        except asyncio.QueueFull as exc:
            raise QueueFullError(f"{self.queue.maxsize} requests are already waiting") from exc
        self.metrics.queue_depth.set(self.depth)
        return generation

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = await collect_batch(self.queue, self.max_batch_size, self.timeout_s)
            stop = batch[-1] is _STOP
            items = [i for i in batch if i is not _STOP and not i.cancelled]
            self.metrics.queue_depth.set(self.depth)
            if items:
                await self._run(loop, items)
            if stop:
                return

    async def _run(self, loop, items: list[Generation]) -> None:
        now = time.perf_counter()
        for item in items:
            self.metrics.queue_time.observe(now - item.enqueued)
        self.metrics.batch_size.observe(len(items))
        try:
            results = await loop.run_in_executor(self._pool, self.engine.generate, [i.request for i in items], items)
        except Exception as exc:
            # One bad request must not fail its neighbours: run alone each one that has not
            # shown any text yet (a rerun would repeat what a stream already sent).
            if len(items) > 1:
                log.warning("batch of %d failed (%s); retrying one by one", len(items), exc)
            for item in items:
                if item.ended or item.cancelled:
                    continue
                if len(items) > 1 and not (item.stream and item.deltas):
                    await self._run(loop, [item])
                else:
                    log.error("generation failed for request %s: %s", item.request_id, exc)
                    item.fail(exc)
            return
        self.last_batch_s = time.perf_counter() - now
        await asyncio.sleep(0)  # let the rows' own results, posted from the thread, arrive first
        for item, result in zip(items, results, strict=True):
            self.metrics.prompt_tokens.inc(result.prompt_tokens)
            self.metrics.generated_tokens.inc(result.completion_tokens)
            if not item.ended:  # an engine that reports only at the end of the batch
                if result.text:
                    item.delta(result.text)
                item.finished(result)
