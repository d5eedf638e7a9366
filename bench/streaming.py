"""Streaming against plain JSON: 16 concurrent requests to the real server, side by side.

    python bench/streaming.py --model models/tiny          # CPU, tiny model (make bench-streaming)

The server is `python -m app` under uvicorn on 127.0.0.1. Each round sends the same 16
seeded requests twice, streamed and not, alternating which goes first; the figures are
medians over the rounds. Time to first token is measured by the client, at the first
`delta` event; full response time at the `done` event (streamed) or the body (plain).
"""

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from servers import Connection, free_port, timed_events, wait_until  # bench/ is the script's folder, so first on sys.path

REPO = Path(__file__).resolve().parent.parent
CONCURRENT = 16
NEW_TOKENS = 64
ROUNDS = 5
OCCASIONS = ["เปิดตัวสินค้าใหม่", "ลดราคา 11.11", "สงกรานต์", "ลอยกระทง", "ปีใหม่", "วาเลนไทน์", "หน้าฝน", "เปิดเทอม"]


def body(i: int) -> dict:
    # temperature 0 and a fixed length: both modes do identical work, token for token
    return {"brand": "TechZone", "context": f"{OCCASIONS[i % 8]} #{i}", "seed": i, "temperature": 0,
            "max_new_tokens": NEW_TOKENS}


async def plain(connection: Connection, i: int) -> tuple[float, float, int]:
    start = time.perf_counter()
    status, _, text = await connection.request("POST", "/caption", body(i))
    assert status == 200, text
    total = time.perf_counter() - start
    return total, total, json.loads(text)["usage"]["completion_tokens"]


async def streamed(connection: Connection, i: int) -> tuple[float, float, int]:
    return await timed_events(connection, "/caption", dict(body(i), stream=True), time.perf_counter())


async def one_round(connections: list[Connection], fn) -> dict:
    start = time.perf_counter()
    rows = await asyncio.gather(*(fn(connections[i], i) for i in range(CONCURRENT)))
    wall = time.perf_counter() - start
    firsts = sorted(r[0] for r in rows)
    return {"wall": wall, "tokens": sum(r[2] for r in rows), "ttft_p50": statistics.median(firsts),
            "ttft_p99": firsts[min(len(firsts) - 1, round(0.99 * (len(firsts) - 1)))],
            "full_p50": statistics.median(r[1] for r in rows)}


async def measure(port: int, rounds: int) -> dict:
    results = {"plain": [], "stream": []}
    # One lean connection per client: 16 tasks sharing one httpx client spent its pool's time,
    # and more of it on the many small chunks of a stream than on one body.
    connections = [Connection("127.0.0.1", port) for _ in range(CONCURRENT)]
    try:
        await one_round(connections, plain)  # warm-up
        await one_round(connections, streamed)
        for n in range(rounds):
            order = [("plain", plain), ("stream", streamed)]
            for label, fn in order if n % 2 == 0 else order[::-1]:
                results[label].append(await one_round(connections, fn))
    finally:
        for connection in connections:
            connection.close()
    return {label: {k: statistics.median(r[k] for r in rs) for k in rs[0]} for label, rs in results.items()}


def main(args) -> None:
    port = free_port()
    env = dict(os.environ, AI_DIRECTOR_BASE_MODEL=args.model, AI_DIRECTOR_DEVICE=args.device, AI_DIRECTOR_PORT=str(port),
               AI_DIRECTOR_MAX_BATCH_SIZE=str(CONCURRENT), AI_DIRECTOR_LOG_LEVEL="warning", HF_HUB_OFFLINE="1",
               # 16 requests take ~150 ms of brand-layer work to admit; a 200 ms window lets them
               # form one batch in both modes, so the comparison is of streaming, not of batch luck
               AI_DIRECTOR_BATCH_TIMEOUT_MS="200")
    proc = subprocess.Popen([sys.executable, "-m", "app"], env=env, cwd=REPO)
    base_url = f"http://127.0.0.1:{port}"
    try:
        wait_until(f"{base_url}/ready", proc, 120, "the server")
        r = asyncio.run(measure(port, args.rounds))
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    print(f"model {args.model} on {args.device}: {CONCURRENT} concurrent /caption requests x {NEW_TOKENS} new tokens, "
          f"greedy, median of {args.rounds} rounds, both modes in one server")
    print(f"{'mode':<8}{'wall s':>9}{'tokens':>8}{'tokens/s':>10}{'TTFT p50':>10}{'TTFT p99':>10}{'full p50':>10}")
    for label, m in r.items():
        print(f"{label:<8}{m['wall']:>9.3f}{m['tokens']:>8.0f}{m['tokens'] / m['wall']:>10.1f}"
              f"{m['ttft_p50']:>10.3f}{m['ttft_p99']:>10.3f}{m['full_p50']:>10.3f}")
    s, p = r["stream"], r["plain"]
    ratio = (s["tokens"] / s["wall"]) / (p["tokens"] / p["wall"])
    share = s["ttft_p50"] / s["full_p50"]
    print(f"streaming throughput / plain: {ratio:.2f} (target >= 0.90): {'PASS' if ratio >= 0.9 else 'FAIL'}")
    print(f"streaming TTFT p50 / full response p50: {share:.2f} (target <= 0.25): {'PASS' if share <= 0.25 else 'FAIL'}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="models/tiny", help="hub name or local folder")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    parser.add_argument("--rounds", type=int, default=ROUNDS, help="rounds per mode")
    main(parser.parse_args())
