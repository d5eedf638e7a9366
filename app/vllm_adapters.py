"""Named adapters on vLLM: each name maps to one of vLLM's LoRA modules, and a rollout loads
the new version with vLLM's runtime LoRA loading.

A request's `adapter` names `default` (AI_DIRECTOR_VLLM_MODEL, or the LoRA vLLM lists), a
name of AI_DIRECTOR_ADAPTERS, or any LoRA module vLLM serves by its own id; `none` is the
base. A version this gateway rolls out is loaded under `<name>-<version>` with
POST /v1/load_lora_adapter (vLLM started with VLLM_ALLOW_RUNTIME_LORA_UPDATING=True, and
seeing the folder at the same path), probed with a one-token completion, then called for
that name; the module it replaces is unloaded AI_DIRECTOR_VLLM_UNLOAD_GRACE_S later, once
other gateways before the same vLLM have followed. A module vLLM was started with is
recognised by its folder's content and not loaded twice. vLLM forgets runtime modules when
it restarts: the rollout notices and loads the version again.
"""

import asyncio
import logging
import math
import time
from dataclasses import replace
from pathlib import Path

import httpx

from app.adapters import BASE, DEFAULT, AdapterError, AdapterFiles, AdapterVersion, fingerprint
from app.lora import PROBE_TEXT

log = logging.getLogger(__name__)


def seen_module(module_id: str, root: str) -> AdapterVersion:
    """A module vLLM lists; its version when its folder is readable here too (a shared volume),
    so that the folder vLLM was started with is recognised and not loaded a second time."""
    try:
        version, digest = fingerprint(Path(root))
    except OSError:
        version, digest = None, ""
    return AdapterVersion(module_id, root, version, time.time(), module_id, digest)


class VLLMAdapters:
    def __init__(self, client: httpx.AsyncClient, unload_grace_s: float):
        self.client = client
        self.unload_grace_s = unload_grace_s
        self._unloads: set[asyncio.Task] = set()
        self.base: str | None = None  # the base model's id in vLLM
        self.default: str | None = None  # the module a request naming no adapter gets, unless one was rolled out
        self.listed: dict[str, AdapterVersion] = {}  # LoRA modules vLLM serves now, by id
        self.loaded: dict[str, AdapterVersion] = {}  # versions this gateway rolled out, by name

    async def update(self, models: dict[str, dict], default: str, asked_at: float) -> None:
        """What /v1/models said when asked at `asked_at` (time.time()); a version loaded since is kept."""
        parent = models[default].get("parent")
        self.base, self.default = parent or default, default if parent else None
        listed = {}
        for module_id, model in models.items():
            if not model.get("parent"):
                continue
            known = self.listed.get(module_id)
            if known is None:
                known = await asyncio.to_thread(seen_module, module_id, str(model.get("root") or ""))
            listed[module_id] = known
        for version in self.loaded.values():
            if version.loaded_at >= asked_at:  # loaded while the answer was on its way
                listed.setdefault(version.key, version)
        self.listed = listed
        for name, version in list(self.loaded.items()):
            if version.key not in listed:  # vLLM restarted: the rollout loads it again
                log.warning("vLLM no longer serves adapter %s (module %s); it will be loaded again", name, version.key)
                del self.loaded[name]

    def served(self) -> dict[str, AdapterVersion]:
        out: dict[str, AdapterVersion] = {}
        if self.default in self.listed and DEFAULT not in self.loaded:
            out[DEFAULT] = replace(self.listed[self.default], name=DEFAULT)
        out |= self.loaded
        ours = {v.key for v in self.loaded.values()}
        return out | {i: v for i, v in self.listed.items() if i not in ours and i not in out}

    def model_for(self, name: str | None) -> tuple[str, AdapterVersion | None]:
        """The vLLM model id a request's `adapter` calls, and the version it gets."""
        if name == BASE:
            return self.base, None
        version = self.served().get(name or DEFAULT)
        return (version.key, version) if version else (self.base, None)

    async def install(self, files: AdapterFiles) -> AdapterVersion:
        key = f"{files.name}-{files.version}"
        if not files.path.is_symlink():
            raise AdapterError(
                f"{files.path} is a folder, not a link to one: vLLM reads a LoRA's folder again whenever it reloads "
                "it from disk, so it must never change under a loaded module. Keep each version in a folder of its "
                f"own and point the setting at a symlink to it, swapped with `ln -sfn v2 {files.path.name}.new && "
                f"mv -T {files.path.name}.new {files.path.name}` (a Kubernetes volume does the same)"
            )
        if key not in self.listed:
            r = await self.client.post("/v1/load_lora_adapter", json={"lora_name": key, "lora_path": str(files.real)})
            if r.status_code != 200 and not await self._listed(key):  # another gateway may have loaded it just now
                raise AdapterError(
                    f"vLLM refused to load {files.path} (HTTP {r.status_code}: {r.text[:300]}); start vLLM with "
                    "--enable-lora, a --max-lora-rank of at least the adapter's rank and "
                    "VLLM_ALLOW_RUNTIME_LORA_UPDATING=True, and let it see the folder at this same path"
                )
            try:
                await self._probe(key)
            except AdapterError:
                await self._unload(key)
                raise
        new = AdapterVersion(files.name, str(files.path), files.version, time.time(), key, files.digest, files.base)
        old = self.loaded.get(files.name)
        self.loaded[files.name] = self.listed[key] = new
        if old is not None and old.key != key:
            # Later, not now: other gateways before the same vLLM still call it until they follow.
            task = asyncio.create_task(self._unload_later(old.key))
            self._unloads.add(task)
            task.add_done_callback(self._unloads.discard)
        return new

    async def _listed(self, key: str) -> bool:
        r = await self.client.get("/v1/models")
        return r.status_code == 200 and any(m.get("id") == key for m in r.json().get("data", []))

    async def _unload_later(self, key: str) -> None:
        await asyncio.sleep(self.unload_grace_s)
        if key not in {v.key for v in self.loaded.values()}:
            await self._unload(key)

    def close(self) -> None:
        for task in self._unloads:
            task.cancel()

    async def _probe(self, key: str) -> None:
        payload = {"model": key, "prompt": PROBE_TEXT, "max_tokens": 1, "logprobs": 1, "add_special_tokens": False,
                   "temperature": 0}
        r = await self.client.post("/v1/completions", json=payload)
        try:
            logprob = r.json()["choices"][0]["logprobs"]["token_logprobs"][0]
            finite = math.isfinite(float(logprob))
        except (ValueError, KeyError, IndexError, TypeError):
            finite = False
        if r.status_code != 200 or not finite:
            raise AdapterError(f"a probe completion on vLLM failed (HTTP {r.status_code}: {r.text[:200]}): the "
                               "weights do not fit the base or hold NaN or inf; re-export or retrain it")

    async def _unload(self, key: str) -> None:
        r = await self.client.post("/v1/unload_lora_adapter", json={"lora_name": key})
        self.listed.pop(key, None)
        if r.status_code != 200:
            log.warning("vLLM did not unload adapter module %s (HTTP %d: %s)", key, r.status_code, r.text[:200])
