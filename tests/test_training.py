"""Training on the tiny model: formatting equals serving, labels, errors, and a real run."""

import json
import math
import subprocess
import sys

import pytest
import torch
from fastapi.testclient import TestClient

from app.main import create_app
from app.settings import Settings
from conftest import REFERENCE, REPO
from test_api import wait_ready
from training.config import load_config
from training.formatting import IGNORE, Formatter, load_brands
from training.records import DatasetError, load_records

DATA = REPO / "training" / "data"


@pytest.fixture(scope="module")
def formatter(tiny_tokenizer):
    return Formatter(tiny_tokenizer, load_brands(REPO / "brands" / "brands.json"), 384, 1024)


def test_augment_is_deterministic_71_from_11(tmp_path):
    out = tmp_path / "aug.jsonl"
    result = subprocess.run([sys.executable, "-m", "training", "augment", "--out", str(out)], cwd=REPO,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "71 samples from 11 brands" in result.stdout
    assert out.read_bytes() == (DATA / "train_augmented.jsonl").read_bytes()  # the committed file is reproducible
    records = load_records(out)
    unseen = {r.brand for r in load_records(DATA / "test_unseen.jsonl")}
    assert len({r.brand for r in records}) == 11 and not unseen & {r.brand for r in records}
    assert len({(r.task, r.brand, r.context or r.message or str(r.objectives)) for r in records}) == 71


@pytest.mark.parametrize("split", ["train", "test_unseen"])
def test_training_prompt_equals_the_services_dry_run(formatter, tiny_model_dir, tiny_tokenizer, split):
    """Token for token: the adapter is trained on exactly the prompt the service sends."""
    from fakes import FakeEngine

    records = load_records(DATA / f"{split}.jsonl")
    settings = Settings(brands_path=REPO / "brands" / "brands.json", base_model=str(tiny_model_dir), _env_file=None)
    app = create_app(settings, engine_factory=lambda s: FakeEngine(tiny_tokenizer))
    paths = {"caption": "/caption", "adapt_voice": "/adapt-voice", "brief": "/brief"}
    with TestClient(app) as client:
        wait_ready(client)
        for record in records[:6]:
            body = {"brand": record.brand, "dry_run": True, **record.request_fields()}
            served = client.post(paths[record.task], json=body).json()["prompt"]
            trained = formatter.prompt(record)
            assert tiny_tokenizer(trained)["input_ids"] == tiny_tokenizer(served)["input_ids"]


def test_labels_cover_the_assistant_turn_only(formatter, tiny_tokenizer):
    import jinja2

    record = load_records(DATA / "train.jsonl")[0]
    example = formatter.example(record)
    ids, labels = example["input_ids"], example["labels"]
    messages = formatter.messages(record)
    template = jinja2.Environment(trim_blocks=True, lstrip_blocks=True).from_string(
        (REFERENCE / "chat_template.jinja").read_text(encoding="utf-8"))
    reference = template.render(messages=[*messages, {"role": "assistant", "content": record.output}])
    assert ids == tiny_tokenizer(reference, add_special_tokens=False)["input_ids"]
    first = next(i for i, label in enumerate(labels) if label != IGNORE)
    assert all(label == IGNORE for label in labels[:first])
    assert tiny_tokenizer.decode(ids[:first]).endswith("<|im_start|>assistant\n")
    trained = tiny_tokenizer.decode([t for t in labels if t != IGNORE])
    assert trained == record.output + "<|im_end|>\n"  # the answer and its end, nothing else
    im_end = tiny_tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert labels.count(im_end) == 1 and tiny_tokenizer.pad_token_id != im_end


def test_plain_alpaca_record_still_formats(formatter, tmp_path):
    path = tmp_path / "plain.jsonl"
    path.write_text(json.dumps({"instruction": "เขียนแคปชั่น", "input": "ร้านกาแฟ", "output": "กาแฟหอม ☕"}) + "\n")
    example = formatter.example(load_records(path)[0])
    assert sum(label != IGNORE for label in example["labels"]) > 0


@pytest.mark.parametrize("content,needle", [
    ('{"instruction": "x", "output": "y"}\n{not json}\n', ":2: invalid JSON"),
    ('{"instruction": "x"}\n', "field 'output' is required"),
    ("\n\n", "no records"),
    ('{"instruction": "x", "output": "y", "task": "caption"}\n', "'task' and 'brand' go together"),
])
def test_bad_dataset_lines_are_named(tmp_path, content, needle):
    path = tmp_path / "bad.jsonl"
    path.write_text(content)
    with pytest.raises(DatasetError, match=needle):
        load_records(path)


def test_unknown_brand_in_data_is_an_error(formatter, tmp_path):
    path = tmp_path / "x.jsonl"
    path.write_text(json.dumps({"instruction": "i", "output": "o", "task": "caption", "brand": "NoSuchBrand",
                                "context": "launch"}) + "\n")
    with pytest.raises(DatasetError, match="NoSuchBrand.*not in brands.json"):
        formatter.dataset(load_records(path), str(path))


def test_too_long_sample_fails_or_is_dropped(tiny_tokenizer, tmp_path):
    short = Formatter(tiny_tokenizer, load_brands(REPO / "brands" / "brands.json"), 64, 300)
    records = load_records(DATA / "val.jsonl")
    with pytest.raises(DatasetError, match="over max_seq_length 300.*--drop-long"):
        short.dataset(records, "val.jsonl")
    with pytest.raises(DatasetError, match="every sample is over"):
        short.dataset(records, "val.jsonl", drop_long=True)


def run_train(*args, timeout=600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "training", "train", *map(str, args)], cwd=REPO,
                          capture_output=True, text=True, timeout=timeout)


def test_bad_input_exits_nonzero_and_writes_nothing(tiny_model_dir, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"instruction": "x", "output": "y"}\n{oops\n')
    out = tmp_path / "adapter"
    result = run_train("--config", REPO / "training/configs/tiny-cpu.yaml", "--base-model", tiny_model_dir,
                       "--data", bad, "--output", out)
    assert result.returncode == 1 and f"{bad}:2: invalid JSON" in result.stderr
    assert not out.exists() and not (tmp_path / "adapter.partial").exists()


def test_config_errors_are_clear(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("lora_rank: 8\n")
    with pytest.raises(ValueError, match="unknown training config field.*lora_rank"):
        load_config(cfg, {})
    spec = load_config(None, {})
    assert (spec.lora_r, spec.lora_alpha, spec.lora_dropout, spec.max_seq_length) == (16, 32, 0.05, 1024)
    assert (spec.batch_size, spec.grad_accum, spec.learning_rate, spec.warmup_steps) == (1, 4, 2e-4, 10)
    assert spec.optim == "paged_adamw_8bit" and spec.gradient_checkpointing and spec.epochs == 3
    assert len(spec.target_modules) == 7 and spec.load_in_4bit is True


def test_the_dataclass_defaults_are_the_spec_run():
    """One source of defaults: TrainConfig itself, with nothing layered under it."""
    from training.config import TrainConfig

    spec = TrainConfig()
    assert spec.base_model == "Qwen/Qwen2.5-7B-Instruct"
    assert (spec.lora_r, spec.lora_alpha, spec.lora_dropout) == (16, 32, 0.05)
    assert spec.target_modules == ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    assert (spec.max_seq_length, spec.epochs, spec.batch_size, spec.grad_accum) == (1024, 3, 1, 4)
    assert (spec.learning_rate, spec.warmup_steps, spec.optim) == (2e-4, 10, "paged_adamw_8bit")
    assert spec.gradient_checkpointing and spec.load_in_4bit is True  # QLoRA on every device
    assert load_config(None, {}) == spec
    assert not (REPO / "training/configs/qwen2.5-7b-qlora.yaml").exists()  # no second copy to drift


def test_a_yaml_changes_exactly_the_fields_it_lists(tmp_path):
    import yaml

    from training.config import TrainConfig

    tiny_yaml = REPO / "training/configs/tiny-cpu.yaml"
    listed = set(yaml.safe_load(tiny_yaml.read_text(encoding="utf-8")))
    tiny, spec = load_config(tiny_yaml, {}).to_dict(), TrainConfig().to_dict()
    assert {k for k in spec if tiny[k] != spec[k]} == listed  # and it restates no default
    assert tiny["load_in_4bit"] is False
    one = tmp_path / "one.yaml"
    one.write_text("lora_r: 8\n")
    assert load_config(one, {"epochs": 1}) == TrainConfig(lora_r=8, epochs=1)
    with pytest.raises(ValueError, match="config file .*missing.yaml not found; see training/configs/"):
        load_config(tmp_path / "missing.yaml", {})


def test_precision_is_fp16_on_a_gpu_without_bf16(monkeypatch, tiny_model_dir):
    """The T4 case, decided without a GPU: weights, 4-bit compute, trainer flags and autocast agree."""
    from transformers import AutoModelForCausalLM

    from training.model import compute_dtype, keep_frozen_embeddings_in_compute_dtype
    from training.train import precision_args

    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: including_emulation)
    assert compute_dtype(on_cuda=True) == torch.float16  # emulated bf16 does not count
    assert precision_args(compute_dtype(on_cuda=True)) == {"bf16": False, "fp16": True}
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: False)
    assert compute_dtype(on_cuda=True) == torch.float16
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: True)
    assert compute_dtype(on_cuda=True) == torch.bfloat16
    assert precision_args(torch.bfloat16) == {"bf16": True, "fp16": False}
    assert compute_dtype(on_cuda=False) == torch.float32
    assert precision_args(torch.float32) == {"bf16": False, "fp16": False}

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    keep_frozen_embeddings_in_compute_dtype(model, torch.float16)
    assert model.get_input_embeddings().weight.dtype == torch.float16
    assert model.get_output_embeddings().weight.dtype == torch.float16


@pytest.fixture(scope="module")
def trained_adapter(tiny_model_dir, tmp_path_factory):
    """A real CLI run on a slice of the data with a learning rate high enough to move weights."""
    folder = tmp_path_factory.mktemp("train")
    data = folder / "train.jsonl"
    data.write_text("".join((DATA / "train_augmented.jsonl").read_text(encoding="utf-8").splitlines(True)[:12]))
    # The CPU config, then what this slice changes: a learning rate high enough to move weights.
    merged = folder / "merged.yaml"
    merged.write_text((REPO / "training/configs/tiny-cpu.yaml").read_text()
                      + f"learning_rate: 0.05\nwarmup_steps: 0\nval_data: {DATA / 'val.jsonl'}\n")
    out = folder / "adapter"
    result = run_train("--config", merged, "--base-model", tiny_model_dir, "--data", data, "--output", out,
                       "--epochs", 2)
    assert result.returncode == 0, result.stderr[-3000:]
    return out


def test_training_writes_every_output(trained_adapter):
    names = {p.name for p in trained_adapter.iterdir()}
    assert {"adapter_config.json", "adapter_model.safetensors", "tokenizer.json", "eval_results.json",
            "loss_curve.png", "runs"} <= names
    assert not any(n.startswith("checkpoint-") for n in names)
    assert not trained_adapter.with_name("adapter.partial").exists()
    report = json.loads((trained_adapter / "eval_results.json").read_text())
    assert report["samples"] == {"train": 12, "val": 4, "test": 4}
    assert math.isclose(report["test_perplexity"], math.exp(report["test_loss"]), rel_tol=1e-9)
    assert report["datasets_sha256"]["train"] and report["peak_memory_mb"] > 0
    assert (trained_adapter / "loss_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert any((trained_adapter / "runs").rglob("events.out.tfevents.*"))


def test_lora_weights_changed_and_base_did_not(trained_adapter, tiny_model_dir):
    from peft import PeftModel
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    before = {k: v.clone() for k, v in base.state_dict().items()}
    lora = load_file(trained_adapter / "adapter_model.safetensors")
    lora_b = [v for k, v in lora.items() if "lora_B" in k]
    assert len(lora_b) == 2 * 7 and all(v.abs().sum() > 0 for v in lora_b)  # B starts at zero: all moved
    model = PeftModel.from_pretrained(base, trained_adapter)
    for name, param in model.get_base_model().state_dict().items():
        key = name.replace(".base_layer", "")
        if key in before:
            assert torch.equal(param, before[key]), f"base weight {key} changed"


def test_service_serves_the_trained_adapter(trained_adapter, tiny_model_dir, brands_file):
    settings = Settings(base_model=str(tiny_model_dir), adapter_path=trained_adapter, brands_path=brands_file,
                        device="cpu", max_new_tokens=8, _env_file=None)
    with TestClient(create_app(settings)) as client:
        wait_ready(client, timeout=30)
        r = client.post("/caption", json={"brand": "TechZone", "context": "Gaming mouse launch", "seed": 1})
        assert r.status_code == 200, r.text
        assert r.json()["model"]["adapter"] == str(trained_adapter)
        assert r.json()["usage"]["completion_tokens"] >= 1


def _bnb_reason():
    try:
        import bitsandbytes  # noqa: F401
    except Exception as exc:
        return f"bitsandbytes unavailable: {exc}"
    return None


@pytest.mark.skipif(_bnb_reason() is not None, reason=str(_bnb_reason()))
def test_qlora_4bit_step_on_cpu_with_eval_in_between(tiny_model_dir, formatter):
    """The 4-bit path: train, evaluate (a no-grad pass), train again — the AVX512-BF16 trap."""
    from training.config import TrainConfig
    from training.model import load_model, token_weighted_loss

    cfg = TrainConfig(base_model=str(tiny_model_dir), load_in_4bit=True, gradient_checkpointing=False)
    model, four_bit = load_model(cfg, on_cuda=False)
    assert four_bit
    examples, _ = formatter.dataset(load_records(DATA / "val.jsonl")[:2], "val")
    lora = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=0.05)
    for step in range(2):
        model.train()
        ex = examples[step]
        out = model(input_ids=torch.tensor([ex["input_ids"]]), labels=torch.tensor([ex["labels"]]))
        out.loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        loss, tokens = token_weighted_loss(model, examples)  # the no-grad pass between steps
        assert math.isfinite(loss) and tokens > 0
    changed = [n for n, p in model.named_parameters() if p.requires_grad and not torch.equal(p, lora[n])]
    assert any("lora_B" in n for n in changed)


def test_interrupted_run_leaves_no_adapter_and_resumes(tiny_model_dir, tmp_path):
    from transformers import TrainerCallback

    from training.train import run

    class Crash(TrainerCallback):
        def on_save(self, args, state, control, **kwargs):
            raise KeyboardInterrupt("power cut after the first checkpoint")

    data = tmp_path / "train.jsonl"
    data.write_text("".join((DATA / "train_augmented.jsonl").read_text(encoding="utf-8").splitlines(True)[:8]))
    cfg = load_config(REPO / "training/configs/tiny-cpu.yaml", {
        "base_model": str(tiny_model_dir), "data": data, "output": tmp_path / "adapter", "epochs": 2})
    with pytest.raises(KeyboardInterrupt):
        run(cfg, callbacks=(Crash(),))
    assert not (tmp_path / "adapter").exists()  # the service never sees a half-trained adapter
    assert (tmp_path / "adapter.partial" / "checkpoint-2").is_dir()  # 8 samples / (1 x 4) = 2 steps an epoch
    run(cfg, resume=True)
    report = json.loads((tmp_path / "adapter" / "eval_results.json").read_text())
    assert report["resumed_from"] == "checkpoint-2" and report["epochs_run"] == 2
    assert not (tmp_path / "adapter.partial").exists()
