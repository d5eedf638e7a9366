"""bench/gpu_check.py must not rot between the rare runs on a GPU: its CPU dry run on the
tiny model goes through every section, and it imports nothing a bare GPU image lacks."""

import json
import os
import subprocess
import sys

from conftest import REFERENCE, REPO

# Not on the GPU image, and too big to carry there beside bitsandbytes (see bench/gpu_check.sh).
NOT_ON_GPU_IMAGE = {"pythainlp", "trl", "datasets", "fastapi", "starlette", "uvicorn", "rapidfuzz", "bm25s",
                    "watchfiles", "sse_starlette", "sacrebleu"}


def test_cpu_dry_run_writes_every_section(tiny_model_dir, tmp_path):
    out, modules = tmp_path / "results", tmp_path / "modules.json"
    argv = ["bench/gpu_check.py", "--device", "cpu", "--tiny", "--tokenizer", str(tiny_model_dir), "--out", str(out),
            "--scratch", str(tmp_path), "--new-tokens", "4", "--sequential", "2", "--steps", "1", "--seq-lens", "64", "32"]
    code = (f"import json, runpy, sys; sys.argv = {argv!r}; runpy.run_path('bench/gpu_check.py', run_name='__main__'); "
            f"json.dump(sorted({{m.split('.')[0] for m in sys.modules}}), open({str(modules)!r}, 'w'))")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]

    [report] = list(out.glob("gpu-*-cpu-dry-run.txt"))
    text = report.read_text(encoding="utf-8")
    for section in ("versions", "build", "load", "decode", "adapters", "qlora", "static cache"):
        assert f"\n## {section}\n" in text, f"section {section} missing:\n{text}"
    assert "ERROR" not in text, text
    assert "product, 32 concurrent" in text and "spec loop, generate per request" in text
    assert "RESULT decode:" in text and "RESULT qlora: peak" in text and "RESULT qlora: whole fine-tune" in text
    assert "4-bit linear layers: 14; LoRA-wrapped modules: 14; quantization nf4" in text  # 2 layers x 7 projections
    assert "RESULT static cache:" in text
    assert "RESULT adapters: swap" in text and "RESULT adapters: a mixed-adapter batch runs at" in text
    assert "bf16 frozen embeddings and head save" in text
    assert not list(tmp_path.glob("gpu-check-*")), "the scratch checkpoint must be removed"

    imported = set(json.loads(modules.read_text()))
    assert not imported & NOT_ON_GPU_IMAGE, f"the GPU check imports {sorted(imported & NOT_ON_GPU_IMAGE)}"


def test_shipped_reference_config_matches_the_real_model():
    """bench/qwen2.5-7b-instruct/ travels to the GPU machine; it must be the real model's config."""
    import pytest

    if not REFERENCE.is_dir():
        pytest.skip("the reference model folder is not beside the repository")
    for name in ("config.json", "generation_config.json"):
        shipped = json.loads((REPO / "bench" / "qwen2.5-7b-instruct" / name).read_text())
        assert shipped == json.loads((REFERENCE / name).read_text()), name
