"""What the brand layer costs: the service against a bare FastAPI echo endpoint, side by side.

    python bench/overhead.py                  # tiny model's tokenizer, 2-core CPU

Five uvicorn servers run at once, each in its own process, with the same bodies (each request
its own context, as in real use):
- echo: a bare FastAPI app whose POST /caption validates the body and returns it;
- dry_run: the service with `dry_run: true`: brand resolution, retrieval, prompt rendering,
  token counts;
- before: the same as the brand layer was first written, for the before/after: it encoded
  the whole brand block once per candidate item, and every text whole;
- zero-cost: a full request with a zero-cost backend (the generation interface of
  app/backend.py answering at once): all of the above, plus admission, the answer's checks
  and the response;
- batcher: the same with a zero-cost engine behind the local batching worker instead, which
  adds its hop to the generation thread and back (no batch window).
For each: sequential p50 latency, the servers taking turns request by request, and
throughput at 16 concurrent clients, the servers taking turns round by round; so a noisy
neighbour on a shared machine hits all of them alike.
"""

import argparse
import asyncio
import itertools
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from servers import Connection, free_port, wait_until  # bench/ is the script's folder, so first on sys.path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

CONCURRENT = 16
BODY = {"brand": "CoffeeLab", "context": "เปิดตัวเมนูใหม่ Oat Latte หน้าฝน", "platform": "instagram", "seed": 1}
TARGET = 1.5  # the service may cost at most 1.5x the bare endpoint


def serve(kind: str, port: int, model: str) -> None:
    """Run one server in this process (the benchmark starts one per kind)."""
    import uvicorn

    if kind == "echo":
        from fastapi import FastAPI

        from app.schemas import CaptionRequest

        app = FastAPI()

        @app.post("/caption")
        async def echo(body: CaptionRequest) -> dict:
            return body.model_dump()
    else:
        import app.main as service
        from app.engine import GenerationResult, ModelInfo, SamplingDefaults
        from app.settings import Settings

        if kind == "before":  # the brand layer as first written: whole-text encodes, one per candidate item
            from app.prompter import Prompter
            from app.retrieval import BrandRetriever

            BrandRetriever.context = BrandRetriever._fit_exactly
            Prompter._cutting_is_exact = lambda self: False
        text = "☕ CoffeeLab Oat Latte เมนูใหม่ หอมนุ่ม ละมุนทุกแก้ว #CoffeeLab"

        class ZeroCost:
            info = ModelInfo(base=model, adapter=None, device="cpu", quantization=None)
            defaults = SamplingDefaults(0.0, 1.0, 0)

            def generate(self, requests, listeners=None):
                results = [GenerationResult(text, 100, 20, "stop", r.seed) for r in requests]
                for listener, result in zip(listeners or [], results):
                    listener.delta(result.text)
                    listener.finished(result)
                return results

        if kind == "zero-cost":
            from app.adapters import AdapterError
            from app.batching import Generation

            class ZeroCostBackend:
                """The generation interface (app/backend.py) answering at once, in place of the local one."""

                ready, last_error, depth, capacity = True, None, 0, 1_000_000

                def __init__(self, engine, settings, metrics):
                    self.info, self.defaults, self.metrics = engine.info, engine.defaults, metrics

                def submit(self, request, request_id="-", stream=False):
                    generation = Generation(request, request_id, stream, self.metrics)
                    generation.ended = True
                    generation.events.put_nowait(text)
                    generation.events.put_nowait(GenerationResult(text, 100, 20, "stop", request.seed))
                    return generation

                def admits(self, count):
                    return True

                def retry_after_s(self):
                    return 1

                def adapters(self):
                    return {}

                async def install_adapter(self, files):
                    raise AdapterError("no adapters here")

                async def close(self):
                    pass

            service.LocalBackend = ZeroCostBackend
        # No batch window: with a free engine, waiting for company would only add latency.
        settings = Settings(base_model=model, device="cpu", log_level="warning", max_batch_size=CONCURRENT,
                            batch_timeout_ms=0, _env_file=None)
        app = service.create_app(settings, engine_factory=lambda s: ZeroCost())
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")


SERIAL = itertools.count()


def vary(body: dict) -> dict:
    """Each request its own context, as in real use: the service keeps the token ids of the
    brand lines it has seen, and one body sent again and again would find its own there too."""
    return dict(body, context=f"{body['context']} ({next(SERIAL)})")


async def sequential(connections: dict, bodies: dict, n: int) -> dict:
    """p50 latency per server, one request at a time, the servers taking turns request by
    request: a noisy neighbour on a shared machine slows all of them alike."""
    times = {label: [] for label in connections}
    for _ in range(n):
        for label, connection in connections.items():
            start = time.perf_counter()
            status, _, text = await connection.request("POST", "/caption", vary(bodies[label]))
            times[label].append(time.perf_counter() - start)
            assert status == 200, text
    return {label: statistics.median(t) for label, t in times.items()}


async def concurrent(port: int, body: dict, n: int) -> float:
    """Requests per second from CONCURRENT clients, each on its own connection."""
    async def worker(count):
        connection = Connection("127.0.0.1", port)
        for _ in range(count):
            status, _, text = await connection.request("POST", "/caption", vary(body))
            assert status == 200, text
        connection.close()

    start = time.perf_counter()
    await asyncio.gather(*(worker(n // CONCURRENT) for _ in range(CONCURRENT)))
    return n / (time.perf_counter() - start)


async def measure(ports: dict, rounds: int, n: int) -> dict:
    dry = dict(BODY, dry_run=True)
    bodies = {"echo": BODY, "dry_run": dry, "before": dry, "zero-cost": BODY, "batcher": BODY}
    results = {label: {"p50": [], "rps": []} for label in ports}
    # Lean h11 connections, not httpx: its per-request cost (~2 ms here) would be most of the
    # echo's latency, and the ratios would say more about the client than the servers.
    connections = {label: Connection("127.0.0.1", port) for label, port in ports.items()}
    try:
        await sequential(connections, bodies, 20)  # warm-up: first-use indexes, caches, connections
        for _ in range(rounds):
            for label, p50 in (await sequential(connections, bodies, n)).items():
                results[label]["p50"].append(p50)
            for label, port in ports.items():
                results[label]["rps"].append(await concurrent(port, bodies[label], n * 2))
    finally:
        for connection in connections.values():
            connection.close()
    return {label: {k: statistics.median(v) for k, v in r.items()} for label, r in results.items()}


def main(args) -> None:
    ports = {label: free_port() for label in ("echo", "dry_run", "before", "zero-cost", "batcher")}
    env = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    kinds = {"echo": "echo", "dry_run": "service", "before": "before", "zero-cost": "zero-cost", "batcher": "service"}
    procs = [subprocess.Popen([sys.executable, __file__, "--serve", kinds[label], "--port", str(port),
                               "--model", args.model], env=env, cwd=REPO)
             for label, port in ports.items()]
    try:
        for label, port in ports.items():
            path = "/docs" if label == "echo" else "/ready"
            wait_until(f"http://127.0.0.1:{port}{path}", None, 120, f"the {label} server")
        r = asyncio.run(measure(ports, args.rounds, args.requests))
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(timeout=30)
    echo = r["echo"]
    print(f"POST /caption on 127.0.0.1, tokenizer {args.model}; sequential p50 over {args.requests} requests, "
          f"throughput at {CONCURRENT} concurrent clients; median of {args.rounds} alternating rounds")
    print(f"{'server':<12}{'p50 ms':>9}{'req/s':>9}{'p50 x echo':>12}{'req/s / echo':>14}")
    verdicts = []
    for label, m in r.items():
        lat, thr = m["p50"] / echo["p50"], m["rps"] / echo["rps"]
        print(f"{label:<12}{m['p50'] * 1000:>9.2f}{m['rps']:>9.1f}{lat:>12.2f}{thr:>14.2f}")
        if label in ("dry_run", "zero-cost"):
            verdicts.append(f"{label}: p50 {lat:.2f}x (target <= {TARGET}x) {'PASS' if lat <= TARGET else 'FAIL'}, "
                            f"throughput {thr:.2f} (target >= {1 / TARGET:.2f}) {'PASS' if thr >= 1 / TARGET else 'FAIL'}")
    print("\n".join(verdicts))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="models/tiny", help="folder of the tokenizer to serve with")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds per server")
    parser.add_argument("--requests", type=int, default=200, help="requests per sequential run")
    parser.add_argument("--serve", choices=["echo", "service", "before", "zero-cost"], help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve, args.port, args.model)
    else:
        main(args)
