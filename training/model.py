"""The model being fine-tuned: the base (4-bit NF4 by default) with LoRA on every projection,
the precision it computes in, and the token-weighted loss that training and evaluation report.

Kept apart from the training loop so that benchmarks can load exactly what
`python -m training train` trains, without the dataset and retrieval stack.
"""

from contextlib import nullcontext

from app.engine import compute_dtype  # one precision rule for serving and training
from training.config import TrainConfig

IGNORE = -100  # label of a token that carries no loss


def load_model(cfg: TrainConfig, on_cuda: bool):
    """The PEFT model ready to train, and whether its base is 4-bit."""
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    four_bit = cfg.load_in_4bit if cfg.load_in_4bit is not None else on_cuda
    dtype = compute_dtype(on_cuda)
    kwargs: dict = {"dtype": dtype}
    if four_bit:
        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=dtype
        )
        kwargs["device_map"] = {"": "cuda" if on_cuda else "cpu"}
    model = AutoModelForCausalLM.from_pretrained(cfg.base_model, **kwargs)
    if four_bit:
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=cfg.gradient_checkpointing)
        if on_cuda:
            keep_frozen_embeddings_in_compute_dtype(model, dtype)
        else:
            disable_cpu_repack(model)
    lora = LoraConfig(
        r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
        target_modules=list(cfg.target_modules), task_type="CAUSAL_LM",
    )
    return get_peft_model(model, lora), four_bit


def keep_frozen_embeddings_in_compute_dtype(model, dtype) -> None:
    """Undo peft's fp32 upcast of the input embeddings and the output head.

    Both are frozen, and under autocast the head's matmul runs in the compute dtype anyway, from
    a transient copy of the fp32 weight. On Qwen2.5-7B (152,064 x 3,584 each) the fp32 copies
    cost 2 x 2.2 GB. Measured on an H100 (bf16) at 1024 tokens per sample, the peak drops from
    11.1 to 8.0 GiB and the optimizer step from 3.2 to 2.5 s (bench/results/gpu-2026-11-28.txt).
    The small norm weights stay fp32.
    """
    for module in (model.get_input_embeddings(), model.get_output_embeddings()):
        if module is not None:
            module.to(dtype)


def disable_cpu_repack(model) -> None:
    """bitsandbytes on AVX512-BF16 CPUs repacks 4-bit weights for inference at the first
    no-grad forward (an evaluation), and the next training step then fails with an in-place
    error on a leaf view. Keeping the training layout avoids it; other CPUs are unaffected."""
    import bitsandbytes as bnb

    for module in model.modules():
        if isinstance(module, bnb.nn.Linear4bit):
            module.support_avx512bf16_for_cpu = False


def token_weighted_loss(model, examples: list[dict]) -> tuple[float, int]:
    """Mean cross-entropy over every label token of `examples`, and the token count.

    On CUDA it runs under autocast in `compute_dtype`, as the trainer's own evaluation does, so
    the test loss is computed the way the validation loss was."""
    import torch

    total, count = 0.0, 0
    model.eval()
    device = next(model.parameters()).device
    on_cuda = device.type == "cuda"
    autocast = torch.autocast("cuda", dtype=compute_dtype(on_cuda)) if on_cuda else nullcontext()
    with torch.no_grad(), autocast:
        for ex in examples:
            ids = torch.tensor([ex["input_ids"]], device=device)
            labels = torch.tensor([ex["labels"]], device=device)
            logits = model(input_ids=ids).logits[:, :-1].float()
            target = labels[:, 1:]
            loss = torch.nn.functional.cross_entropy(
                logits.reshape(-1, logits.shape[-1]), target.reshape(-1), ignore_index=IGNORE, reduction="sum"
            )
            total += float(loss)
            count += int((target != IGNORE).sum())
    return total / max(count, 1), count
