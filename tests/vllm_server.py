"""A real vLLM server for the tests: its CPU build, from the venv `make vllm` builds, serving a
tiny head-size-64 model and a tiny random LoRA under the name `ai-director`."""

import os
import re
import subprocess
from pathlib import Path

import httpx
import pytest

from conftest import REPO
from test_server import free_port, poll

VLLM_VENV = REPO / ".venv-vllm"
ADAPTER_NAME = "ai-director"
BASE_NAME = "base"
MAX_MODEL_LEN = 2048


def vllm_python() -> Path:
    """The vLLM venv's python; the tests skip without it, except in CI, where they must run."""
    if (VLLM_VENV / ".installed").is_file():
        return VLLM_VENV / "bin" / "python"
    reason = (f"vLLM is not installed in {VLLM_VENV.name}: run `make vllm` to enable these tests (it needs "
              "PyTorch's CPU wheels: PIP_EXTRA_INDEX_URL=https://download.pytorch.org/whl/cpu make vllm)")
    if os.environ.get("CI") == "true":
        pytest.fail(reason)
    pytest.skip(reason)


def build_lora(model_dir: Path, out_dir: Path, rank: int = 8, seed: int = 0) -> Path:
    """A LoRA on every attention and MLP projection, with random non-zero B matrices (peft's
    default leaves B at zero, an adapter that changes nothing)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    config = LoraConfig(r=rank, lora_alpha=2 * rank, init_lora_weights=False,
                        target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])
    get_peft_model(model, config).save_pretrained(out_dir)
    return out_dir


class VLLMServer:
    """`python -m vllm.entrypoints.openai.api_server` on 127.0.0.1; restartable on the same port."""

    def __init__(self, python: Path, model_dir: Path, adapter_dir: Path, log_file: Path):
        self.python, self.model_dir, self.adapter_dir, self.log_file = python, model_dir, adapter_dir, log_file
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 300) -> None:
        command = [
            str(self.python), "-m", "vllm.entrypoints.openai.api_server",
            "--model", str(self.model_dir), "--served-model-name", BASE_NAME, "--dtype", "float32",
            "--max-model-len", str(MAX_MODEL_LEN), "--host", "127.0.0.1", "--port", str(self.port),
            "--enable-lora", "--max-lora-rank", "16", "--lora-modules", f"{ADAPTER_NAME}={self.adapter_dir}",
        ]
        # Runtime LoRA loading on, as the gateway's adapter rollout needs (README, "Scaling out").
        env = dict(os.environ, VLLM_CPU_KVCACHE_SPACE="1", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
                   VLLM_ALLOW_RUNTIME_LORA_UPDATING="True")
        log = self.log_file.open("a")
        self.proc = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=self.log_file.parent)
        log.close()

        def up():
            if self.proc.poll() is not None:
                raise AssertionError(f"vLLM exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                return httpx.get(f"{self.url}/v1/models", timeout=5).status_code == 200
            except httpx.TransportError:
                return False

        try:
            poll(up, timeout=timeout, every=1.0)
        except AssertionError as exc:
            self.stop()
            raise AssertionError(f"{exc}\n{self.log_tail()}") from None

    def stop(self) -> None:
        if self.proc is None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=30)
        self.proc = None

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])

    def complete(self, **payload) -> dict:
        """vLLM's own answer to POST /v1/completions."""
        r = httpx.post(f"{self.url}/v1/completions", json=payload, timeout=120)
        assert r.status_code == 200, r.text
        return r.json()

    def metric(self, name: str) -> float:
        """The sum of one metric's samples on vLLM's /metrics (over all its labels)."""
        text = httpx.get(f"{self.url}/metrics", timeout=10).text
        pattern = re.compile(rf"^{re.escape(name)}(?:{{[^}}]*}})? (\S+)$", re.MULTILINE)
        return sum(float(value) for value in pattern.findall(text))
