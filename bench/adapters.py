"""Adapter rollout under load: 16 concurrent clients while the served adapter folder is swapped.

    python bench/adapters.py --model models/tiny        # CPU, tiny model (make bench-adapters)
    python bench/adapters.py --model models/tiny --swaps 5

The server is `python -m app` on the tiny model with AI_DIRECTOR_ADAPTER_PATH pointing at a
folder holding one of two tiny random LoRAs. 16 clients send /caption back to back (16 new
tokens each) and record each answer's end time, status and `model.adapter_version`. After
a steady stretch, the folder is swapped as `python -m training train` swaps it (write
OUTPUT.partial, rename OUTPUT away, rename OUTPUT.partial to OUTPUT), alternating between
the two adapters. Per swap it prints:
- the swap latency: from the rename to the first answer written by the new version;
- the throughput dip: answers per second in the 2 s after the swap against the steady rate
  of the 4 s before it, both measured in this run (2 s spans a few batches of 16, so the
  figure is not the luck of where one batch ends).
Targets: swap latency <= 2 s, 0 failed requests.
"""

import argparse
import asyncio
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from servers import free_port, wait_until  # bench/ is the script's folder, so first on sys.path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
CLIENTS = 16
STEADY_S = 4.0  # the stretch before each swap whose rate is the baseline
AFTER_S = 4.0  # how long the load runs on after each swap
AFTER_WINDOW_S = 2.0  # the stretch after a swap whose rate shows the dip
TARGET_SWAP_S = 2.0
BODY = {"brand": "CoffeeLab", "context": "เปิดตัวเมนูใหม่หน้าร้อน", "max_new_tokens": 16, "platform": "instagram"}


def version_of(folder: Path) -> str:
    from app.adapters import fingerprint

    return fingerprint(folder)[0]


def swap_folder(source: Path, target: Path) -> float:
    """The trainer's swap (app.adapters.replace_folder); returns the moment it starts."""
    from app.adapters import replace_folder

    staging = target.with_name(target.name + ".partial")
    shutil.copytree(source, staging)
    swapped = time.perf_counter()
    replace_folder(staging, target)
    return swapped


async def client_loop(client: httpx.AsyncClient, log: list, stop: asyncio.Event, i: int) -> None:
    n = 0
    while not stop.is_set():
        try:
            r = await client.post("/caption", json=BODY | {"seed": i * 1000 + n})
            version = r.json().get("model", {}).get("adapter_version") if r.status_code == 200 else None
            log.append((time.perf_counter(), r.status_code, version))
        except httpx.HTTPError as exc:
            log.append((time.perf_counter(), type(exc).__name__, None))
        n += 1


def rate(log: list, start: float, end: float) -> float:
    return sum(1 for t, status, _ in log if start <= t < end and status == 200) / (end - start)


async def run(url: str, folder: Path, adapters: list[Path], swaps: int) -> tuple[list[dict], int, list]:
    log: list = []
    stop = asyncio.Event()
    limits = httpx.Limits(max_connections=CLIENTS, max_keepalive_connections=CLIENTS)
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as client:
        tasks = [asyncio.create_task(client_loop(client, log, stop, i)) for i in range(CLIENTS)]
        await asyncio.sleep(2.0)  # warm-up: the first batches are slower
        results = []
        for n in range(swaps):
            new = adapters[(n + 1) % 2]
            await asyncio.sleep(STEADY_S)
            steady = rate(log, time.perf_counter() - STEADY_S, time.perf_counter())
            swapped = await asyncio.to_thread(swap_folder, new, folder)
            await asyncio.sleep(AFTER_S)
            first_new = min((t for t, status, v in log if t > swapped and v == version_of(new)), default=None)
            latency = first_new - swapped if first_new else float("inf")
            results.append({"swap": n + 1, "latency_s": latency, "steady_rps": steady,
                            "after_rps": rate(log, swapped, swapped + AFTER_WINDOW_S),
                            "old_after_first_new": sum(1 for t, _, v in log if first_new and t > first_new + 0.5
                                                       and v not in (None, version_of(new)))})
        stop.set()
        await asyncio.gather(*tasks)
    failed = [entry for entry in log if entry[1] != 200]
    return results, len(log), failed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=str(REPO / "models" / "tiny"), help="base model folder (the tiny one)")
    parser.add_argument("--swaps", type=int, default=3)
    args = parser.parse_args()

    from training.tiny_model import build_tiny_adapter

    with tempfile.TemporaryDirectory(prefix="bench-adapters-") as tmp:
        root = Path(tmp)
        adapters = [build_tiny_adapter(Path(args.model), root / "store" / f"v{i}", seed=i) for i in (1, 2)]
        folder = root / "served" / "adapter"
        shutil.copytree(adapters[0], folder)
        port = free_port()
        env = dict(os.environ, AI_DIRECTOR_BASE_MODEL=args.model, AI_DIRECTOR_DEVICE="cpu",
                   AI_DIRECTOR_ADAPTER_PATH=str(folder), AI_DIRECTOR_PORT=str(port), AI_DIRECTOR_LOG_LEVEL="warning",
                   AI_DIRECTOR_BRANDS_PATH=str(REPO / "brands" / "brands.json"), AI_DIRECTOR_MAX_BATCH_SIZE="16")
        proc = subprocess.Popen([sys.executable, "-m", "app"], env=env, cwd=REPO)
        try:
            wait_until(f"http://127.0.0.1:{port}/ready", proc, 120, "the server")
            results, total, failed = asyncio.run(run(f"http://127.0.0.1:{port}", folder, adapters, args.swaps))
        finally:
            proc.terminate()
            proc.wait(timeout=60)

    print(f"adapter rollout under load: {CLIENTS} clients, tiny model, {total} requests, {args.swaps} folder swaps")
    print(f"{'swap':>4} {'latency':>9} {'steady req/s':>13} {'2 s after':>12} {'dip':>6} {'old after new':>14}")
    for r in results:
        dip = 1 - r["after_rps"] / r["steady_rps"] if r["steady_rps"] else 0.0
        print(f"{r['swap']:>4} {r['latency_s']:>8.2f}s {r['steady_rps']:>13.1f} {r['after_rps']:>12.1f} {dip:>6.0%} "
              f"{r['old_after_first_new']:>14}")
    worst = max(r["latency_s"] for r in results)
    print(f"swap latency: median {statistics.median(r['latency_s'] for r in results):.2f} s, worst {worst:.2f} s "
          f"(target <= {TARGET_SWAP_S:g} s): {'PASS' if worst <= TARGET_SWAP_S else 'FAIL'}")
    ratios = [r["after_rps"] / r["steady_rps"] for r in results if r["steady_rps"]]
    print(f"throughput in the {AFTER_WINDOW_S:g} s after a swap: median {statistics.median(ratios):.2f}, lowest "
          f"{min(ratios):.2f} of the steady rate before it")
    print(f"failed requests: {len(failed)} (target 0): {'PASS' if not failed else 'FAIL'}"
          + (f"; first: {failed[:3]}" if failed else ""))


if __name__ == "__main__":
    main()
