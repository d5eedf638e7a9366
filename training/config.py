"""Training configuration: a YAML file of the fields below, then command-line overrides."""

from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import yaml

SPEC_CONFIG = Path(__file__).resolve().parent / "configs" / "qwen2.5-7b-qlora.yaml"


@dataclass
class TrainConfig:
    base_model: str = "Qwen/Qwen2.5-7B-Instruct"  # hub name or local folder
    data: Path = Path("training/data/train_augmented.jsonl")  # training split
    val_data: Path = Path("training/data/val.jsonl")  # evaluated every epoch; drives early stopping
    test_data: Path = Path("training/data/test.jsonl")  # scored once, at the end
    brands: Path = Path("brands/brands.json")  # brand facts retrieved into every prompt
    output: Path = Path("outputs/adapter")  # adapter, tokenizer, eval_results.json, logs
    load_in_4bit: bool | None = None  # NF4 base weights; None = on when CUDA is available
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    target_modules: list[str] = field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    )
    max_seq_length: int = 1024
    context_token_budget: int = 384
    epochs: float = 3
    batch_size: int = 1
    grad_accum: int = 4
    learning_rate: float = 2e-4
    warmup_steps: int = 10
    optim: str = "paged_adamw_8bit"
    gradient_checkpointing: bool = True
    early_stopping_patience: int = 2
    seed: int = 42
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
    """The spec's config, then `path` (only what differs), then non-None `overrides`."""
    values: dict = {}
    for source in filter(None, [SPEC_CONFIG, path]):
        source = Path(source)
        if not source.is_file():
            raise ValueError(f"config file {source} not found; see training/configs/ for examples")
        loaded = yaml.safe_load(source.read_text(encoding="utf-8")) or {}
        if not isinstance(loaded, dict):
            raise ValueError(f"{source}: expected a mapping of config fields")
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
