"""Throughput of dynamic batching: 16 concurrent requests, batched vs one at a time.

    python bench/batching.py --model models/tiny                 # CPU, tiny model
    python bench/batching.py --model Qwen/Qwen2.5-7B-Instruct --device cuda --4bit

Both runs go through the real BatchWorker and HFEngine in one process, side by side,
with the same prompts and greedy decoding, so both produce the same tokens.
"""

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

CONCURRENT = 16  # requests fired together
MAX_NEW_TOKENS = 32  # per request; greedy, so both modes do identical work
REPEATS = 3  # median of this many rounds per mode
OCCASIONS = ["เปิดตัวสินค้าใหม่", "ลดราคา 11.11", "สงกรานต์", "ลอยกระทง", "ปีใหม่", "วาเลนไทน์", "หน้าฝน", "เปิดเทอม"]


async def one_round(engine, metrics, prompts, max_batch_size: int) -> tuple[float, int, float]:
    from app.batching import BatchWorker
    from app.engine import GenerationRequest

    worker = BatchWorker(engine, max_batch_size, batch_timeout_ms=20, max_queue=1024, metrics=metrics)
    worker.start()
    start = time.perf_counter()
    results = await asyncio.gather(
        *[worker.submit(GenerationRequest(p, MAX_NEW_TOKENS, temperature=0.0)).result() for p in prompts]
    )
    seconds = time.perf_counter() - start
    await worker.stop()
    batches = metrics.batch_size.collect()[0].samples
    count = next(s.value for s in batches if s.name.endswith("_count"))
    total = next(s.value for s in batches if s.name.endswith("_sum"))
    return seconds, sum(r.completion_tokens for r in results), total / count


def main(args) -> None:
    from app.engine import HFEngine
    from app.metrics import Metrics
    from app.prompter import Prompter
    from app.prompts import build_messages
    from app.settings import Settings

    settings = Settings(base_model=args.model, device=args.device, load_in_4bit=args.four_bit, _env_file=None)
    engine = HFEngine.load(settings)
    prompts = [
        Prompter(engine.tokenizer).render(build_messages("caption", "TechZone", {"context": f"{OCCASIONS[i % 8]} #{i}"}, None))
        for i in range(CONCURRENT)
    ]
    asyncio.run(one_round(engine, Metrics(), prompts[:2], 2))  # warm-up
    rows = {}
    for label, size in (("batched", args.max_batch_size), ("max_batch_size=1", 1)):
        rounds = [asyncio.run(one_round(engine, Metrics(), prompts, size)) for _ in range(REPEATS)]
        seconds = statistics.median(r[0] for r in rounds)
        tokens = rounds[0][1]
        rows[label] = (seconds, tokens, rounds[0][2])
    print(f"model {args.model} on {engine.info.device} ({engine.info.quantization or 'full precision'}), "
          f"{CONCURRENT} concurrent requests x {MAX_NEW_TOKENS} new tokens, median of {REPEATS}")
    print(f"{'mode':<18}{'seconds':>9}{'tokens':>8}{'tokens/s':>10}{'req/s':>8}{'mean batch':>12}")
    for label, (seconds, tokens, mean_batch) in rows.items():
        print(f"{label:<18}{seconds:>9.3f}{tokens:>8}{tokens / seconds:>10.1f}{CONCURRENT / seconds:>8.2f}{mean_batch:>12.1f}")
    ratio = rows["max_batch_size=1"][0] / rows["batched"][0]
    print(f"throughput ratio batched / max_batch_size=1: {ratio:.2f}x (target >= 4x): {'PASS' if ratio >= 4 else 'FAIL'}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="models/tiny", help="hub name or local folder")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--4bit", dest="four_bit", action="store_true", default=None, help="load in NF4")
    parser.add_argument("--max-batch-size", type=int, default=CONCURRENT, help="batch size of the batched run")
    main(parser.parse_args())
