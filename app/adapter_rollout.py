"""Adapter rollout without restarts: each served adapter's folder is watched, and a new
version is served once it passes every check, the way brands.json is reloaded.

A change is anything that alters the folder's weights, config or prompt contract: an
atomic folder swap (`python -m training train` renames OUTPUT.partial to OUTPUT), a
Kubernetes volume's symlink swap (`..data`), or files written in place. The new version is
checked off the event loop (app/adapters.py), then loaded and probed between two batches
(app/lora.py, or vLLM's runtime LoRA loading) and served from the next batch on. A version
that fails any check leaves the old one serving; the error shows in /health and in the
metrics until a good write arrives. Volumes that send no file events (NFS and the like) are
read again every AI_DIRECTOR_ADAPTER_POLL_S, and POST /admin/adapters/reload does it at once.
"""

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from app.adapters import AdapterVersion, inspect_adapter, served_adapters
from app.brand_store import ReloadError
from app.metrics import Metrics
from app.settings import Settings

log = logging.getLogger(__name__)


@dataclass
class AdapterState:
    name: str
    path: Path
    served: AdapterVersion | None = None
    error: ReloadError | None = None  # set while the folder on disk cannot be served


class AdapterRollout:
    def __init__(self, settings: Settings, metrics: Metrics, backend: Callable):
        self.settings = settings
        self.metrics = metrics
        self.backend = backend  # the service's backend once started, else None
        self.states = {name: AdapterState(name, path) for name, path in served_adapters(settings).items()}
        self._lock = asyncio.Lock()  # one reload at a time: two would race to swap the same name

    def adopt(self, served: dict[str, AdapterVersion]) -> None:
        """The versions the backend loaded at startup."""
        for name, version in served.items():
            if name in self.states:
                self.states[name].served = version
                self.metrics.adapter_info.labels(adapter=name, version=version.version).set(1)

    @property
    def failing(self) -> list[AdapterState]:
        return [s for s in self.states.values() if s.error]

    async def reload(self, names: list[str] | None = None) -> list[AdapterState]:
        """Serve what is on disk now for each adapter (all by default); never raises."""
        async with self._lock:
            for name in names or list(self.states):
                await self._reload_one(self.states[name])
        return [self.states[n] for n in names or self.states]

    async def _reload_one(self, state: AdapterState) -> None:
        backend = self.backend()
        if backend is None:
            return  # still loading: it reads the folder as it starts
        try:
            files = await asyncio.to_thread(inspect_adapter, state.name, state.path, self.settings, state.served)
            # The same files, still served (a vLLM that restarted has forgotten what was loaded at run time).
            if state.served is not None and files.digest == state.served.digest \
                    and backend.adapters().get(state.name) == state.served:
                state.error = None  # e.g. a bad write was reverted to the served files
                self.metrics.adapter_reload_error.labels(adapter=state.name).set(0)
                return
            new = await backend.install_adapter(files)
        except Exception as exc:  # AdapterError, or whatever loading raised: the old version serves on
            served = state.served.version if state.served else "none"
            message = f"{exc}; still serving version {served}"
            if state.error and state.error.message == message:
                return  # the same failure seen again (a poll, an unrelated event): counted and logged once
            state.error = ReloadError(message, time.time())
            log.error("adapter %s: reload failed: %s", state.name, state.error.message)
            self.metrics.adapter_reloads.labels(adapter=state.name, result="failed").inc()
            self.metrics.adapter_reload_error.labels(adapter=state.name).set(1)
            return
        if state.served is not None and state.served.version != new.version:
            with contextlib.suppress(KeyError):  # one series per adapter: the old version's goes
                self.metrics.adapter_info.remove(state.name, str(state.served.version))
        state.served, state.error = new, None
        self.metrics.adapter_reloads.labels(adapter=state.name, result="ok").inc()
        self.metrics.adapter_reload_error.labels(adapter=state.name).set(0)
        self.metrics.adapter_info.labels(adapter=state.name, version=new.version).set(1)
        log.info("adapter %s: now serving version %s", state.name, new.version)

    def _lost(self) -> list[str]:
        """Names whose version the backend no longer serves (vLLM restarted), or that it never loaded."""
        backend = self.backend()
        if backend is None:
            return []
        served = backend.adapters()
        return [s.name for s in self.states.values() if s.error is None and served.get(s.name) != s.served]

    def _relevant(self, changed: str) -> bool:
        """A change inside an adapter folder, to the folder itself, or to a Kubernetes `..data` link."""
        for state in self.states.values():
            folder = str(state.path.absolute())
            if changed == folder or changed.startswith(folder + os.sep):
                return True
            if changed.startswith(os.path.dirname(folder) + os.sep + ".."):
                return True
        return False

    async def watch(self, stop: asyncio.Event, retry_s: float = 1.0) -> None:
        """Reload on every change near an adapter folder until `stop` is set."""
        from watchfiles import awatch

        # The configured parents, not the resolved ones: a Kubernetes volume swaps the symlink's target.
        parents = sorted({str(s.path.absolute().parent) for s in self.states.values()})
        if not parents:
            return
        polled = time.monotonic()
        while not stop.is_set():
            try:
                watched = [os.stat(p).st_ino for p in parents]
                async for changes in awatch(*parents, stop_event=stop, step=10, rust_timeout=int(retry_s * 1000),
                                            yield_on_timeout=True):
                    # Training writes checkpoints beside the adapter for hours: only nearby changes count.
                    poll = self.settings.adapter_poll_s and time.monotonic() - polled >= self.settings.adapter_poll_s
                    if poll or any(self._relevant(path) for _, path in changes):
                        polled = time.monotonic()
                        await self.reload()
                    elif lost := self._lost():
                        await self.reload(lost)
                    if not changes and [os.stat(p).st_ino for p in parents] != watched:
                        break  # a parent was replaced: the old watch sees nothing any more
            except Exception as exc:  # e.g. the parent itself was removed: keep serving, keep trying
                log.error("cannot watch the adapter folders in %s (%s); retrying", ", ".join(parents), exc)
                try:
                    await asyncio.wait_for(stop.wait(), retry_s)
                except TimeoutError:
                    pass
