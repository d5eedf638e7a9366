"""QLoRA fine-tune of the base model on the RAG-formatted dataset.

    python -m training train                                    # the spec's run: TrainConfig's defaults
    python -m training train --config training/configs/tiny-cpu.yaml --epochs 1   # CPU smoke run

Everything is validated before anything is written. The run works in OUTPUT.partial/
(checkpoints live there, so --resume continues from them) and becomes OUTPUT/ only when
it has finished: a failed run never leaves a half-written adapter where the service looks.
Beside the adapter goes prompt_contract.json (app/prompt_contract.py): the context budget,
max_seq_length and prompt format it was trained on, which the service and evaluate check.
"""

import json
import math
import resource
import shutil
import time
from pathlib import Path

from app.adapters import replace_folder
from app.prompt_contract import current_contract, write_contract
from training.config import TrainConfig
from training.formatting import Formatter, load_brands
from training.model import compute_dtype, load_model, token_weighted_loss
from training.records import load_records, sha256_of


def _loss_curve(history: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train = [(h["step"], h["loss"]) for h in history if "loss" in h]
    val = [(h["step"], h["eval_loss"]) for h in history if "eval_loss" in h]
    fig, ax = plt.subplots(figsize=(7, 4))
    if train:
        ax.plot(*zip(*train), label="train loss")
    if val:
        ax.plot(*zip(*val), marker="o", label="validation loss")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss")
    ax.set_title("AI Director QLoRA fine-tune")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def precision_args(dtype) -> dict:
    """SFTConfig's mixed-precision flags for `compute_dtype`: bf16 or fp16 autocast, neither in fp32."""
    import torch

    return {"bf16": dtype == torch.bfloat16, "fp16": dtype == torch.float16}


def run(cfg: TrainConfig, resume: bool = False, callbacks: tuple = ()) -> Path:
    """Train, evaluate and write the adapter folder; returns its path."""
    import torch
    from transformers import AutoTokenizer, EarlyStoppingCallback
    from trl import SFTConfig, SFTTrainer

    started = time.time()
    on_cuda = torch.cuda.is_available()
    # 1. Everything a user can get wrong is checked before the first byte is written.
    tokenizer = AutoTokenizer.from_pretrained(cfg.base_model)
    if tokenizer.pad_token is None or tokenizer.pad_token_id == tokenizer.eos_token_id:
        tokenizer.pad_token = "<|endoftext|>"  # never eos: masking pad would also mask <|im_end|>
    formatter = Formatter(tokenizer, load_brands(cfg.brands), cfg.context_token_budget, cfg.max_seq_length)
    # Taken now, from the code that formats the data below: the service and evaluate check it.
    contract = current_contract(cfg.context_token_budget, cfg.max_seq_length, cfg.base_model)
    splits, dropped = {}, {}
    for name, path in (("train", cfg.data), ("val", cfg.val_data), ("test", cfg.test_data)):
        splits[name], dropped[name] = formatter.dataset(load_records(path), str(path), cfg.drop_long)

    staging = cfg.output.with_name(cfg.output.name + ".partial")
    if staging.exists() and not resume:
        shutil.rmtree(staging)
    staging.mkdir(parents=True, exist_ok=True)

    # 2. The model: 4-bit base + LoRA on every projection.
    torch.manual_seed(cfg.seed)
    model, four_bit = load_model(cfg, on_cuda)
    from datasets import Dataset

    args = SFTConfig(
        output_dir=str(staging),
        num_train_epochs=cfg.epochs,
        per_device_train_batch_size=cfg.batch_size,
        per_device_eval_batch_size=cfg.batch_size,
        gradient_accumulation_steps=cfg.grad_accum,
        learning_rate=cfg.learning_rate,
        warmup_steps=cfg.warmup_steps,
        optim=cfg.optim,
        gradient_checkpointing=cfg.gradient_checkpointing,
        max_length=cfg.max_seq_length,
        eval_strategy="epoch",
        save_strategy="epoch",
        load_best_model_at_end=True,  # the best validation loss wins, not the last epoch
        metric_for_best_model="eval_loss",
        greater_is_better=False,
        save_total_limit=2,
        logging_steps=1,
        report_to=["tensorboard"],
        **precision_args(compute_dtype(on_cuda)),  # what load_model computes in: bf16, or fp16 on a T4
        use_cpu=not on_cuda,
        seed=cfg.seed,
        dataloader_pin_memory=on_cuda,
    )
    trainer = SFTTrainer(
        model=model,
        args=args,
        train_dataset=Dataset.from_list(splits["train"]),
        eval_dataset=Dataset.from_list(splits["val"]),
        processing_class=tokenizer,
        callbacks=[EarlyStoppingCallback(early_stopping_patience=cfg.early_stopping_patience), *callbacks],
    )
    if on_cuda:
        torch.cuda.reset_peak_memory_stats()
    last = _last_checkpoint(staging) if resume else None
    result = trainer.train(resume_from_checkpoint=last)

    # 3. Scores and artefacts.
    # The best checkpoint is loaded and its validation loss already known: no second pass.
    val_loss = trainer.state.best_metric
    if val_loss is None:
        val_loss = trainer.evaluate()["eval_loss"]
    test_loss, test_tokens = token_weighted_loss(trainer.model, splits["test"])
    trainer.model.save_pretrained(staging)
    tokenizer.save_pretrained(staging)
    _loss_curve(trainer.state.log_history, staging / "loss_curve.png")
    peak_mb = (torch.cuda.max_memory_allocated() if on_cuda else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024) / 2**20
    report = {
        "train_loss": result.training_loss,
        "val_loss": val_loss,
        "test_loss": test_loss,
        "test_perplexity": math.exp(test_loss),
        "samples": {k: len(v) for k, v in splits.items()},
        "dropped_too_long": dropped,
        "tokens": {k: sum(len(e["input_ids"]) for e in v) for k, v in splits.items()},
        "test_label_tokens": test_tokens,
        "epochs_run": trainer.state.epoch,
        "best_checkpoint": Path(trainer.state.best_model_checkpoint or "").name or None,
        "resumed_from": Path(last).name if last else None,
        "base_model": cfg.base_model,
        "quantization": "nf4" if four_bit else None,
        "device": "cuda" if on_cuda else "cpu",
        "peak_memory_mb": round(peak_mb, 1),
        "peak_memory_kind": "cuda max_memory_allocated" if on_cuda else "process max RSS",
        "duration_s": round(time.time() - started, 1),
        "datasets_sha256": {k: sha256_of(p) for k, p in (("train", cfg.data), ("val", cfg.val_data), ("test", cfg.test_data), ("brands", cfg.brands))},
        "config": cfg.to_dict(),
        "prompt_contract": contract.model_dump(),
    }
    (staging / "eval_results.json").write_text(json.dumps(report, indent=2, ensure_ascii=False), encoding="utf-8")
    write_contract(staging, contract)  # in the staging folder: it moves into place with the adapter
    for checkpoint in staging.glob("checkpoint-*"):
        shutil.rmtree(checkpoint)  # resumable state is only worth keeping until the run succeeds

    # 4. The swap: the old adapter stays in place until the new one is complete.
    replace_folder(staging, cfg.output)
    print(f"adapter written to {cfg.output}: test loss {test_loss:.3f}, perplexity {math.exp(test_loss):.2f}, "
          f"{report['duration_s']} s")
    return cfg.output


def _last_checkpoint(staging: Path) -> str | None:
    checkpoints = sorted(staging.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[-1]))
    return str(checkpoints[-1]) if checkpoints else None
