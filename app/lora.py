"""The LoRA adapters inside the local model: load and probe a version, swap it in, release
the old one, and route each row of a batch to its adapter.

Every method runs on the generation thread (the batch worker's one thread), so between two
batches: a batch never mixes two versions of one adapter, and rows in flight finish on the
version they started with. PEFT holds several adapters in one model and applies each to its
own rows of a batch (`adapter_names`), so requests for different adapters share a batch.
"""

import logging
import time

from app.adapters import BASE, DEFAULT, AdapterError, AdapterFiles, AdapterVersion

log = logging.getLogger(__name__)

PROBE_TEXT = "<|im_start|>user\nเขียนแคปชันสั้นๆ ให้แบรนด์<|im_end|>\n<|im_start|>assistant\n"
PEFT_BASE = "__base__"  # PEFT's name for "no adapter" in a mixed batch


class LoraSlots:
    """The adapters one model serves, by name, each at one version except during its swap."""

    def __init__(self, model, tokenizer):
        self.model = model  # becomes a PeftModel at the first adapter
        self.tokenizer = tokenizer
        self.served: dict[str, AdapterVersion] = {}

    def install(self, files: AdapterFiles) -> AdapterVersion:
        """Load `files` beside what is served, probe it, then serve it under its name and
        release the version it replaces. On any failure the served version stays."""
        old = self.served.get(files.name)
        key = f"{files.name}__{files.digest[:12]}"
        if old is not None and old.key == key:
            return old
        self._load(files, key)
        new = AdapterVersion(files.name, str(files.path), files.version, time.time(), key, files.digest, files.base)
        self.served[files.name] = new
        if old is not None:
            self.model.set_adapter(key, inference_mode=True)  # PEFT needs an active adapter other than the one going
            self._release(old.key)
        log.info("adapter %s: serving version %s from %s", files.name, new.version, files.path)
        return new

    def route(self, names: list[str | None]) -> tuple[list[str] | None, list[AdapterVersion | None]]:
        """Each row's key for PEFT (None when the model has no adapters) and the version it gets."""
        versions = [None if n == BASE else self.served.get(n or DEFAULT) for n in names]
        if not self.served:
            return None, versions
        return [v.key if v else PEFT_BASE for v in versions], versions

    def _load(self, files: AdapterFiles, key: str) -> None:
        from peft import PeftConfig, PeftModel

        try:
            if not isinstance(self.model, PeftModel):
                # Only at startup: a failure here stops the process, so the half-wrapped base never serves.
                config = PeftConfig.from_pretrained(str(files.real))
                config.inference_mode = True
                self.model = PeftModel(self.model, config, adapter_name=key)
            loaded = self.model.load_adapter(str(files.real), adapter_name=key)
            if loaded.missing_keys:
                raise AdapterError(
                    f"its weights miss {len(loaded.missing_keys)} of the layers its config names "
                    f"(e.g. {loaded.missing_keys[0]}): it was trained on another base or another layer set"
                )
            self._probe(key)
        except Exception as exc:
            try:
                self._release(key)
            except Exception:  # pragma: no cover - the original error is the one worth reporting
                log.exception("could not release the rejected adapter %s", key)
            if isinstance(exc, AdapterError):
                raise AdapterError(f"adapter {files.path} cannot be served: {exc}") from exc
            detail = next((line.strip() for line in str(exc).splitlines() if "mismatch" in line), str(exc))[:300]
            raise AdapterError(
                f"adapter {files.path} does not fit the base model (rank, shape or layer names differ, or its "
                f"weights cannot be read): {detail}. Serve it on the base it was trained on, or retrain"
            ) from exc

    def _probe(self, key: str) -> None:
        """One forward pass on a fixed prompt: weights that load but hold NaN or inf fail here."""
        import torch

        device = next(self.model.parameters()).device
        ids = self.tokenizer(PROBE_TEXT, return_tensors="pt", add_special_tokens=False)["input_ids"].to(device)
        with torch.inference_mode():
            logits = self.model(input_ids=ids, adapter_names=[key]).logits
        if not torch.isfinite(logits).all():
            raise AdapterError("a probe forward pass gave non-finite logits (NaN or inf): re-export or retrain it")

    def _release(self, key: str) -> None:
        """Drop an adapter's modules and memory; nothing happens for a key the model does not hold."""
        if key not in getattr(self.model, "peft_config", {}):
            return
        self.model.delete_adapter(key)  # its tensors go with their last reference: no gc.collect() pause
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
