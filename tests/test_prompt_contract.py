"""The prompt contract: training writes it, the service and evaluate refuse an adapter trained on another prompt."""

import json
import os
import shutil
import subprocess
import sys
from dataclasses import replace

import pytest

from app import prompts
from app.adapters import AdapterError, check_adapter_folder
from app.prompt_contract import CONTRACT_FILE, FORMAT_VERSION, prompt_format_sha256, read_contract
from app.settings import Settings
from app.tasks import TASKS
from conftest import REPO
from test_server import free_port, is_ready, poll, run_app, server_env
from training import evaluate
from training.config import load_config
from training.formatting import Formatter, load_brands
from training.records import load_records

DATA = REPO / "training" / "data"
BRANDS = REPO / "brands" / "brands.json"
BUDGET = 512  # not the default (384); on the tiny tokenizer it retrieves more than 128 or 384 would


@pytest.fixture(scope="module")
def trained_adapter(tiny_model_dir, tmp_path_factory):
    """A real training run, kept short: 4 samples, one epoch, a non-default context budget."""
    from training.train import run

    folder = tmp_path_factory.mktemp("contract-train")
    data = folder / "train.jsonl"
    data.write_text("".join((DATA / "train_augmented.jsonl").read_text(encoding="utf-8").splitlines(True)[:4]))
    cfg = load_config(REPO / "training/configs/tiny-cpu.yaml", {
        "base_model": str(tiny_model_dir), "data": data, "val_data": DATA / "val.jsonl",
        "test_data": DATA / "test.jsonl", "brands": BRANDS, "output": folder / "adapter", "epochs": 1,
        "context_token_budget": BUDGET})
    return run(cfg)


def adapter_copy(source, target, changes: dict | None):
    """A copy of the adapter folder with its contract changed, or without one when `changes` is None."""
    shutil.copytree(source, target)
    path = target / CONTRACT_FILE
    if changes is None:
        path.unlink()
    else:
        path.write_text(json.dumps({**json.loads(path.read_text()), **changes}), encoding="utf-8")
    return target


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error:")]


def test_training_writes_the_contract(trained_adapter, tiny_model_dir):
    written = json.loads((trained_adapter / CONTRACT_FILE).read_text(encoding="utf-8"))
    assert written == {"format_version": FORMAT_VERSION, "prompt_format_sha256": prompt_format_sha256(),
                       "context_token_budget": BUDGET, "max_seq_length": 1024, "base_model": str(tiny_model_dir)}
    assert json.loads((trained_adapter / "eval_results.json").read_text())["prompt_contract"] == written
    assert not list(trained_adapter.glob("*.tmp")) and not trained_adapter.with_name("adapter.partial").exists()


def test_hash_is_the_same_in_every_process():
    code = "from app.prompt_contract import prompt_format_sha256; print(prompt_format_sha256())"
    hashes = set()
    for seed in ("0", "1"):  # a different str hash seed: no set or dict order may leak into the bytes
        result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120,
                                env={**os.environ, "PYTHONHASHSEED": seed})
        assert result.returncode == 0, result.stderr
        hashes.add(result.stdout.strip())
    assert hashes == {prompt_format_sha256()}


def _edit_task(mp, name, **changes):
    mp.setitem(TASKS, name, replace(TASKS[name], **changes))


def _wrap(name, edit):
    original = getattr(prompts, name)
    return lambda *args: edit(original(*args))


@pytest.mark.parametrize("change", [
    lambda mp: mp.setattr(prompts, "SYSTEM_PROMPT", prompts.SYSTEM_PROMPT + " Be brief."),
    lambda mp: _edit_task(mp, "brief", instruction=TASKS["brief"].instruction.replace("KPIs", "goals")),
    lambda mp: _edit_task(mp, "caption", fields=(("context", "Occasion"), ("platform", "Channel"), ("tone", "Tone"))),
    lambda mp: _edit_task(mp, "brief", fields=tuple(reversed(TASKS["brief"].fields))),  # order
    lambda mp: mp.setattr(prompts, "BLOCK_HEADER", "## Brand"),
    lambda mp: mp.setattr(prompts, "item_line", lambda kind, text: "* " + text),  # layout inside the block
    lambda mp: mp.setattr(prompts, "profile_lines",
                          _wrap("profile_lines", lambda lines: [x.replace("Industry:", "Sector:") for x in lines])),
    lambda mp: mp.setattr(prompts, "neutralize", lambda text, special_tokens=(): text),  # control tokens let through
], ids=["system prompt", "instruction", "field label", "field order", "block header", "item line", "profile label",
        "neutralize"])
def test_hash_changes_with_the_prompt_definition(monkeypatch, change):
    before = prompt_format_sha256()
    change(monkeypatch)
    assert prompt_format_sha256() != before


def _fake_adapter(folder, **contract):
    import torch
    from safetensors.torch import save_file

    folder.mkdir()
    (folder / "adapter_config.json").write_text("{}")
    save_file({"x": torch.zeros(1)}, folder / "adapter_model.safetensors")
    if contract:
        (folder / CONTRACT_FILE).write_text(json.dumps(contract))
    return folder


def test_check_names_every_difference_with_both_values_and_the_fix(tmp_path):
    folder = _fake_adapter(tmp_path / "a", format_version=FORMAT_VERSION, prompt_format_sha256=prompt_format_sha256(),
                           context_token_budget=BUDGET, max_seq_length=2048)
    with pytest.raises(AdapterError) as info:
        check_adapter_folder(Settings(adapter_path=folder, _env_file=None))
    message = str(info.value)
    assert f"context_token_budget is {BUDGET} in the adapter but 384 here" in message
    assert f"set AI_DIRECTOR_CONTEXT_TOKEN_BUDGET={BUDGET} to match the adapter, or retrain" in message
    assert "max_seq_length is 2048 in the adapter but 1024 here" in message and "AI_DIRECTOR_MAX_SEQ_LENGTH=2048" in message
    assert "prompt format" not in message
    assert check_adapter_folder(Settings(adapter_path=folder, context_token_budget=BUDGET, max_seq_length=2048,
                                         _env_file=None)) == {}


def test_an_unreadable_contract_is_an_error_not_a_missing_one(tmp_path):
    folder = _fake_adapter(tmp_path / "a", format_version=FORMAT_VERSION)
    with pytest.raises(AdapterError, match=f"{CONTRACT_FILE} is not a valid prompt contract.*retrain"):
        check_adapter_folder(Settings(adapter_path=folder, _env_file=None))
    (folder / CONTRACT_FILE).write_text("{not json")
    with pytest.raises(AdapterError, match="not a valid prompt contract"):
        check_adapter_folder(Settings(adapter_path=folder, _env_file=None))


def test_service_refuses_another_context_budget(trained_adapter, tiny_model_dir, brands_file):
    env = server_env(tiny_model_dir, brands_file, port=free_port(), adapter_path=trained_adapter,
                     context_token_budget=128)
    result = run_app(env)
    assert result.returncode == 1
    [line] = error_lines(result.stderr)
    assert f"context_token_budget is {BUDGET} in the adapter but 128 here" in line
    assert f"set AI_DIRECTOR_CONTEXT_TOKEN_BUDGET={BUDGET} to match the adapter" in line


def test_service_refuses_another_prompt_format(trained_adapter, tiny_model_dir, brands_file, tmp_path):
    tampered = adapter_copy(trained_adapter, tmp_path / "adapter", {"prompt_format_sha256": "0" * 64})
    env = server_env(tiny_model_dir, brands_file, port=free_port(), adapter_path=tampered,
                     context_token_budget=BUDGET)
    result = run_app(env)
    assert result.returncode == 1
    [line] = error_lines(result.stderr)
    assert "prompt format (system prompt, instructions, field labels, block layout)" in line
    assert f"sha256 {'0' * 12} in the adapter but sha256 {prompt_format_sha256()[:12]} here" in line
    assert "context_token_budget" not in line  # only what differs is named


def _serve(env):
    """`python -m app` until ready, one caption, then stopped; returns (caption status, all output)."""
    import httpx

    proc = subprocess.Popen([sys.executable, "-m", "app"], env=env, cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{env['AI_DIRECTOR_PORT']}", timeout=60) as client:
            poll(lambda: proc.poll() is not None or is_ready(client), timeout=90, every=0.2)
            status = client.post("/caption", json={"brand": "TechZone", "context": "launch"}).status_code \
                if proc.poll() is None else None
    finally:
        proc.terminate()
        output, _ = proc.communicate(timeout=30)
    return status, output


def test_service_serves_the_adapter_with_matching_settings(trained_adapter, tiny_model_dir, brands_file):
    status, output = _serve(server_env(tiny_model_dir, brands_file, port=free_port(), adapter_path=trained_adapter,
                                       context_token_budget=BUDGET))
    assert status == 200, output
    assert CONTRACT_FILE not in output  # nothing to warn about


def test_adapter_without_contract_is_served_with_a_warning(trained_adapter, tiny_model_dir, brands_file, tmp_path):
    older = adapter_copy(trained_adapter, tmp_path / "adapter", None)
    status, output = _serve(server_env(tiny_model_dir, brands_file, port=free_port(), adapter_path=older))
    assert status == 200, output
    assert f"adapter folder {older} has no {CONTRACT_FILE}" in output and "serving it unchecked" in output


def test_evaluate_refuses_another_prompt_format(trained_adapter, tmp_path):
    tampered = adapter_copy(trained_adapter, tmp_path / "adapter", {"prompt_format_sha256": "f" * 64})
    out = tmp_path / "report"
    with pytest.raises(ValueError, match=r"--adapter .*trained on another prompt: prompt format .*sha256 ffffffffffff"):
        evaluate.run(tampered, output=out, brands_path=BRANDS, limit=1, max_new_tokens=2, device="cpu",
                     load_in_4bit=False)
    assert not out.exists()


def test_evaluate_uses_the_contract_and_ignores_the_environment(trained_adapter, tiny_tokenizer, tmp_path,
                                                                 monkeypatch):
    monkeypatch.setenv("AI_DIRECTOR_CONTEXT_TOKEN_BUDGET", "128")
    monkeypatch.setenv("AI_DIRECTOR_MAX_SEQ_LENGTH", "512")
    report = evaluate.run(trained_adapter, output=tmp_path / "report", brands_path=BRANDS, limit=1,
                          max_new_tokens=2, device="cpu", load_in_4bit=False)
    config = report["config"]
    assert (config["context_token_budget"], config["max_seq_length"]) == (BUDGET, 1024)
    assert config["prompt_contract"] == read_contract(trained_adapter).model_dump()
    # The prompts themselves were built with the contract's budget, not the environment's.
    record = load_records(DATA / "test_unseen.jsonl")[0]
    brands = load_brands(BRANDS)
    served = report["results"]["adapter_rag"]["test_unseen"]["samples"][0]["prompt"]
    assert served == Formatter(tiny_tokenizer, brands, BUDGET, 1024).prompt(record)
    assert served != Formatter(tiny_tokenizer, brands, 128, 1024).prompt(record)  # the variable would have mattered
    assert "from the adapter's prompt contract" in (tmp_path / "report" / "report.md").read_text(encoding="utf-8")
