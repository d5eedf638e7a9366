"""The gateway in front of vLLM against vLLM alone: 16 concurrent requests, side by side.

    python bench/gateway.py --vllm-python .venv-vllm/bin/python     # CPU, tiny model (make bench-gateway)

One vLLM (its CPU build) serves a tiny head-size-64 model and a tiny random LoRA; the
gateway is `python -m app` with AI_DIRECTOR_ENGINE=vllm in front of it, on 127.0.0.1.
Each round sends the same 16 greedy prompts (the gateway's own, from `dry_run`) straight
to vLLM and through the gateway, plain and streamed, alternating which path goes first;
the figures are medians over the rounds. Both paths produce exactly NEW_TOKENS tokens per
request: the bench model's stop tokens can never win a greedy pick (their output rows are
zeroed), and the direct requests also set ignore_eos and min_tokens. Time to first token
is the client's, at the first visible text (the gateway never shows leading whitespace).
"""

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from servers import free_port, timed_stream, wait_until  # bench/ is the script's folder, so first on sys.path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

CONCURRENT = 16
NEW_TOKENS = 64
ROUNDS = 5
ADAPTER = "ai-director"
OCCASIONS = ["เปิดตัวสินค้าใหม่", "ลดราคา 11.11", "สงกรานต์", "ลอยกระทง", "ปีใหม่", "วาเลนไทน์", "หน้าฝน", "เปิดเทอม"]


def body(i: int) -> dict:
    return {"brand": "TechZone", "context": f"{OCCASIONS[i % 8]} #{i}", "seed": i, "temperature": 0,
            "max_new_tokens": NEW_TOKENS}


def build_models(root: Path) -> tuple[Path, Path]:
    """The tiny head-64 model, unable to stop early under greedy decoding, and a LoRA on it."""
    import torch
    from peft import LoraConfig, get_peft_model
    from safetensors.torch import load_file, save_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from training.tiny_model import build_tiny_model

    model_dir = build_tiny_model(root / "model", shape="head64")
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    weights_file = model_dir / "model.safetensors"
    weights = load_file(weights_file)
    for token in ("<|im_end|>", "<|endoftext|>"):  # a logit of 0 never beats the random others' maximum
        weights["lm_head.weight"][tokenizer.convert_tokens_to_ids(token)] = 0.0
    save_file(weights, weights_file, metadata={"format": "pt"})
    torch.manual_seed(0)
    lora = LoraConfig(r=8, lora_alpha=16, init_lora_weights=False,  # non-zero B: the adapter does change outputs
                      target_modules=["q_proj", "k_proj", "v_proj", "o_proj"])
    get_peft_model(AutoModelForCausalLM.from_pretrained(model_dir), lora).save_pretrained(root / "adapter")
    return model_dir, root / "adapter"


# --- one request, each path and mode: (time to first text, full time, tokens) ---

def direct_payload(prompt: str, i: int, stop_id: int, stream: bool) -> dict:
    payload = {"model": ADAPTER, "prompt": prompt, "add_special_tokens": False, "max_tokens": NEW_TOKENS,
               "min_tokens": NEW_TOKENS, "ignore_eos": True, "temperature": 0, "seed": i, "stop_token_ids": [stop_id],
               "stream": stream}
    if stream:
        payload["stream_options"] = {"include_usage": True}
    return payload


async def direct_plain(client, prompts, i, stop_id):
    start = time.perf_counter()
    r = await client.post("/v1/completions", json=direct_payload(prompts[i], i, stop_id, False))
    r.raise_for_status()
    total = time.perf_counter() - start
    return total, total, r.json()["usage"]["completion_tokens"]


async def direct_stream(client, prompts, i, stop_id):
    start, first, tokens = time.perf_counter(), None, 0
    async with client.stream("POST", "/v1/completions", json=direct_payload(prompts[i], i, stop_id, True)) as r:
        r.raise_for_status()
        async for line in r.aiter_lines():
            if not line.startswith("data:") or line.endswith("[DONE]"):
                continue
            chunk = json.loads(line[5:])
            if first is None and any((c.get("text") or "").strip() for c in chunk.get("choices") or ()):
                first = time.perf_counter() - start
            if chunk.get("usage"):
                tokens = chunk["usage"]["completion_tokens"]
    total = time.perf_counter() - start
    return (first if first is not None else total), total, tokens


async def gateway_plain(client, prompts, i, stop_id):
    start = time.perf_counter()
    r = await client.post("/caption", json=body(i))
    ok(r)
    total = time.perf_counter() - start
    return total, total, r.json()["usage"]["completion_tokens"]


async def gateway_stream(client, prompts, i, stop_id):
    start = time.perf_counter()
    async with client.stream("POST", "/caption", json=dict(body(i), stream=True)) as r:
        await r.aread() if r.status_code != 200 else None
        ok(r)
        return await timed_stream(r, start)


def ok(r: httpx.Response) -> None:
    if r.status_code != 200:
        raise SystemExit(f"the gateway answered {r.status_code}: {r.text}")


async def one_round(client, fn, prompts, stop_id) -> dict:
    start = time.perf_counter()
    rows = await asyncio.gather(*(fn(client, prompts, i, stop_id) for i in range(CONCURRENT)))
    wall = time.perf_counter() - start
    short = [r[2] for r in rows if r[2] != NEW_TOKENS]
    if short:
        raise SystemExit(f"{fn.__name__}: {len(short)} requests did not produce {NEW_TOKENS} tokens: {short}")
    return {"wall": wall, "tokens": sum(r[2] for r in rows), "ttft_p50": statistics.median(r[0] for r in rows),
            "full_p50": statistics.median(r[1] for r in rows)}


async def measure(vllm_url: str, gateway_url: str, rounds: int, stop_id: int) -> dict:
    limits = httpx.Limits(max_connections=64)
    async with (httpx.AsyncClient(base_url=vllm_url, timeout=120, limits=limits) as vllm,
                httpx.AsyncClient(base_url=gateway_url, timeout=120, limits=limits) as gateway):
        prompts = []
        for i in range(CONCURRENT):  # the very prompts the gateway sends
            r = await gateway.post("/caption", json=dict(body(i), dry_run=True))
            r.raise_for_status()
            prompts.append(r.json()["prompt"])
        runs = {"plain": [("direct", vllm, direct_plain), ("gateway", gateway, gateway_plain)],
                "stream": [("direct", vllm, direct_stream), ("gateway", gateway, gateway_stream)]}
        for pairs in runs.values():  # warm-up
            for _, client, fn in pairs:
                await one_round(client, fn, prompts, stop_id)
        results = {(mode, path): [] for mode, pairs in runs.items() for path, _, _ in pairs}
        for n in range(rounds):
            for mode, pairs in runs.items():
                for path, client, fn in pairs if n % 2 == 0 else pairs[::-1]:
                    results[mode, path].append(await one_round(client, fn, prompts, stop_id))
    return {key: {k: statistics.median(r[k] for r in rs) for k in rs[0]} for key, rs in results.items()}


def main(args) -> None:
    from transformers import AutoTokenizer

    work = Path(tempfile.mkdtemp(prefix="bench-gateway-"))
    model_dir, adapter_dir = build_models(work)
    stop_id = AutoTokenizer.from_pretrained(model_dir).convert_tokens_to_ids("<|im_end|>")
    vllm_port, gateway_port = free_port(), free_port()
    vllm_url, gateway_url = f"http://127.0.0.1:{vllm_port}", f"http://127.0.0.1:{gateway_port}"
    vllm_env = dict(os.environ, VLLM_CPU_KVCACHE_SPACE="1", HF_HUB_OFFLINE="1")
    vllm_log = (work / "vllm.log").open("w")
    # absolute: it runs in the work folder, and a venv's python must not be resolved through its symlink
    vllm = subprocess.Popen(
        [os.path.abspath(args.vllm_python), "-m", "vllm.entrypoints.openai.api_server", "--model", str(model_dir),
         "--served-model-name", "base", "--dtype", "float32", "--max-model-len", "2048", "--host", "127.0.0.1",
         "--port", str(vllm_port), "--enable-lora", "--max-lora-rank", "16", "--lora-modules",
         f"{ADAPTER}={adapter_dir}"],
        env=vllm_env, stdout=vllm_log, stderr=subprocess.STDOUT, cwd=work)
    gateway = None
    try:
        wait_until(f"{vllm_url}/v1/models", vllm, 300, f"vLLM (log: {work / 'vllm.log'})")
        env = dict(os.environ, AI_DIRECTOR_ENGINE="vllm", AI_DIRECTOR_VLLM_URL=vllm_url,
                   AI_DIRECTOR_BASE_MODEL=str(model_dir), AI_DIRECTOR_PORT=str(gateway_port),
                   AI_DIRECTOR_LOG_LEVEL="warning", HF_HUB_OFFLINE="1")
        gateway = subprocess.Popen([sys.executable, "-m", "app"], env=env, cwd=REPO)
        wait_until(f"{gateway_url}/ready", gateway, 120, "the gateway")
        r = asyncio.run(measure(vllm_url, gateway_url, args.rounds, stop_id))
    finally:
        for proc in (gateway, vllm):
            if proc is not None:
                proc.terminate()
                proc.wait(timeout=60)
        vllm_log.close()
    print(f"vLLM (CPU build) serving a tiny head-64 model + LoRA; {CONCURRENT} concurrent /caption requests x "
          f"{NEW_TOKENS} tokens, greedy, median of {args.rounds} rounds, straight to vLLM and through the gateway")
    print(f"{'mode':<8}{'path':<9}{'wall s':>9}{'tokens':>8}{'tokens/s':>10}{'TTFT p50':>10}{'full p50':>10}")
    for (mode, path), m in r.items():
        ttft = f"{m['ttft_p50']:>10.4f}" if mode == "stream" else f"{'-':>10}"
        print(f"{mode:<8}{path:<9}{m['wall']:>9.3f}{m['tokens']:>8.0f}{m['tokens'] / m['wall']:>10.1f}{ttft}"
              f"{m['full_p50']:>10.4f}")
    for mode in ("plain", "stream"):
        d, g = r[mode, "direct"], r[mode, "gateway"]
        ratio = (g["tokens"] / g["wall"]) / (d["tokens"] / d["wall"])
        print(f"{mode}: gateway throughput / direct: {ratio:.3f} (target >= 0.90): {'PASS' if ratio >= 0.9 else 'FAIL'}")
        added = (g["full_p50"] - d["full_p50"]) * 1000
        print(f"{mode}: added p50 latency: {added:+.1f} ms (target <= 5 ms): {'PASS' if added <= 5 else 'FAIL'}")
    added_ttft = (r["stream", "gateway"]["ttft_p50"] - r["stream", "direct"]["ttft_p50"]) * 1000
    print(f"stream: added TTFT p50: {added_ttft:+.1f} ms (target <= 5 ms): {'PASS' if added_ttft <= 5 else 'FAIL'}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vllm-python", default=str(REPO / ".venv-vllm" / "bin" / "python"),
                        help="python of the venv vLLM is installed in (make vllm)")
    parser.add_argument("--rounds", type=int, default=ROUNDS, help="rounds per path and mode")
    main(parser.parse_args())
