"""Dynamic batching: the collection function on a plain queue, then the worker with a fake model."""

import asyncio
import time

import pytest

from app.batching import _STOP, BatchWorker, QueueFullError, collect_batch
from app.engine import GenerationRequest, GenerationResult
from app.metrics import Metrics


async def test_collect_stops_when_full():
    q = asyncio.Queue()
    for i in range(5):
        q.put_nowait(i)
    assert await collect_batch(q, max_batch_size=3, timeout_s=5) == [0, 1, 2]
    assert q.qsize() == 2


async def test_collect_stops_at_timeout():
    q = asyncio.Queue()
    q.put_nowait("a")
    start = time.perf_counter()
    assert await collect_batch(q, max_batch_size=8, timeout_s=0.05) == ["a"]
    assert time.perf_counter() - start >= 0.04


async def test_collect_gathers_late_arrivals_within_timeout():
    q = asyncio.Queue()
    q.put_nowait("a")
    asyncio.get_running_loop().call_later(0.02, q.put_nowait, "b")
    # "b" arrives 20 ms after "a", well inside the 500 ms window: it joins the batch
    assert await collect_batch(q, max_batch_size=2, timeout_s=0.5) == ["a", "b"]


async def test_collect_ends_on_sentinel():
    q = asyncio.Queue()
    for item in ("a", _STOP, "b"):
        q.put_nowait(item)
    assert await collect_batch(q, max_batch_size=8, timeout_s=1) == ["a", _STOP]


class AssertingEngine:
    """Fails unless it is handed exactly `expected` requests at once."""

    def __init__(self, expected: int):
        self.expected = expected
        self.calls = 0

    def generate(self, requests, listeners=None):
        assert len(requests) == self.expected, f"got a batch of {len(requests)}"
        self.calls += 1
        return [GenerationResult(r.prompt.upper(), 1, 1, "stop") for r in requests]


async def test_concurrent_requests_are_generated_together():
    engine = AssertingEngine(expected=2)
    worker = BatchWorker(engine, max_batch_size=4, batch_timeout_ms=200, max_queue=8, metrics=Metrics())
    worker.start()
    a, b = await asyncio.gather(
        worker.submit(GenerationRequest("a", 4, 0.0)).result(), worker.submit(GenerationRequest("b", 4, 0.0)).result()
    )
    await worker.stop()
    assert (a.text, b.text) == ("A", "B") and engine.calls == 1


async def test_full_queue_refuses_at_once():
    worker = BatchWorker(AssertingEngine(1), max_batch_size=1, batch_timeout_ms=0, max_queue=1, metrics=Metrics())
    first = worker.submit(GenerationRequest("a", 1, 0.0))  # worker not started: it waits
    with pytest.raises(QueueFullError):
        worker.submit(GenerationRequest("b", 1, 0.0))
    worker.start()
    assert (await first.result()).text == "A"
    await worker.stop()


async def test_cancelled_request_is_skipped():
    engine = AssertingEngine(expected=1)
    worker = BatchWorker(engine, max_batch_size=4, batch_timeout_ms=50, max_queue=8, metrics=Metrics())
    gone = worker.submit(GenerationRequest("gone", 1, 0.0))
    gone.cancelled = True  # as a timed-out request, or one whose client left, does
    worker.start()
    kept = await worker.submit(GenerationRequest("kept", 1, 0.0)).result()
    await worker.stop()
    assert kept.text == "KEPT" and engine.calls == 1


def test_bad_knobs_fail_when_built():
    with pytest.raises(ValueError, match="max_batch_size must be greater than 0"):
        BatchWorker(AssertingEngine(1), 0, 10, 8, Metrics())


async def test_streamed_text_is_handed_over_at_most_once_per_interval():
    class Burst:
        def generate(self, requests, listeners=None):
            for listener in listeners:
                for piece in ("เปิด", "ตัว", "วันนี้", "!"):
                    listener.delta(piece)
                listener.finished(GenerationResult("เปิดตัววันนี้!", 1, 4, "stop"))
            return [GenerationResult("เปิดตัววันนี้!", 1, 4, "stop") for _ in requests]

    worker = BatchWorker(Burst(), 1, 0, 8, Metrics(), stream_interval_ms=60_000)
    worker.start()
    events = [e async for e in worker.submit(GenerationRequest("p", 4, 0.0), stream=True)]
    await worker.stop()
    # Four pieces in one burst: handed over as the first piece and then the rest joined (or all
    # joined, when the reader comes late), none lost, and the result last.
    assert len(events) <= 3 and all(isinstance(e, str) for e in events[:-1])
    assert events[-1].text == "".join(events[:-1]) == "เปิดตัววันนี้!"


async def test_a_failed_batch_reruns_every_neighbour_that_has_shown_no_text():
    class FailsWithPoison:
        def generate(self, requests, listeners=None):
            for listener in listeners:
                listener.delta("เปิด")  # every row has produced text before the failure
            if any(r.prompt == "poison" for r in requests):
                raise RuntimeError("boom")
            results = [GenerationResult(r.prompt + " เปิด", 1, 1, "stop") for r in requests]
            for listener, result in zip(listeners, results):
                listener.finished(result)
            return results

    worker = BatchWorker(FailsWithPoison(), 3, 200, 8, Metrics())
    worker.start()
    plain = worker.submit(GenerationRequest("plain", 1, 0.0))
    poison = worker.submit(GenerationRequest("poison", 1, 0.0))
    streamed = worker.submit(GenerationRequest("streamed", 1, 0.0), stream=True)
    outcomes = await asyncio.gather(plain.result(), poison.result(), streamed.result(), return_exceptions=True)
    await worker.stop()
    assert outcomes[0].text == "plain เปิด"  # its text was never shown: rerun alone, answered
    assert isinstance(outcomes[1], RuntimeError)  # the cause fails alone
    assert isinstance(outcomes[2], RuntimeError)  # a stream that showed text cannot be rerun


def test_one_wake_up_of_the_loop_carries_every_rows_text_then_their_results():
    """The rows of a batch report in the same instant: one call into the event loop for all of them."""
    from types import SimpleNamespace

    from app.batching import Courier

    scheduled, seen = [], []

    class Loop:
        def call_soon_threadsafe(self, callback, *args):
            scheduled.append(callback)

    courier = Courier(Loop())
    rows = [SimpleNamespace(_hand_over=lambda i=i: seen.append(("text", i)),
                            events=SimpleNamespace(put_nowait=lambda result, i=i: seen.append(("result", i))))
            for i in range(16)]
    for row in rows:
        courier.post(row)
    courier.post(rows[3], result="done")
    assert len(scheduled) == 1
    scheduled.pop()()
    assert seen == [("text", i) for i in range(16)] + [("text", 3), ("result", 3)]
    courier.post(rows[0])  # the next step's text needs a new wake-up
    assert len(scheduled) == 1
