"""GPU evidence in one run: NF4 load, decode and QLoRA on the real Qwen2.5-7B shape.

    bash bench/gpu_check.sh --out bench/results                    # CUDA: the 7B shape, random weights
    python bench/gpu_check.py --device cpu --tiny --out /tmp/check  # CPU dry run on the tiny model

The real architecture (bench/qwen2.5-7b-instruct/config.json) is built on the device in
bf16 with random weights (speed and memory do not depend on the values), saved to a
scratch folder with a random rank-16 LoRA on the 7 projections, and then measured through
the product's own code:
- load: `HFEngine.load`, the service's loader (NF4, bf16 compute, the adapter attached);
- decode: the service's `BatchWorker` + `HFEngine` at 1 and 32 concurrent requests, and
  beside them the specification's way, `generate` once per request, one after another;
- adapters: a retrained adapter swapped in as the service's rollout does it, and a batch
  mixing two adapters against a batch of one;
- qlora: `training.model.load_model` (what `python -m training train` trains) for a few
  optimizer steps with paged_adamw_8bit, gradient checkpointing, batch 1 x accumulation 4;
- a static-KV-cache + torch.compile variant of decoding, last, if the time budget allows.

Every figure is appended to the results file as soon as it is measured, so a run stopped
at its time limit still leaves what it measured. A section that fails records its error
and the run goes on with the next one. Imports stay on the engine and training path only
(no HTTP server, no Thai text stack), so the run needs just torch, transformers, peft,
accelerate, bitsandbytes, pydantic(-settings) and prometheus-client.
"""

import argparse
import asyncio
import datetime
import gc
import math
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

REPO = Path(__file__).resolve().parent.parent
REFERENCE = REPO / "bench" / "qwen2.5-7b-instruct"  # the real model's config.json and generation_config.json
CONCURRENT = 32  # requests fired together in the batched decode
SPEC_SAMPLES, SPEC_EPOCHS = 71, 3  # train_augmented.jsonl, 3 epochs: 213 samples seen
BANDWIDTH_LIMIT_TOK_S = 700  # H100 SXM single-stream ceiling: ~4.7 GB read per token at 3.35 TB/s
OCCASIONS = ["เปิดตัวสินค้าใหม่", "ลดราคา 11.11", "สงกรานต์", "ลอยกระทง", "ปีใหม่", "วาเลนไทน์", "หน้าฝน", "เปิดเทอม"]


class Report:
    """Lines appended and flushed one by one: the file is complete up to the last measurement."""

    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.file = path.open("w", encoding="utf-8")

    def line(self, text: str = "") -> None:
        print(text, flush=True)
        self.file.write(text + "\n")
        self.file.flush()

    def section(self, name: str, fn, *args):
        self.line(f"\n## {name}")
        started = time.perf_counter()
        try:
            return fn(self, *args)
        except Exception as exc:  # record it and go on: later sections do not depend on this one
            self.line(f"ERROR in {name}: {type(exc).__name__}: {exc}")
            for text in traceback.format_exc().splitlines()[-12:]:
                self.line(f"    {text}")
            return None
        finally:
            self.line(f"({name}: {time.perf_counter() - started:.1f} s)")


class Clock:
    def __init__(self, budget_s: float):
        self.deadline = time.perf_counter() + budget_s

    def left(self) -> float:
        return self.deadline - time.perf_counter()


def sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def memory_gib(device: str) -> tuple[float, float]:
    """(allocated now, peak since the last reset) on the GPU; process max RSS twice on a CPU."""
    import torch

    if device.startswith("cuda"):
        return torch.cuda.memory_allocated() / 2**30, torch.cuda.max_memory_allocated() / 2**30
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    return rss, rss


def free(device: str) -> None:
    import torch

    gc.collect()
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def versions(report: Report, args) -> None:
    import importlib.metadata as md

    import torch

    report.line(f"date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M UTC}")
    report.line(f"command: {' '.join(sys.argv)}")
    if args.device.startswith("cuda"):
        props = torch.cuda.get_device_properties(0)
        report.line(f"device: {props.name}, {props.total_memory / 2**30:.1f} GiB, {props.multi_processor_count} SMs")
        try:
            smi = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                 capture_output=True, text=True, timeout=20).stdout.strip()
        except (OSError, subprocess.TimeoutExpired):
            smi = "unknown"
        report.line(f"driver: {smi}, CUDA (torch) {torch.version.cuda}")
    else:
        report.line(f"device: cpu ({platform.processor() or platform.machine()}), dry run")
    found = []
    for name in ("torch", "transformers", "peft", "accelerate", "bitsandbytes", "pydantic"):
        try:
            found.append(f"{name} {md.version(name)}")
        except md.PackageNotFoundError:
            found.append(f"{name} missing")
    report.line(f"python {platform.python_version()}; " + ", ".join(found))


def build_checkpoint(report: Report, args, scratch: Path) -> tuple[Path, Path]:
    """Random weights of the chosen shape, saved as a model folder plus a LoRA adapter folder."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    from training.config import TrainConfig

    tokenizer_dir = Path(args.tokenizer)
    if not (tokenizer_dir / "tokenizer.json").is_file():
        from training.tiny_model import build_tiny_model  # needs trl's template: not on a bare GPU image

        build_tiny_model(tokenizer_dir)
    base, adapter = scratch / "base", scratch / "adapter"
    source = tokenizer_dir if args.tiny else REFERENCE
    config = AutoConfig.from_pretrained(source)
    generation = GenerationConfig.from_pretrained(source)
    dtype = torch.bfloat16 if args.device.startswith("cuda") else torch.float32
    started = time.perf_counter()
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)  # built directly in bf16 on the device: no 30 GB fp32 detour
    try:
        with torch.device(args.device):
            model = AutoModelForCausalLM.from_config(config)
    finally:
        torch.set_default_dtype(previous)
    sync(args.device)
    built = time.perf_counter() - started
    model.save_pretrained(base)
    generation.save_pretrained(base)  # the real sampling defaults and stop ids
    AutoTokenizer.from_pretrained(tokenizer_dir).save_pretrained(base)
    saved = time.perf_counter() - started - built
    model.config._name_or_path = str(base)  # the adapter records this folder as its base
    spec = TrainConfig()
    lora = LoraConfig(r=spec.lora_r, lora_alpha=spec.lora_alpha, lora_dropout=spec.lora_dropout,
                      target_modules=list(spec.target_modules), task_type="CAUSAL_LM",
                      init_lora_weights=False)  # random B as well: a trained adapter is not a no-op
    get_peft_model(model, lora).save_pretrained(adapter)
    params = sum(p.numel() for p in model.parameters())
    size = sum(f.stat().st_size for f in base.glob("*.safetensors")) / 2**30
    report.line(f"shape: {'tiny Qwen2' if args.tiny else 'Qwen2.5-7B-Instruct'} ({config.num_hidden_layers} layers, "
                f"hidden {config.hidden_size}, vocab {config.vocab_size}), {params / 1e9:.2f} B parameters incl. LoRA")
    report.line(f"random {dtype} weights built on {args.device} in {built:.1f} s, saved ({size:.1f} GiB) in {saved:.1f} s; "
                f"LoRA r{spec.lora_r} on {len(spec.target_modules)} projections saved")
    report.line(f"tokenizer: {tokenizer_dir.name} ({len(AutoTokenizer.from_pretrained(base))} tokens; ids stay below the "
                "model's vocabulary, which is all decoding speed depends on)")
    del model
    free(args.device)
    return base, adapter


def load_engine(report: Report, args, base: Path, adapter: Path):
    from app.engine import HFEngine
    from app.settings import Settings

    free(args.device)
    settings = Settings(base_model=str(base), adapter_path=adapter, device=args.device, load_in_4bit=True,
                        _env_file=None)
    started = time.perf_counter()
    engine = HFEngine.load(settings)
    sync(args.device)
    seconds = time.perf_counter() - started
    now, peak = memory_gib(args.device)
    import bitsandbytes as bnb

    four_bit = sum(1 for m in engine.model.modules() if isinstance(m, bnb.nn.Linear4bit))
    key = engine.adapters["default"].key  # the served version's name inside the model (app/lora.py)
    lora = sum(1 for n, _ in engine.model.named_modules() if n.endswith(f"lora_A.{key}"))
    report.line(f"HFEngine.load (NF4, bf16 compute, adapter attached): {seconds:.1f} s")
    report.line(f"memory after load: {now:.2f} GiB allocated, peak {peak:.2f} GiB "
                f"({'torch.cuda' if args.device.startswith('cuda') else 'process max RSS'})")
    report.line(f"4-bit linear layers: {four_bit}; LoRA-wrapped modules: {lora}; quantization {engine.info.quantization}")
    return engine


def prompts_for(engine, count: int) -> list[str]:
    """Real product prompts: the caption instruction plus each brand's profile, products and examples."""
    from app.brand_schema import BrandFile
    from app.prompter import Prompter
    from app.prompts import BrandContext, Retrieved, build_messages, product_line

    prompter = Prompter(engine.tokenizer)

    brands = BrandFile.model_validate_json((REPO / "brands" / "brands.json").read_bytes()).brands
    out = []
    for i in range(count):
        brand = brands[i % len(brands)]
        context = BrandContext(brand, [Retrieved(product_line(p)) for p in brand.products[:3]],
                               [Retrieved(e) for e in brand.example_posts[:2]])
        fields = {"context": f"{OCCASIONS[i % len(OCCASIONS)]} #{i}", "platform": "instagram"}
        out.append(prompter.render(build_messages("caption", brand.name, fields, context, prompter.special_tokens)))
    return out


async def _through_worker(engine, requests, max_batch_size: int) -> tuple[float, int, float]:
    from app.batching import BatchWorker
    from app.metrics import Metrics

    metrics = Metrics()
    worker = BatchWorker(engine, max_batch_size, batch_timeout_ms=20, max_queue=1024, metrics=metrics)
    worker.start()
    sync(engine.info.device)
    started = time.perf_counter()
    results = await asyncio.gather(*[worker.submit(r).result() for r in requests])
    seconds = time.perf_counter() - started
    await worker.stop()
    samples = metrics.batch_size.collect()[0].samples
    count = next(s.value for s in samples if s.name.endswith("_count"))
    total = next(s.value for s in samples if s.name.endswith("_sum"))
    return seconds, sum(r.completion_tokens for r in results), total / max(count, 1)


def one_after_another(engine, prompts: list[str], new_tokens: int) -> tuple[float, int]:
    """The specification's inference loop: tokenize, `generate`, decode, next request."""
    import torch

    tokens, started = 0, time.perf_counter()
    for prompt in prompts:
        inputs = engine.tokenizer(prompt, return_tensors="pt", add_special_tokens=False).to(engine.info.device)
        with torch.inference_mode():
            out = engine.model.generate(**inputs, max_new_tokens=new_tokens, do_sample=False, temperature=None,
                                        top_p=None, top_k=None, eos_token_id=engine.stop_ids,
                                        pad_token_id=engine.tokenizer.pad_token_id)
        tokens += out.shape[1] - inputs["input_ids"].shape[1]
        engine.tokenizer.decode(out[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True)
    sync(engine.info.device)
    return time.perf_counter() - started, tokens


def decode(report: Report, args, engine, clock: Clock) -> None:
    from app.engine import GenerationRequest

    n = args.new_tokens
    prompts = prompts_for(engine, CONCURRENT)
    lengths = [len(engine.tokenizer(p, add_special_tokens=False)["input_ids"]) for p in prompts]
    report.line(f"prompts: {CONCURRENT} product caption prompts, {min(lengths)}-{max(lengths)} tokens "
                f"(mean {statistics.mean(lengths):.0f}); {n} new tokens each, greedy")
    greedy = [GenerationRequest(p, n, temperature=0.0) for p in prompts]
    for size in (1, 4):  # warm-up: the batch-1 and batched kernels of both paths are chosen before timing
        asyncio.run(_through_worker(engine, [GenerationRequest(p, 8, 0.0) for p in prompts[:size]], CONCURRENT))
    one_after_another(engine, prompts[:1], 8)
    report.line(f"{'mode':<46}{'seconds':>9}{'tokens':>8}{'tokens/s':>10}{'mean batch':>12}")

    def row(label, seconds, tokens, batch="-"):
        report.line(f"{label:<46}{seconds:>9.2f}{tokens:>8}{tokens / seconds:>10.1f}{batch:>12}")
        return tokens / seconds

    s, t, b = asyncio.run(_through_worker(engine, greedy[:1], CONCURRENT))
    single = row("product, 1 request", s, t, f"{b:.1f}")
    sync(args.device)
    started = time.perf_counter()
    t = engine.generate(greedy[:1])[0].completion_tokens
    sync(args.device)
    row("HFEngine.generate, 1 request, no worker", time.perf_counter() - started, t)
    s, t, b = asyncio.run(_through_worker(engine, greedy, CONCURRENT))
    batched = row(f"product, {CONCURRENT} concurrent", s, t, f"{b:.1f}")
    k = min(args.sequential, CONCURRENT)
    s, t = one_after_another(engine, prompts[:k], n)
    sequential = row(f"spec loop, generate per request ({k} of {CONCURRENT})", s, t)
    report.line(f"(the one-after-another loop runs at the same tokens/s for every request, so {k} requests measure "
                f"it; all {CONCURRENT} would take {CONCURRENT * n / sequential:.0f} s)")
    ratio = batched / sequential
    report.line(f"RESULT decode: {CONCURRENT} concurrent through the product = {ratio:.1f}x the one-after-another "
                f"loop (target >= 15x): {'PASS' if ratio >= 15 else 'FAIL'}")
    report.line(f"RESULT decode: single stream {single:.1f} tokens/s = {100 * single / BANDWIDTH_LIMIT_TOK_S:.1f}% "
                f"of the ~{BANDWIDTH_LIMIT_TOK_S} tokens/s bandwidth limit (H100 SXM, NF4 + bf16 head + LoRA)")
    if clock.left() > 60:
        d = engine.defaults
        sampled = [GenerationRequest(p, n, d.temperature, d.top_p, d.top_k, seed=i) for i, p in enumerate(prompts)]
        s, t, b = asyncio.run(_through_worker(engine, sampled, CONCURRENT))
        label = f"product, {CONCURRENT} concurrent, sampled (t={d.temperature} p={d.top_p} k={d.top_k})"
        report.line(f"{label}: {s:.2f} s, {t} tokens, {t / s:.1f} tokens/s, mean batch {b:.1f}; "
                    f"per-row sampling costs {100 * (1 - (t / s) / batched):.0f}% against greedy")
    _, peak = memory_gib(args.device)
    report.line(f"peak memory while decoding: {peak:.2f} GiB")


def adapters(report: Report, args, engine, base: Path, adapter: Path, scratch: Path) -> None:
    """The hot rollout on this shape: a retrained adapter swapped in (check, load, probe, release, as
    the service does it between two batches), then a batch mixing two adapters against one."""
    import torch
    from safetensors.torch import load_file, save_file

    from app.adapters import WEIGHTS_FILE, inspect_adapter
    from app.engine import GenerationRequest
    from app.settings import Settings

    retrained = scratch / "adapter-v2"  # the same shape, other weights: a retrained adapter
    shutil.copytree(adapter, retrained)
    weights = {k: v + 0.01 * torch.randn_like(v) for k, v in load_file(adapter / WEIGHTS_FILE).items()}
    save_file(weights, retrained / WEIGHTS_FILE)
    settings = Settings(base_model=str(base), device=args.device, _env_file=None)
    served = engine.adapters["default"]
    before, _ = memory_gib(args.device)
    sync(args.device)
    started = time.perf_counter()
    files = inspect_adapter("default", retrained, settings, replacing=served)
    checked = time.perf_counter() - started
    engine.install_adapter(files)
    sync(args.device)
    swap = time.perf_counter() - started
    free(args.device)
    after, _ = memory_gib(args.device)
    report.line(f"swap of the default adapter: files checked in {checked:.2f} s, loaded, probed and the old version "
                f"released in {swap - checked:.2f} s; allocated {before:.2f} -> {after:.2f} GiB")
    report.line(f"RESULT adapters: swap {swap:.2f} s on the generation thread, batches wait for it "
                f"(target <= 2 s): {'PASS' if swap <= 2 else 'FAIL'}")
    engine.install_adapter(inspect_adapter("b", adapter, settings))  # a second name beside the default
    prompts = prompts_for(engine, CONCURRENT)
    n = args.new_tokens
    one = [GenerationRequest(p, n, temperature=0.0) for p in prompts]
    mixed = [GenerationRequest(p, n, temperature=0.0, adapter="b" if i % 2 else None) for i, p in enumerate(prompts)]
    asyncio.run(_through_worker(engine, mixed[:4], CONCURRENT))  # warm-up
    s1, t1, _ = asyncio.run(_through_worker(engine, one, CONCURRENT))
    s2, t2, b2 = asyncio.run(_through_worker(engine, mixed, CONCURRENT))
    report.line(f"{CONCURRENT} concurrent, one adapter: {t1 / s1:.1f} tokens/s; half default, half `b`: "
                f"{t2 / s2:.1f} tokens/s (mean batch {b2:.1f})")
    report.line(f"RESULT adapters: a mixed-adapter batch runs at {t2 / s2 / (t1 / s1):.2f} of a one-adapter batch")


def _train_steps(model, optimizer, cfg, seq_len: int, steps: int, device: str) -> tuple[float, float]:
    """Median seconds per optimizer step (after one warm-up step) and peak memory in GiB."""
    import torch

    free(device)
    on_cuda = device.startswith("cuda")
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if on_cuda else torch.autocast("cpu", enabled=False)
    target, vocab, times = next(model.parameters()).device, model.config.vocab_size, []
    for step in range(steps + 1):
        sync(device)
        t0 = time.perf_counter()
        for _ in range(cfg.grad_accum):
            ids = torch.randint(0, vocab, (cfg.batch_size, seq_len), device=target)
            with autocast:
                loss = model(input_ids=ids, attention_mask=torch.ones_like(ids), labels=ids).loss
            (loss / cfg.grad_accum).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        sync(device)
        if step:  # the first step pays for allocation and kernel selection
            times.append(time.perf_counter() - t0)
    if not math.isfinite(loss.item()):
        raise RuntimeError(f"loss is {loss.item()} at {seq_len} tokens")
    return statistics.median(times), memory_gib(device)[1]


def qlora(report: Report, args, base: Path) -> None:
    import bitsandbytes as bnb
    import torch

    from training.config import TrainConfig
    from training.model import load_model, token_weighted_loss

    on_cuda = args.device.startswith("cuda")
    cfg = TrainConfig(base_model=str(base), load_in_4bit=True)  # every other value: the spec's defaults
    if cfg.optim != "paged_adamw_8bit":
        raise ValueError(f"the spec's optimizer is paged_adamw_8bit, config says {cfg.optim}")
    samples = SPEC_SAMPLES * SPEC_EPOCHS / (cfg.batch_size * cfg.grad_accum)  # optimizer steps' worth of samples
    results = {}
    for variant in ("product", "peft default"):
        free(args.device)
        started = time.perf_counter()
        model, _ = load_model(cfg, on_cuda)
        if variant == "peft default":  # what prepare_model_for_kbit_training alone leaves: fp32 copies
            model.get_input_embeddings().float()
            model.get_output_embeddings().float()
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
        model.train()
        params = [p for p in model.parameters() if p.requires_grad]
        optimizer = bnb.optim.PagedAdamW8bit(params, lr=cfg.learning_rate)
        head = model.get_output_embeddings().weight.dtype
        report.line(f"{variant}: training.model.load_model (NF4 + LoRA r{cfg.lora_r}, {sum(p.numel() for p in params):,} "
                    f"trainable, embeddings and head in {head}) {time.perf_counter() - started:.1f} s; gradient "
                    f"checkpointing, paged_adamw_8bit, batch {cfg.batch_size} x accumulation {cfg.grad_accum}, bf16 autocast")
        report.line(f"  {'tokens/sample':<15}{'step s':>9}{'tokens/s':>10}{'peak GiB':>10}{'213 samples (3 epochs)':>26}")
        for seq_len in args.seq_lens if variant == "product" else args.seq_lens[:1]:
            step_s, peak = _train_steps(model, optimizer, cfg, seq_len, args.steps, args.device)
            results[variant, seq_len] = (step_s, peak, samples * step_s)
            report.line(f"  {seq_len:<15}{step_s:>9.3f}{cfg.grad_accum * cfg.batch_size * seq_len / step_s:>10.0f}"
                        f"{peak:>10.2f}{samples * step_s / 60:>22.1f} min")
        if variant == "product":  # the no-grad evaluation pass the trainer runs between epochs
            ids = torch.randint(0, model.config.vocab_size, (args.seq_lens[0],)).tolist()
            loss, _ = token_weighted_loss(model, [{"input_ids": ids, "labels": ids}])
            report.line(f"  evaluation pass (token_weighted_loss): loss {loss:.3f}, finite {math.isfinite(loss)}")
        del model, optimizer, params
        free(args.device)
    longest = args.seq_lens[0]
    step_s, peak, whole = results["product", longest]
    report.line(f"RESULT qlora: peak {peak:.2f} GiB = {peak * 2**30 / 1e9:.2f} GB at {longest} tokens/sample "
                f"(target <= 10 GB, spec estimate ~10 GB): {'PASS' if peak * 2**30 / 1e9 <= 10 else 'FAIL'}")
    if ("peft default", longest) in results:
        report.line(f"RESULT qlora: bf16 frozen embeddings and head save "
                    f"{results['peft default', longest][1] - peak:.2f} GiB against peft's fp32 upcast")
    report.line(f"RESULT qlora: whole fine-tune ({SPEC_SAMPLES} samples x {SPEC_EPOCHS} epochs, every sample at "
                f"{longest} tokens, an upper bound) ~{whole / 60:.1f} min (target <= 3 min, spec: 20-30 min "
                f"on an A100): {'PASS' if whole <= 180 else 'FAIL'}")


def static_cache(report: Report, args, base: Path, adapter: Path, clock: Clock) -> None:
    """Single-stream decoding with a static KV cache, then with the forward pass compiled too.

    transformers compiles by itself only for quantizers it marks compileable, and bitsandbytes
    4-bit is not one, so the compiled variant wraps the forward in torch.compile by hand."""
    import torch

    engine = load_engine(report, args, base, adapter)
    prompt = prompts_for(engine, 1)[0]
    inputs = engine.tokenizer(prompt, return_tensors="pt", add_special_tokens=False).to(engine.info.device)
    kwargs = dict(max_new_tokens=args.new_tokens, do_sample=False, temperature=None, top_p=None, top_k=None,
                  eos_token_id=engine.stop_ids, pad_token_id=engine.tokenizer.pad_token_id)

    def calls(label: str, count: int, **extra) -> None:
        timings = []
        for attempt in range(count):  # the first call pays for set-up (and compilation)
            if attempt and clock.left() < 20:
                break
            sync(args.device)
            t0 = time.perf_counter()
            with torch.inference_mode():
                out = engine.model.generate(**inputs, **kwargs, **extra)
            sync(args.device)
            timings.append((time.perf_counter() - t0, out.shape[1] - inputs["input_ids"].shape[1]))
            report.line(f"{label}, call {attempt + 1}: {timings[-1][0]:.2f} s, {timings[-1][1]} tokens, "
                        f"{timings[-1][1] / timings[-1][0]:.1f} tokens/s")
        if len(timings) > 1:
            s, t = timings[-1]
            report.line(f"RESULT {label}: single stream {t / s:.1f} tokens/s (first call {timings[0][0]:.1f} s)")

    calls("dynamic cache (the default)", 2)  # the baseline, timed again here: shared machines drift
    calls("static cache", 2, cache_implementation="static")
    inner = None
    if not args.device.startswith("cuda"):
        report.line("static cache + torch.compile: CUDA only (on a CPU it would time the compiler, not decoding)")
    elif clock.left() > 90:
        inner = engine.model.get_base_model()
        # mode="reduce-overhead" fails here: the 4-bit and LoRA layers break the graph inside
        # each decoder layer, and the CUDA-graph partitions, shared by all 28 layers, overwrite
        # each other's outputs (H100 run of 2026-11-28). Kernel fusion alone is what remains.
        inner.forward = torch.compile(inner.forward, dynamic=False)
        calls("static cache + torch.compile", 3, cache_implementation="static")
    else:
        report.line(f"static cache + torch.compile: skipped, {clock.left():.0f} s of budget left")
    engine = inner = None  # drop the model before the memory is handed back
    free(args.device)


def main(args) -> Path:
    import torch

    clock = Clock(args.budget_s)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("--device cuda but torch sees no GPU; use --device cpu --tiny for the dry run")
    stamp = datetime.date.today().isoformat()
    name = f"gpu-{stamp}.txt" if args.device.startswith("cuda") else f"gpu-{stamp}-cpu-dry-run.txt"
    report = Report(Path(args.out) / name)
    report.line(f"# bench/gpu_check.py: NF4 load, decode and QLoRA of {'the tiny model' if args.tiny else 'the real Qwen2.5-7B shape'}, random weights")
    report.section("versions", versions, args)
    scratch = Path(tempfile.mkdtemp(prefix="gpu-check-", dir=args.scratch))
    try:
        built = report.section("build", build_checkpoint, args, scratch)
        if built is None:
            return report.path
        base, adapter = built
        engine = report.section("load", load_engine, args, base, adapter)
        if engine is not None:
            report.section("decode", decode, args, engine, clock)
            report.section("adapters", adapters, args, engine, base, adapter, scratch)
            del engine
            free(args.device)
        report.section("qlora", qlora, args, base)
        if args.static_cache and clock.left() > 150:
            report.section("static cache", static_cache, args, base, adapter, clock)
        else:
            report.line(f"\n## static cache\nskipped: {'off' if not args.static_cache else f'{clock.left():.0f} s of budget left'}")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    report.line(f"\ndone in {args.budget_s - clock.left():.0f} s")
    return report.path


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda", help="cuda, or cpu for the dry run")
    parser.add_argument("--tiny", action="store_true", help="the tiny model's shape instead of the 7B's")
    parser.add_argument("--tokenizer", default=str(REPO / "models" / "tiny"), help="tokenizer folder (built if missing)")
    parser.add_argument("--out", default=str(REPO / "bench" / "results"), help="folder for the results file")
    parser.add_argument("--scratch", default=None, help="where the random checkpoint is written (~16 GB for 7B)")
    parser.add_argument("--new-tokens", type=int, default=128, help="tokens generated per request")
    parser.add_argument("--sequential", type=int, default=3, help="requests timed in the one-after-another loop")
    parser.add_argument("--steps", type=int, default=3, help="optimizer steps measured per length, after one warm-up")
    parser.add_argument("--seq-lens", type=int, nargs="+", default=[1024, 512], help="tokens per training sample")
    parser.add_argument("--budget-s", type=float, default=450, help="optional steps are skipped past this")
    parser.add_argument("--no-static-cache", dest="static_cache", action="store_false", help="skip the compile variant")
    return parser.parse_args(argv)


if __name__ == "__main__":
    print(main(parse_args()))
