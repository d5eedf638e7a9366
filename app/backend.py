"""The generation backend the service depends on, one level above the model.

A backend takes one request at a time and returns a `Generation`, which its owner reads
as an async iterator of text deltas ending with the result, or awaits for the result
alone; leaving the iterator early cancels the request. The local backend is the batching
worker in front of the in-process transformers engine. A remote engine (vLLM over HTTP)
implements the same three members and batches on its own side; tests fake them.
"""

from typing import Protocol

from app.adapters import AdapterError, AdapterFiles, AdapterVersion
from app.batching import BatchWorker, Generation, QueueFullError
from app.engine import Engine, GenerationRequest, ModelInfo, SamplingDefaults
from app.metrics import Metrics
from app.settings import Settings

__all__ = ["Backend", "LocalBackend", "QueueFullError"]


class Backend(Protocol):
    info: ModelInfo
    defaults: SamplingDefaults  # what a request gets for the sampling fields it leaves out
    ready: bool  # a remote backend is ready only while its engine answers
    last_error: str | None  # why it is not ready, while it is not
    capacity: int  # requests it holds at once, waiting and generating: more at the door are refused

    def submit(self, request: GenerationRequest, request_id: str, stream: bool) -> Generation:
        """Admit the request now or raise QueueFullError (a 429 before any byte is sent)."""
        ...

    def admits(self, count: int) -> bool:
        """Whether `count` more requests would be admitted now: checked before any prompt work."""
        ...

    def retry_after_s(self) -> int: ...

    def adapters(self) -> dict[str, AdapterVersion]:
        """The adapter versions served now, by name; a request may name any of them, or "none"."""
        ...

    async def install_adapter(self, files: AdapterFiles) -> AdapterVersion:
        """Serve a checked folder under its name once it loads and passes a probe; raises AdapterError, and
        the version served before stays, when it does not."""
        ...

    @property
    def depth(self) -> int: ...

    async def close(self) -> None: ...


class LocalBackend:
    """The in-process engine behind the dynamic batching worker."""

    ready = True  # the engine is loaded before this backend exists
    last_error = None

    def __init__(self, engine: Engine, settings: Settings, metrics: Metrics):
        self.engine = engine
        self.info = engine.info
        self.defaults = engine.defaults
        self.worker = BatchWorker(
            engine, settings.max_batch_size, settings.batch_timeout_ms, settings.max_queue, metrics,
            settings.stream_interval_ms,
        )
        self.worker.start()
        self.capacity = settings.max_queue + settings.max_batch_size

    def submit(self, request: GenerationRequest, request_id: str = "-", stream: bool = False) -> Generation:
        return self.worker.submit(request, request_id, stream)

    def admits(self, count: int) -> bool:
        return self.worker.queue.maxsize - self.worker.depth >= count

    def retry_after_s(self) -> int:
        return self.worker.retry_after_s()

    def adapters(self) -> dict[str, AdapterVersion]:
        return getattr(self.engine, "adapters", {})

    async def install_adapter(self, files: AdapterFiles) -> AdapterVersion:
        install = getattr(self.engine, "install_adapter", None)
        if install is None:
            raise AdapterError(f"this engine ({type(self.engine).__name__}) cannot load adapters")
        return await self.worker.between_batches(install, files)

    @property
    def depth(self) -> int:
        return self.worker.depth

    async def close(self) -> None:
        await self.worker.stop()
