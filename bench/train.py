"""Training speed and memory of the spec's LoRA configuration, with and without gradient
checkpointing, side by side in one run.

    python bench/train.py --model models/tiny                                  # CPU, tiny model
    python bench/train.py --reference-config ../shared/reference/qwen2.5-7b-instruct/config.json --4bit
                                                                               # GPU: the real 7B shape, random weights

With --reference-config the real architecture is built with random weights (speed and
memory do not depend on the values), saved once to a scratch folder, and loaded through
the same code path as `python -m training train`.
"""

import argparse
import gc
import json
import multiprocessing
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

SEQ_LEN = 512  # tokens per sample: the dataset's typical length with the real tokenizer
STEPS = 5  # optimizer steps measured, after one warm-up step
GRAD_ACCUM = 4  # the spec's batch 1 x accumulation 4


def build_reference(config_path: Path, folder: Path) -> str:
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    config = Qwen2Config(**{k: v for k, v in json.loads(config_path.read_text()).items() if k != "architectures"})
    with torch.device("cpu"):
        model = Qwen2ForCausalLM(config).to(torch.bfloat16)
    model.save_pretrained(folder)
    del model
    gc.collect()
    return str(folder)


def measure(model_path: str, four_bit: bool, checkpointing: bool, seq_len: int, steps: int) -> dict:
    import torch

    from training.config import TrainConfig
    from training.model import load_model

    on_cuda = torch.cuda.is_available()
    cfg = TrainConfig(base_model=model_path, load_in_4bit=four_bit, gradient_checkpointing=checkpointing)
    model, _ = load_model(cfg, on_cuda)
    if checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    if on_cuda:
        import bitsandbytes as bnb

        optimizer = bnb.optim.PagedAdamW8bit(params, lr=2e-4)  # the spec's paged_adamw_8bit
        torch.cuda.reset_peak_memory_stats()
    else:
        optimizer = torch.optim.AdamW(params, lr=2e-4)
    device = next(model.parameters()).device
    vocab = model.config.vocab_size
    times = []
    for step in range(steps + 1):
        if on_cuda:
            torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(GRAD_ACCUM):
            ids = torch.randint(0, vocab, (1, seq_len), device=device)
            model(input_ids=ids, attention_mask=torch.ones_like(ids), labels=ids).loss.div(GRAD_ACCUM).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if on_cuda:
            torch.cuda.synchronize()
        if step:  # the first step pays for allocation and kernel selection
            times.append(time.perf_counter() - start)
    step_s = sorted(times)[len(times) // 2]
    peak = torch.cuda.max_memory_allocated() / 2**30 if on_cuda else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    trainable = sum(p.numel() for p in params)
    del model, optimizer
    gc.collect()
    if on_cuda:
        torch.cuda.empty_cache()
    return {"step_s": step_s, "tokens_s": GRAD_ACCUM * seq_len / step_s, "peak_gib": peak, "trainable": trainable}


def main(args) -> None:
    import torch

    model_path = args.model
    scratch = None
    if args.reference_config:
        scratch = tempfile.TemporaryDirectory(prefix="qwen-random-")
        model_path = build_reference(Path(args.reference_config), Path(scratch.name))
    on_cuda = torch.cuda.is_available()
    device = torch.cuda.get_device_name() if on_cuda else "cpu"
    rows = {}
    # Each configuration in a fresh process: peak memory is then its own, not the sum of both.
    ctx = multiprocessing.get_context("spawn")
    for label, ckpt in (("checkpointing on (spec)", True), ("checkpointing off", False)):
        with ctx.Pool(1) as pool:
            rows[label] = pool.apply(measure, (model_path, args.four_bit, ckpt, args.seq_len, args.steps))
    memory = "peak GPU memory allocated" if on_cuda else "process peak RSS"
    print(f"model {args.reference_config or args.model} on {device}, {'NF4 4-bit' if args.four_bit else 'full precision'}, "
          f"LoRA r16 on 7 projections, batch 1 x accumulation {GRAD_ACCUM}, {args.seq_len} tokens/sample, "
          f"median of {args.steps} steps")
    print(f"{'configuration':<26}{'step s':>9}{'tokens/s':>11}{'peak GiB':>10}{'trainable':>12}")
    for label, r in rows.items():
        print(f"{label:<26}{r['step_s']:>9.3f}{r['tokens_s']:>11.1f}{r['peak_gib']:>10.2f}{r['trainable']:>12,}")
    on, off = rows["checkpointing on (spec)"], rows["checkpointing off"]
    print(f"checkpointing: {on['tokens_s'] / off['tokens_s']:.2f}x the speed, {on['peak_gib'] / off['peak_gib']:.2f}x the memory ({memory})")
    if on_cuda and args.reference_config:
        verdict = "within" if on["peak_gib"] <= 10 else "above"
        print(f"spec claim ~8-10 GB of VRAM for the QLoRA run: measured {on['peak_gib']:.2f} GiB, {verdict} it")
    if scratch:
        scratch.cleanup()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="models/tiny", help="hub name or local folder")
    parser.add_argument("--reference-config", default=None, help="config.json of the real model: random weights")
    parser.add_argument("--4bit", dest="four_bit", action="store_true", help="NF4 base weights (QLoRA)")
    parser.add_argument("--seq-len", type=int, default=SEQ_LEN, help="tokens per sample")
    parser.add_argument("--steps", type=int, default=STEPS, help="optimizer steps measured")
    main(parser.parse_args())
