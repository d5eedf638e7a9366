"""Training configuration: the dataclass defaults below are the specification's QLoRA run.

A YAML file passed with --config holds only the fields an experiment changes
(training/configs/tiny-cpu.yaml); command-line flags override both.
"""

from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import yaml


@dataclass
class TrainConfig:
    base_model: str = "Qwen/Qwen2.5-7B-Instruct"  # hub name or local folder
    data: Path = Path("training/data/train_augmented.jsonl")  # 31 originals + 40 synthetic = 71 samples
    val_data: Path = Path("training/data/val.jsonl")  # evaluated every epoch; drives early stopping
    test_data: Path = Path("training/data/test.jsonl")  # scored once, at the end
    brands: Path = Path("brands/brands.json")  # brand facts retrieved into every prompt
    output: Path = Path("outputs/adapter")  # adapter, tokenizer, eval_results.json, logs
    # True rather than "on when CUDA is available": without a GPU the 7B would otherwise load in
    # fp32 (~30 GB) and train a different model than the spec's. null = 4-bit only with CUDA.
    load_in_4bit: bool | None = True  # NF4 base: 8.0 GiB peak measured on an H100, fits a 16 GB T4
    lora_r: int = 16
    lora_alpha: int = 32  # scale alpha / r = 32 / 16 = 2
    lora_dropout: float = 0.05
    target_modules: list[str] = field(  # every attention and MLP projection of Qwen2
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    )
    max_seq_length: int = 1024  # prompt + brand block + answer; longer samples fail unless drop_long
    context_token_budget: int = 384  # brand block; in prompt_contract.json, so the service refuses another budget
    epochs: float = 3  # 71 samples / 4 per step = 18 optimizer steps an epoch, 54 in all
    batch_size: int = 1  # per device: one 1024-token sample of the 7B at a time keeps the peak low
    grad_accum: int = 4  # 1 x 4 = 4 samples per optimizer step
    learning_rate: float = 2e-4  # only the ~40 M LoRA weights train, which tolerate a high rate
    warmup_steps: int = 10  # the first 10 of 54 optimizer steps
    optim: str = "paged_adamw_8bit"  # 8-bit optimizer state, paged to CPU memory on spikes
    gradient_checkpointing: bool = True  # recompute activations in backward: memory for time
    early_stopping_patience: int = 2  # epochs without a better val loss before stopping
    seed: int = 42  # LoRA initialisation, data order, dropout
    drop_long: bool = False  # skip samples over max_seq_length instead of failing

    def validate(self) -> "TrainConfig":
        checks = [
            (self.lora_r > 0, "lora_r must be positive"),
            (self.epochs > 0, "epochs must be positive"),
            (self.batch_size > 0 and self.grad_accum > 0, "batch_size and grad_accum must be positive"),
            (0 < self.learning_rate < 1, "learning_rate must be between 0 and 1"),
            (0 <= self.lora_dropout < 1, "lora_dropout must be in [0, 1)"),
            (self.context_token_budget < self.max_seq_length, "context_token_budget must be below max_seq_length"),
            (bool(self.target_modules), "target_modules must name at least one module"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(f"training config: {message}")
        return self

    def to_dict(self) -> dict:
        return {k: str(v) if isinstance(v, Path) else v for k, v in asdict(self).items()}


def load_config(path: Path | None, overrides: dict) -> TrainConfig:
    """The dataclass defaults, then `path` (only what differs), then non-None `overrides`."""
    values: dict = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ValueError(f"config file {path} not found; see training/configs/ for examples")
        loaded = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        if not isinstance(loaded, dict):
            raise ValueError(f"{path}: expected a mapping of config fields")
        values.update(loaded)
    values.update({k: v for k, v in overrides.items() if v is not None})
    known = {f.name: f for f in fields(TrainConfig)}
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise ValueError(f"unknown training config field(s): {', '.join(unknown)}; known: {', '.join(known)}")
    for name in ("data", "val_data", "test_data", "brands", "output"):
        if name in values:
            values[name] = Path(values[name])
    return TrainConfig(**values).validate()
