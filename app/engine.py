"""The in-process model: the interface the batching worker calls, and the transformers engine.

`Engine` is what the local backend's worker depends on; tests fake it. `HFEngine` loads
the base (4-bit NF4 on CUDA by default), the LoRA adapter, and the tokenizer, and
generates a whole batch in one `generate` call with per-request sampling settings,
reporting each row's text as it grows and each row's result as soon as that row ends.
"""

import logging
import os
import secrets
from dataclasses import dataclass
from typing import Protocol

from app.adapters import AdapterError, AdapterVersion, check_all
from app.lora import LoraSlots
from app.prompter import tokenizer_source
from app.settings import Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GenerationRequest:
    prompt: str
    max_new_tokens: int
    temperature: float  # 0 means greedy
    top_p: float = 1.0
    top_k: int = 0
    seed: int | None = None
    prompt_ids: tuple[int, ...] | None = None  # the prompt already encoded by the prompter, if it was
    adapter: str | None = None  # an adapter's name; None = the default one, "none" = the base model alone


@dataclass(frozen=True)
class GenerationResult:
    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str  # "stop" at <|im_end|>, "length" at max_new_tokens, "cancelled" if its client left
    seed: int | None = None
    adapter: AdapterVersion | None = None  # the adapter version that wrote it; None = the base model


@dataclass(frozen=True)
class SamplingDefaults:
    """What a request gets when it leaves a field out: the model's generation_config.json."""

    temperature: float = 0.7
    top_p: float = 0.8
    top_k: int = 20


@dataclass(frozen=True)
class ModelInfo:
    base: str
    adapter: str | None
    device: str
    quantization: str | None


class EngineLoadError(RuntimeError):
    """The model cannot be loaded as configured; the message says which setting to change."""


class RowListener(Protocol):
    """One request's side of a batch; called from the generation thread."""

    cancelled: bool  # read every step: True ends the row at once

    def delta(self, text: str) -> None: ...

    def finished(self, result: "GenerationResult") -> None: ...


class Engine(Protocol):
    """A model that generates a batch at a time. Implementations must be safe to call from one worker thread.

    `listeners`, one per request (or None), hear each row's new text as it is produced and
    its result the moment the row ends; the returned list holds every result as well."""

    info: ModelInfo
    defaults: SamplingDefaults

    def generate(
        self, requests: list[GenerationRequest], listeners: list[RowListener | None] | None = None
    ) -> list[GenerationResult]: ...


def compute_dtype(on_cuda: bool):
    """The precision the model computes in, serving and training alike: bf16 where the GPU has
    it natively (A100, H100, L4), fp16 on older GPUs such as the T4, whose tensor cores have no
    bf16 (torch would emulate it, slowly, unless asked for native support only); fp32 on a CPU."""
    import torch

    if not on_cuda:
        return torch.float32
    return torch.bfloat16 if torch.cuda.is_bf16_supported(including_emulation=False) else torch.float16


def resolve_device(setting: str) -> str:
    import torch

    if setting == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if setting.startswith("cuda") and not torch.cuda.is_available():
        raise EngineLoadError(f"AI_DIRECTOR_DEVICE={setting} but no CUDA device is visible; use cpu or auto")
    return setting


def generation_threads(reserved: int, cores: int | None = None) -> int | None:
    """Torch's threads for generating on CPU: the cores this process may run on, less `reserved`,
    at least one; None when OMP_NUM_THREADS is set (the operator's choice stands). With every core
    busy with matrix work, and its threads spinning between operations, the event loop waits for
    a core: a refusal or a /health probe then takes tens of milliseconds instead of one."""
    if os.environ.get("OMP_NUM_THREADS"):
        return None
    if cores is None:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, cores - reserved)


class HFEngine:
    """A transformers causal LM, optionally 4-bit, optionally with a LoRA adapter."""

    def __init__(self, model, tokenizer, info: ModelInfo, defaults: SamplingDefaults, stop_ids: list[int]):
        self.slots = LoraSlots(model, tokenizer)
        self.tokenizer = tokenizer
        self.info = info
        self.defaults = defaults
        self.stop_ids = stop_ids
        # This tokenizer belongs to the generation thread (padding mutates the Rust object);
        # the request path counts tokens with the Prompter's own instance.

    @classmethod
    def load(cls, settings: Settings) -> "HFEngine":
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        device = resolve_device(settings.device)
        on_cuda = device.startswith("cuda")
        four_bit = settings.load_in_4bit if settings.load_in_4bit is not None else on_cuda
        try:
            adapters = check_all(settings)  # before the weights: a bad folder costs no model load
        except AdapterError as exc:
            raise EngineLoadError(str(exc)) from exc

        dtype = compute_dtype(on_cuda)
        kwargs: dict = {"dtype": dtype}
        if four_bit:
            from transformers import BitsAndBytesConfig

            kwargs["quantization_config"] = BitsAndBytesConfig(
                load_in_4bit=True,
                bnb_4bit_quant_type="nf4",
                bnb_4bit_compute_dtype=dtype if on_cuda else torch.bfloat16,
            )
            kwargs["device_map"] = {"": device}
        try:
            model = AutoModelForCausalLM.from_pretrained(settings.base_model, **kwargs)
        except (OSError, ValueError) as exc:
            raise EngineLoadError(
                f"cannot load base model {settings.base_model!r}: {exc}. Set AI_DIRECTOR_BASE_MODEL to a hub "
                "name or a local folder holding config.json and weights"
            ) from exc
        if not four_bit:
            model.to(device)

        model.eval()

        source = tokenizer_source(settings)
        tokenizer = AutoTokenizer.from_pretrained(source)
        tokenizer.padding_side = "left"  # decoder-only batches must end where generation starts
        if tokenizer.pad_token is None:
            tokenizer.pad_token = "<|endoftext|>"
        if tokenizer.pad_token_id == tokenizer.eos_token_id:
            raise EngineLoadError(f"tokenizer of {source} uses its eos token as pad; pad must differ")

        gen = model.generation_config
        defaults = SamplingDefaults(
            temperature=float(gen.temperature if gen.do_sample and gen.temperature is not None else 0.0),
            top_p=float(gen.top_p if gen.top_p is not None else 1.0),
            top_k=int(gen.top_k if gen.top_k is not None else 0),
        )
        stop_ids = {tokenizer.convert_tokens_to_ids("<|im_end|>"), tokenizer.eos_token_id}
        eos = gen.eos_token_id
        stop_ids.update(eos if isinstance(eos, list) else [eos] if eos is not None else [])
        stop_ids.discard(None)
        stop_ids.discard(tokenizer.unk_token_id)
        info = ModelInfo(
            base=settings.base_model,
            adapter=str(settings.adapter_path) if settings.adapter_path else None,
            device=device,
            quantization="nf4" if four_bit else None,
        )
        engine = cls(model, tokenizer, info, defaults, sorted(stop_ids))
        for files in adapters:
            try:
                engine.install_adapter(files)
            except AdapterError as exc:
                raise EngineLoadError(str(exc)) from exc
        log.info("model loaded: %s", info)
        return engine

    @property
    def model(self):
        return self.slots.model

    @property
    def adapters(self) -> dict[str, AdapterVersion]:
        """The adapter versions served now, by name."""
        return dict(self.slots.served)

    def install_adapter(self, files) -> AdapterVersion:
        """Serve a checked adapter folder under its name (app/lora.py); call between batches only."""
        return self.slots.install(files)

    def generate(
        self, requests: list[GenerationRequest], listeners: list[RowListener | None] | None = None
    ) -> list[GenerationResult]:
        import torch

        from app.sampling import PerRowSampler, RowTracker

        if not requests:
            return []
        seeds = [r.seed if r.seed is not None else secrets.randbits(31) for r in requests]
        device = self.info.device
        if all(r.prompt_ids is not None for r in requests):  # encoded once, on the request path
            batch = self.tokenizer.pad({"input_ids": [list(r.prompt_ids) for r in requests]}, return_tensors="pt")
        else:
            batch = self.tokenizer([r.prompt for r in requests], return_tensors="pt", padding=True,
                                   add_special_tokens=False)
        batch = {k: v.to(device) for k, v in batch.items()}
        prompt_tokens = batch["attention_mask"].sum(dim=1).tolist()
        limits = [r.max_new_tokens for r in requests]
        sampler = PerRowSampler(
            [(r.temperature, r.top_p, r.top_k) for r in requests], seeds, device=device
        )

        adapter_names, versions = self.slots.route([r.adapter for r in requests])

        def result(row: int, decoder, reason: str) -> GenerationResult:
            return GenerationResult(decoder.final_text, int(prompt_tokens[row]), len(decoder.ids), reason, seeds[row],
                                    versions[row])

        tracker = RowTracker(self.tokenizer, limits, self.stop_ids, listeners or [None] * len(requests), result)
        with torch.inference_mode():
            self.model.generate(
                **batch,
                do_sample=False,  # sampling happens per row in PerRowSampler, seeded per request
                temperature=None,
                top_p=None,
                top_k=None,
                max_new_tokens=max(limits),
                logits_processor=[sampler],
                stopping_criteria=[tracker],
                eos_token_id=self.stop_ids,
                pad_token_id=self.tokenizer.pad_token_id,
                **({"adapter_names": adapter_names} if adapter_names else {}),
            )
        return tracker.results
