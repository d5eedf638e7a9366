"""A brands reload gives way to requests' brand work, and still finishes while they never stop."""

import json
import sys
import threading
import time
from pathlib import Path

from app.brand_store import BrandStore, build_snapshot
from app.reload_pacing import ReloadPacer
from test_api import make_client, wait_ready

REPO = Path(__file__).resolve().parent.parent


def brands(n: int) -> list[dict]:
    return [
        {"name": f"Brand{i}", "aliases": [f"แบรนด์{i}"], "hashtags": [f"#B{i}"],
         "products": [{"name": f"สินค้า {i}", "description": "กาแฟคั่วเข้ม " * 5}],
         "example_posts": [f"โพสต์ตัวอย่างของ Brand{i} #B{i}"]}
        for i in range(n)
    ]


def test_pace_naps_only_while_brand_work_is_under_way():
    pacer = ReloadPacer(nap_s=0.0001, slice_s=60.0)
    pacer.pace()
    assert pacer.naps == 0  # nothing to give way to: full speed
    with pacer:
        with pacer:  # two requests at once
            pacer.pace()
            assert pacer.naps == 1
            pacer.pace()  # the slice after a nap is the reload's own
            assert pacer.naps == 1
        assert pacer.active == 1
    assert pacer.active == 0
    pacer = ReloadPacer(nap_s=0.0001, slice_s=0.0)
    with pacer:
        pacer.pace()
        pacer.pace()
    assert pacer.naps == 2


def test_the_switch_interval_is_shortened_for_the_reloads_and_restored_after_the_last():
    before = sys.getswitchinterval()
    pacer = ReloadPacer(switch_s=0.0005)
    second = pacer.reloading()
    with pacer.reloading():
        assert sys.getswitchinterval() == 0.0005
        second.__enter__()
    assert sys.getswitchinterval() == 0.0005  # the other reload still runs
    second.__exit__(None, None, None)
    assert sys.getswitchinterval() == before


def test_every_stage_of_a_build_paces_and_the_result_is_the_same():
    raw = json.dumps({"brands": brands(300)}, ensure_ascii=False).encode()
    calls = []
    paced = build_snapshot(raw, "brands.json", pace=lambda: calls.append(sys._getframe(1).f_code.co_name))
    plain = build_snapshot(raw, "brands.json")
    # Each brand validated, its names checked (the resolver's keys made then) and indexed for leaks.
    assert {name: calls.count(name) for name in set(calls)} == {
        "_pace": 300, "name_keys": 300, "__init__": 300,
    }
    assert paced.brands == plain.brands and paced.sha256 == plain.sha256
    assert paced.resolver._by_key == plain.resolver._by_key and paced.leaks._names == plain.leaks._names


def test_a_reload_under_endless_brand_work_gives_way_yet_finishes(tmp_path):
    """Requests that never stop (a saturating load) must not stop a reload: after each nap
    it keeps a slice of work, so it finishes however busy the loop is."""
    path = tmp_path / "brands.json"
    path.write_text(json.dumps({"brands": brands(5)}), encoding="utf-8")
    store = BrandStore(path)
    store.load()
    path.write_text(json.dumps({"brands": brands(400)}, ensure_ascii=False), encoding="utf-8")
    done = []
    reloader = threading.Thread(target=lambda: done.append(store.reload()))
    switch = sys.getswitchinterval()
    with store.pacer:  # brand work under way on this thread for the whole reload
        reloader.start()
        spins, deadline = 0, time.monotonic() + 300  # a reload starved for good fails, not hangs
        while reloader.is_alive() and time.monotonic() < deadline:
            spins += sum(range(200)) > 0  # Python work holding the GIL, as a request's does
    reloader.join()
    assert done == [True] and len(store.snapshot.brands) == 400
    assert store.pacer.naps > 0 and spins > 0
    assert sys.getswitchinterval() == switch


def test_requests_brand_work_runs_inside_the_pacer(brands_file, tiny_tokenizer, monkeypatch):
    """prepare and the checks enter the store's pacer: that is what a reload gives way to."""
    import app.service

    client, _ = make_client(brands_file, tiny_tokenizer)
    with client:
        wait_ready(client)
        service = client.app.state.service
        pacer, seen = service.store.pacer, []

        def watched(name, real):
            def call(*args, **kwargs):
                seen.append((name, pacer.active))
                return real(*args, **kwargs)
            return call

        monkeypatch.setattr(service, "prepare", watched("prepare", service.prepare))
        monkeypatch.setattr(app.service, "check_text", watched("check", app.service.check_text))
        r = client.post("/caption", json={"brand": "CoffeeLab", "context": "เมนูใหม่", "platform": "instagram"})
        assert r.status_code == 200, r.text
        r = client.post("/check", json={"brand": "CoffeeLab", "text": "กาแฟใหม่ #CoffeeLab"})
        assert r.status_code == 200, r.text
    assert seen == [("prepare", 1), ("check", 1), ("check", 1)] and pacer.active == 0


def test_a_paced_warm_up_builds_the_same_index_and_paces_inside_segmenting():
    from app.brand_store import parse_brands
    from app.retrieval import BrandRetriever

    brand = parse_brands((REPO / "brands" / "brands.json").read_bytes(), "brands.json").brands[0]
    count = len  # any token counter: the counts only have to agree
    calls, paced, plain = [], BrandRetriever(), BrandRetriever()
    paced.warm(brand, count, lambda: calls.append(1))
    plain.warm(brand, count)
    assert paced._index(brand).rows == plain._index(brand).rows
    assert paced._index(brand).weights == plain._index(brand).weights
    assert paced._costs_of(brand, count) == plain._costs_of(brand, count)
    # a pace per word newmm looks up: many per post, so a request never waits for a whole post
    assert len(calls) > 5 * len(plain._index(brand).items)


def test_the_loop_never_waits_for_a_brand_being_built_in_another_thread():
    """A warm-up paused mid-build (naps, or the GIL) must not hold up another brand's request."""
    from app.brand_store import parse_brands
    from app.retrieval import BrandRetriever

    first, second = parse_brands((REPO / "brands" / "brands.json").read_bytes(), "brands.json").brands[:2]
    retriever = BrandRetriever()
    retriever.warm(second, len)
    inside, release = threading.Event(), threading.Event()

    def stuck() -> None:
        inside.set()
        release.wait(30)

    builder = threading.Thread(target=retriever.warm, args=(first, len, stuck))
    builder.start()
    try:
        assert inside.wait(30)
        answered = []
        request = threading.Thread(target=lambda: answered.append(retriever.context(second, "กาแฟ", len, 400)))
        request.start()
        request.join(10)
        assert answered, "a request for a warm brand waited for another brand's build"
    finally:
        release.set()
        builder.join()
    assert retriever.is_warm(first, len)


def test_the_services_background_warm_up_gives_way_to_brand_work(brands_file, tiny_tokenizer):
    client, _ = make_client(brands_file, tiny_tokenizer)
    with client:
        wait_ready(client)
        service = client.app.state.service
        service.store.snapshot = build_snapshot(brands_file.read_bytes(), str(brands_file))  # nothing warm
        pacer = service.store.pacer
        with pacer:  # brand work under way all along
            warmed = client.portal.call(service.warm)
        assert warmed == len(service.store.snapshot.brands) and pacer.naps > 0


def test_a_replaced_snapshot_is_freed_by_the_reload_a_few_brands_at_a_time(tmp_path, monkeypatch):
    """Freed whole, a big snapshot held the GIL for 0.1-0.2 s wherever its last reference
    went, often the event loop. The reload frees it itself, brand by brand, pacing between."""
    import weakref

    path = tmp_path / "brands.json"
    path.write_text(json.dumps({"brands": brands(300)}, ensure_ascii=False), encoding="utf-8")
    store = BrandStore(path)
    store.load()
    old, refs = weakref.ref(store.snapshot), [weakref.ref(b) for b in store.snapshot.brands]
    alive = []
    monkeypatch.setattr(store.pacer, "pace", lambda: alive.append(sum(r() is not None for r in refs)))
    path.write_text(json.dumps({"brands": brands(301)}, ensure_ascii=False), encoding="utf-8")
    assert store.reload() is True
    assert old() is None and alive[-1] == 0  # freed before reload returned, on its thread
    steps = [a - b for a, b in zip(alive, alive[1:])]
    assert alive.index(0) > alive.index(300) and 0 < max(steps) <= 25


def test_a_snapshot_still_in_use_is_not_taken_apart(tmp_path, monkeypatch):
    import app.brand_store

    monkeypatch.setattr(app.brand_store, "RETIRE_WAIT_S", 0.05)
    path = tmp_path / "brands.json"
    path.write_text(json.dumps({"brands": brands(50)}, ensure_ascii=False), encoding="utf-8")
    store = BrandStore(path)
    held = store.load()  # as a request that started before the swap
    path.write_text(json.dumps({"brands": brands(51)}, ensure_ascii=False), encoding="utf-8")
    assert store.reload() is True and store.snapshot is not held
    assert len(held.brands) == 50 and held.resolver.exact("Brand7").brand is held.brands[7]


def test_taking_an_index_apart_leaves_what_is_shared_alone():
    from types import SimpleNamespace

    from app.brand_store import _empty

    shared, inner_shared = {"k": 1}, [1, 2]
    index = SimpleNamespace(
        own=dict.fromkeys(range(2000)), rows=list(range(2000)), shared=shared,
        inner=SimpleNamespace(table=dict.fromkeys(range(10)), shared=inner_shared),
    )
    paces = []
    _empty(index, lambda: paces.append(1))
    assert index.own == {} and index.rows == [] and index.inner.table == {}
    assert shared == {"k": 1} and inner_shared == [1, 2] and len(paces) >= 4
