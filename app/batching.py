"""Dynamic batching: requests that arrive together are generated in one model call.

The loop takes the first waiting request, then keeps collecting until the batch holds
`max_batch_size` requests or `batch_timeout_ms` has passed, and runs the batch in a
worker thread so the event loop keeps accepting requests. The queue is bounded: a full
queue is refused at once (429) instead of growing without limit.
"""

import asyncio
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from app.engine import Engine, GenerationRequest, GenerationResult
from app.metrics import Metrics

log = logging.getLogger(__name__)

_STOP = object()


class QueueFullError(RuntimeError):
    pass


@dataclass
class _Item:
    request: GenerationRequest
    future: asyncio.Future
    request_id: str
    enqueued: float = field(default_factory=time.perf_counter)


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
    def __init__(self, engine: Engine, max_batch_size: int, batch_timeout_ms: float, max_queue: int, metrics: Metrics):
        if max_batch_size < 1:
            raise ValueError("max_batch_size must be greater than 0")
        if batch_timeout_ms < 0:
            raise ValueError("batch_timeout_ms must be 0 or more")
        self.engine = engine
        self.max_batch_size = max_batch_size
        self.timeout_s = batch_timeout_ms / 1000
        self.metrics = metrics
        self.queue: asyncio.Queue = asyncio.Queue(maxsize=max_queue)
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="generate")  # one model, one caller
        self._task: asyncio.Task | None = None
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
                self._fail(self.queue.get_nowait(), RuntimeError("server is shutting down"))
        await self._task
        self._pool.shutdown(wait=True)

    @property
    def depth(self) -> int:
        return self.queue.qsize()

    def retry_after_s(self) -> int:
        """A client's fair wait: the queue's batches at the latest batch time."""
        batches = max(1, self.depth // self.max_batch_size)
        return max(1, round(batches * self.last_batch_s))

    async def submit(self, request: GenerationRequest, request_id: str = "-") -> GenerationResult:
        future = asyncio.get_running_loop().create_future()
        try:
            self.queue.put_nowait(_Item(request, future, request_id))
        except asyncio.QueueFull as exc:
            raise QueueFullError(f"{self.queue.maxsize} requests are already waiting") from exc
        self.metrics.queue_depth.set(self.depth)
        return await future  # cancelled by a timeout: the loop then skips the item

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = await collect_batch(self.queue, self.max_batch_size, self.timeout_s)
            stop = batch[-1] is _STOP
            items = [i for i in batch if i is not _STOP and not i.future.done()]
            self.metrics.queue_depth.set(self.depth)
            if items:
                await self._run(loop, items)
            if stop:
                return

    async def _run(self, loop, items: list[_Item]) -> None:
        now = time.perf_counter()
        for item in items:
            self.metrics.queue_time.observe(now - item.enqueued)
        self.metrics.batch_size.observe(len(items))
        try:
            results = await loop.run_in_executor(self._pool, self.engine.generate, [i.request for i in items])
        except Exception as exc:
            if len(items) == 1:
                log.exception("generation failed for request %s", items[0].request_id)
                self._fail(items[0], exc)
                return
            # One bad request must not fail its neighbours: run each alone to find it.
            log.warning("batch of %d failed (%s); retrying one by one", len(items), exc)
            for item in items:
                if not item.future.done():
                    await self._run(loop, [item])
            return
        self.last_batch_s = time.perf_counter() - now
        for item, result in zip(items, results, strict=True):
            self.metrics.prompt_tokens.inc(result.prompt_tokens)
            self.metrics.generated_tokens.inc(result.completion_tokens)
            if not item.future.done():
                item.future.set_result(result)

    @staticmethod
    def _fail(item, exc: Exception) -> None:
        if isinstance(item, _Item) and not item.future.done():
            item.future.set_exception(exc)
