"""The evaluation end to end on the tiny model with a random (nonzero) LoRA adapter."""

import json
import math

import pytest

from training import evaluate

REPO_BRANDS = evaluate.DATA_DIR.parent.parent / "brands" / "brands.json"


@pytest.fixture(scope="module")
def adapter_dir(tiny_model_dir, tmp_path_factory):
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    # init_lora_weights=False: B is random, not zero, so the adapter really changes the model.
    peft_model = get_peft_model(model, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    out = tmp_path_factory.mktemp("adapter")
    peft_model.save_pretrained(out)
    AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def evaluated(adapter_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("report") / "nested"  # the folder is created on demand
    report = evaluate.run(adapter_dir, output=out, brands_path=REPO_BRANDS, limit=2, max_new_tokens=8,
                          device="cpu", load_in_4bit=False)
    return out, report


def test_writes_three_files_and_a_real_png(evaluated):
    out, report = evaluated
    for name in ("report.json", "report.md", "report.png"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0
    assert (out / "report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(out.glob("*.tmp"))
    assert json.loads((out / "report.json").read_text(encoding="utf-8")) == json.loads(json.dumps(report))
    md = (out / "report.md").read_text(encoding="utf-8")
    assert "adapter_rag beats adapter_only on test_unseen" in md and "mean nothing" in md
    for mode in evaluate.MODES:
        assert f"| {mode} | test_unseen |" in md


def test_every_mode_and_split_has_bounded_metrics(evaluated):
    _, report = evaluated
    assert report["config"]["base_model"] and len(report["config"]["data"]["test"]["sha256"]) == 64
    assert report["config"]["generation"]["temperature"] == 0.0
    for mode in ("base_rag", "adapter_only", "adapter_rag"):
        for split in ("test", "test_unseen"):
            m = report["results"][mode][split]["metrics"]
            assert m["n"] == m["checked"] == 2
            for key in ("on_brand_rate", "brand_mention_rate", "leak_rate", "mean_thai_ratio"):
                assert 0.0 <= m[key] <= 1.0, (mode, split, key)
            assert 0.0 <= m["chrf"] <= 100.0 and "chrF" in m["chrf_signature"]
            for row in report["results"][mode][split]["samples"]:
                assert row["brand"] and row["task"] and row["completion_tokens"] <= 8
                assert 0.0 <= row["chrf"] <= 100.0 and isinstance(row["checks"]["on_brand"], bool)
    assert report["results"]["adapter_rag"]["test_unseen"]["samples"][0]["brand"] == "TechZone"


def test_loss_is_finite_and_perplexity_is_its_exp(evaluated):
    _, report = evaluated
    for split in ("test", "test_unseen"):
        for which in ("adapter", "base"):
            ls = report["loss"][split][which]
            assert math.isfinite(ls["loss"]) and ls["loss"] > 0
            assert ls["perplexity"] == pytest.approx(math.exp(ls["loss"]), rel=1e-6)
            assert ls["tokens"] > 0 and ls["samples"] == 2


def test_adapter_only_has_no_brand_context_and_rag_modes_do(evaluated):
    _, report = evaluated
    r = report["results"]
    for split in ("test", "test_unseen"):
        base, only, rag = (r[m][split]["samples"] for m in ("base_rag", "adapter_only", "adapter_rag"))
        for b, o, a in zip(base, only, rag):
            assert "### Brand" not in o["prompt"] and "### Request" in o["prompt"]
            assert "### Brand" in a["prompt"] and a["prompt"] == b["prompt"]


def test_base_mode_really_switches_the_adapter_off(evaluated):
    _, report = evaluated
    for split in ("test", "test_unseen"):
        assert report["loss"][split]["adapter"]["loss"] != pytest.approx(report["loss"][split]["base"]["loss"])
    texts = lambda mode: [s["text"] for split in ("test", "test_unseen")  # noqa: E731
                          for s in report["results"][mode][split]["samples"]]
    assert texts("base_rag") != texts("adapter_rag")


def test_bad_adapter_folder_fails_first_and_writes_nothing(tmp_path):
    out = tmp_path / "out"
    with pytest.raises(ValueError, match=r"--adapter .*folder not found.*python -m training train"):
        evaluate.run(tmp_path / "missing", output=out, device="cpu")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="no adapter_config.json"):
        evaluate.run(empty, output=out, device="cpu")
    assert not out.exists() and list(empty.iterdir()) == []


def test_bad_data_dir_fails_before_loading(adapter_dir, tmp_path):
    from training.records import DatasetError

    with pytest.raises(DatasetError, match="test.jsonl: file not found"):
        evaluate.run(adapter_dir, output=tmp_path / "out", data_dir=tmp_path, brands_path=REPO_BRANDS, device="cpu")
    assert not (tmp_path / "out").exists()


def test_cli_flags(tmp_path):
    import argparse

    parser = argparse.ArgumentParser()
    evaluate.add_arguments(parser)
    args = parser.parse_args(["--adapter", str(tmp_path), "--limit", "3", "--max-new-tokens", "16"])
    assert args.adapter == tmp_path and args.output is None and args.base_model is None
    assert args.limit == 3 and args.max_new_tokens == 16 and args.device == "auto"
    assert args.data_dir == evaluate.DATA_DIR
    with pytest.raises(SystemExit):
        parser.parse_args([])
