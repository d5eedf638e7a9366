"""Brand resolution in Thai and Latin, ranked retrieval within a token budget, and checks in answers."""

import json

import pytest

from app.brand_resolver import BrandResolver
from app.brand_schema import Brand
from app.brand_store import build_snapshot
from app.thai import build_dictionary, tokenize
from conftest import REPO
from test_api import assert_error, make_client, wait_ready


@pytest.fixture(scope="module")
def snapshot():
    return build_snapshot((REPO / "brands" / "brands.json").read_bytes(), "brands.json")


@pytest.mark.parametrize("query,brand,method", [
    ("TechZone", "TechZone", "exact"),
    ("  tech   ZONE ", "TechZone", "alias"),             # case and spacing
    ("เทคโซน", "TechZone", "alias"),                     # Thai alias of a Latin name
    ("Khrua Khun Yai", "ครัวคุณยาย", "alias"),            # Latin alias of a Thai name
    ("ครัวคุนยาย", "ครัวคุณยาย", "fuzzy"),                # typo in a Thai name (ณ -> น)
    ("เทคโซล", "TechZone", "fuzzy"),                     # typo in a Thai alias
    ("CofeeLab", "CoffeeLab", "fuzzy"),                  # Latin typo
])
def test_resolution(snapshot, query, brand, method):
    match = snapshot.resolver.resolve(query, threshold=80)
    assert match is not None and (match.brand.name, match.method) == (brand, method)
    assert (match.score == 100) == (method != "fuzzy")


def test_combining_marks_are_not_ignored():
    resolver = BrandResolver([Brand(name="FitGo", aliases=["ฟิตโก"]), Brand(name="Other")])
    exact = resolver.resolve("ฟิตโก", 80)
    marked = resolver.resolve("ฟิตโก้", 80)  # a tone mark more: a different word, at best a fuzzy match
    assert exact.method == "alias" and exact.score == 100
    assert marked is None or (marked.method == "fuzzy" and marked.score < 100)


def test_weak_match_is_not_guessed(snapshot):
    assert snapshot.resolver.resolve("Coffee Shop Bangkok", threshold=80) is None
    assert "CoffeeLab" in snapshot.resolver.suggest("Coffee Shop Bangkok")


def test_brand_names_stay_whole_in_segmentation():
    plain = tokenize("โกลว์แล็บ เซรั่มใหม่")
    with_brands = tokenize("โกลว์แล็บ เซรั่มใหม่", build_dictionary(["โกลว์แล็บ"]))
    assert "โกลว์แล็บ" not in plain and "โกลว์แล็บ" in with_brands


def test_a_brands_retrieval_depends_on_its_own_record_only(snapshot):
    """Another brand's Thai name once joined a brand's words (BabyBloom's "บลูม" made CoffeeLab's
    "บลูมกาแฟ" one word less): adding or removing a client changed the prompts of the others,
    and a model trained with one brands file saw other prompts than it was served with."""
    data = json.loads((REPO / "brands" / "brands.json").read_text(encoding="utf-8"))
    alone = [b for b in data["brands"] if b["name"] == "CoffeeLab"]
    apart = build_snapshot(json.dumps({"brands": alone}, ensure_ascii=False).encode(), "brands.json")
    coffee, coffee_apart = snapshot.resolver.exact("CoffeeLab").brand, apart.resolver.exact("CoffeeLab").brand
    for query in ("บลูมกาแฟก่อนดริป", "ดริปกาแฟที่บ้าน", "เมนูใหม่ Cold Brew", ""):
        assert snapshot.retriever.rank(coffee, query) == apart.retriever.rank(coffee_apart, query), query


def test_retrieval_ranks_the_matching_items_first(snapshot):
    brand = snapshot.resolver.exact("TechZone").brand
    ranked = snapshot.retriever.rank(brand, "คีย์บอร์ด mechanical ลดราคา")
    top_kind, top = ranked[0]
    assert "keyboard" in top.text.casefold() or "คีย์บอร์ด" in top.text
    assert top.score > 0 and top.score >= ranked[-1][1].score


def test_context_fits_the_budget_and_shows_what_was_cut(snapshot):
    brand = snapshot.resolver.exact("CoffeeLab").brand
    count = lambda text: len(text) // 2
    roomy, used = snapshot.retriever.context(brand, "Cold Brew", count, budget=100_000)
    tight, tight_used = snapshot.retriever.context(brand, "Cold Brew", count, budget=used - 50)
    assert not roomy.dropped and used <= 100_000
    assert tight.dropped and tight_used <= used - 50
    assert len(tight.products) + len(tight.examples) < len(roomy.products) + len(roomy.examples)


def test_minimal_brand_retrieves_nothing_and_still_works():
    snap = build_snapshot(json.dumps({"brands": [{"name": "Bare"}]}).encode(), "b.json")
    context, used = snap.retriever.context(snap.brands[0], "เปิดตัว", lambda t: len(t), 1000)
    assert context.products == () and context.examples == () and used > 0


def test_thai_typo_over_http_returns_the_right_brand(brands_file, tiny_tokenizer):
    client, _ = make_client(brands_file, tiny_tokenizer)
    with client:
        wait_ready(client)
        r = client.post("/caption", json={"brand": "เทคโซล", "context": "เปิดตัวเมาส์เกมมิ่ง"})
        assert r.status_code == 200
        assert r.json()["brand"] == "TechZone"
        assert r.json()["brand_match"] == {"method": "fuzzy", "score": pytest.approx(83.3, abs=0.1), "matched": "เทคโซน"}
        err = assert_error(client.post("/caption", json={"brand": "เทค", "context": "x launch"}), 404, "brand_not_found")
        assert "TechZone" in err["suggestions"]


def test_dry_run_shows_retrieved_items_with_scores(brands_file, tiny_tokenizer):
    client, _ = make_client(brands_file, tiny_tokenizer)
    with client:
        wait_ready(client)
        body = client.post("/caption", json={"brand": "TechZone", "context": "Gaming Mouse ใหม่", "dry_run": True}).json()
    context = body["context"]
    items = context["products"] + context["examples"]
    assert items and all(isinstance(i["score"], float) for i in items)
    assert context["tokens"] <= context["budget"]
    assert any(i["score"] > 0 for i in items)


def test_checks_and_attempts_in_responses(brands_file, tiny_tokenizer):
    from fakes import FakeEngine

    replies = iter(["☕ เช้าใหม่กับ CoffeeLab #CoffeeLab", "🎮 เมาส์ใหม่จาก TechZone #TechZone ⚡"])
    engine = FakeEngine(tiny_tokenizer, reply=lambda: next(replies))
    client, _ = make_client(brands_file, tiny_tokenizer, engine=engine, batch_timeout_ms=100)
    with client:
        wait_ready(client)
        r = client.post("/caption", json={"brand": "TechZone", "context": "Gaming mouse launch", "attempts": 2, "seed": 5})
        metrics = client.get("/metrics").text
    body = r.json()
    assert r.status_code == 200
    assert len(engine.batches) == 1 and len(engine.batches[0]) == 2  # candidates generated in one batch
    assert [c["seed"] for c in body["candidates"]] == [5, 6]
    first, second = body["candidates"]
    assert first["checks"]["on_brand"] is False and first["checks"]["other_brands"][0]["brand"] == "CoffeeLab"
    assert second["chosen"] and body["text"] == second["text"] and body["checks"]["on_brand"]
    assert 'check="other_brand"' not in metrics  # only the chosen answer is counted, and it passed


def test_failed_checks_are_counted_by_check(brands_file, tiny_tokenizer):
    from fakes import FakeEngine

    engine = FakeEngine(tiny_tokenizer, reply="☕ เช้าใหม่กับ CoffeeLab #CoffeeLab")
    client, _ = make_client(brands_file, tiny_tokenizer, engine=engine)
    with client:
        wait_ready(client)
        body = client.post("/caption", json={"brand": "TechZone", "context": "Gaming mouse launch"}).json()
        metrics = client.get("/metrics").text
    assert body["checks"]["on_brand"] is False
    assert 'ai_director_check_failures_total{check="other_brand"} 1.0' in metrics
    assert 'ai_director_check_failures_total{check="brand_mentioned"} 1.0' in metrics


def test_check_endpoint_lints_any_copy(brands_file, tiny_tokenizer):
    client, _ = make_client(brands_file, tiny_tokenizer)
    with client:
        wait_ready(client)
        body = client.post("/check", json={"brand": "speedyloans", "text": "อนุมัติ 100% ทันที ☕ #CoffeeLab", "platform": "x"}).json()
        assert_error(client.post("/check", json={"brand": "TechZone", "text": "x" * 100_000}), 422, "invalid_request")
    checks = body["checks"]
    assert body["brand"] == "SpeedyLoans" and checks["on_brand"] is False
    assert checks["other_brands"][0]["brand"] == "CoffeeLab" and not checks["brand_mentioned"]
    assert len(checks["reasons"]) >= 2


def test_reload_swaps_the_retrieval_index(brands_file):
    from app.brand_store import BrandStore

    store = BrandStore(brands_file)
    old = store.load()
    data = json.loads(brands_file.read_text(encoding="utf-8"))
    data["brands"].append({"name": "NoodleNinja", "products": [{"name": "ราเมนต้มยำ"}]})
    brands_file.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    assert store.reload() is True
    assert store.snapshot.retriever is not old.retriever
    brand = store.snapshot.resolver.exact("NoodleNinja").brand
    assert store.snapshot.retriever.rank(brand, "ราเมน")[0][1].text.startswith("ราเมนต้มยำ")
    assert old.resolver.exact("NoodleNinja") is None  # the old snapshot is untouched


def test_deleted_or_broken_file_keeps_the_last_good_version(brands_file):
    from app.brand_store import BrandStore

    outcomes = []
    store = BrandStore(brands_file, on_reload=outcomes.append)
    good = store.load()
    brands_file.unlink()
    assert store.reload() is False and store.snapshot is good and "file not found" in store.last_error.message
    brands_file.write_text('{"brands": [{"name": "A", "hashtag": []}]}')
    assert store.reload() is False and store.snapshot is good and "hashtag" in store.last_error.message
    brands_file.write_text('{"brands": [{"name": "A"}]}')
    assert store.reload() is True and store.last_error is None and len(store.snapshot.brands) == 1
    assert outcomes == [False, False, True]


def test_fuzzy_first_pass_never_changes_the_answer():
    """The resolver skips keys that cannot reach the cutoff; on 3,000 brands it must pick
    exactly what rapidfuzz picks over every key."""
    import random

    from rapidfuzz import fuzz, process

    from app.brand_schema import normalize_key

    rng = random.Random(7)
    syllables = ["กา", "แฟ", "โซ", "ลาร์", "เทค", "ฟิต", "โก้", "ลีฟ", "ครัว", "ยาย", "ซัน", "มู"]
    brands = []
    for i in range(3000):
        thai = "".join(rng.choice(syllables) for _ in range(rng.randint(2, 4))) + str(i)
        brands.append(Brand(name=f"Brand{i} {rng.choice(['Tea', 'Tech', 'Glow', 'Fit'])}", aliases=[thai]))
    resolver = BrandResolver(brands)
    keys = list(resolver._by_key)
    for _ in range(150):
        target = normalize_key(rng.choice(brands).all_names[rng.randint(0, 1)])
        pos = rng.randrange(len(target))
        query = target[:pos] + rng.choice(["", "x", "ก", "้"]) + target[pos + 1:]
        for cutoff in (40, 80):
            brute = process.extract(query, keys, scorer=fuzz.ratio, processor=None, limit=12, score_cutoff=cutoff)
            best = max((s for _, s, _ in brute), default=None)
            got = resolver._fuzzy(query, limit=1, cutoff=cutoff)
            assert (got[0][2] if got else None) == best, query


async def test_watch_survives_the_folder_being_replaced(tmp_path):
    """A deploy that swaps the whole brands folder must not leave a dead watch behind."""
    import asyncio
    import shutil

    from app.brand_store import BrandStore

    folder = tmp_path / "brands"
    folder.mkdir()
    path = folder / "brands.json"
    path.write_text(json.dumps({"brands": [{"name": "A"}]}))
    store = BrandStore(path)
    store.load()
    stop = asyncio.Event()
    task = asyncio.create_task(store.watch(stop, retry_s=0.2))

    async def served(name, timeout=3.0):
        for _ in range(int(timeout / 0.05)):
            if store.snapshot.brands[0].name == name:
                return True
            await asyncio.sleep(0.05)
        return False

    try:
        await asyncio.sleep(0.3)
        shutil.rmtree(folder)
        await asyncio.sleep(0.5)
        assert store.snapshot.brands[0].name == "A" and store.last_error is not None  # still serving, error shown
        folder.mkdir()
        path.write_text(json.dumps({"brands": [{"name": "B"}]}))
        assert await served("B")
        path.write_text(json.dumps({"brands": [{"name": "C"}]}))  # the new folder is watched too
        assert await served("C") and store.last_error is None
    finally:
        stop.set()
        await asyncio.wait_for(task, 5)


def test_bare_brand_gets_a_full_answer_over_http(tmp_path, tiny_tokenizer):
    """The spec's minimal record (no hashtags, no products, no posts) is served like any other."""
    path = tmp_path / "brands.json"
    path.write_text(json.dumps({"brands": [{"name": "TechZone", "description": "ร้านอุปกรณ์เกมมิ่งและไอที"}]},
                               ensure_ascii=False), encoding="utf-8")
    client, _ = make_client(path, tiny_tokenizer)
    with client:
        wait_ready(client)
        caption = client.post("/caption", json={"brand": "TechZone", "context": "launch", "platform": "x"})
        dry = client.post("/brief", json={"brand": "TechZone", "objectives": "ยอดขาย", "dry_run": True})
        check = client.post("/check", json={"brand": "TechZone", "text": "🎮🎮🎮"})
    assert caption.status_code == 200 and caption.json()["checks"]["hashtags_brand"] == []
    assert dry.status_code == 200 and dry.json()["context"]["products"] == [] and dry.json()["context"]["examples"] == []
    assert check.status_code == 200 and check.json()["checks"]["thai_ratio"] == 0.0


def test_a_snapshot_holds_no_reference_cycles(brands_file):
    """build_snapshot freezes what it builds (gc.freeze): that is only safe while a dropped
    snapshot, its lazily built retrieval indexes included, is freed by reference counting."""
    import gc
    import weakref

    from app.brand_store import build_snapshot

    snapshot = build_snapshot(brands_file.read_bytes(), str(brands_file))
    for brand in snapshot.brands:
        snapshot.retriever.context(brand, "โปรโมชั่น launch", lambda text: len(text) // 2, 384)
        snapshot.resolver.resolve(brand.name[:-1] + "x", 80)
    parts = [weakref.ref(part) for part in (snapshot.retriever, snapshot.resolver, snapshot.leaks)]
    gc.collect()
    gc.disable()
    try:
        del snapshot, brand
        assert [part() for part in parts] == [None, None, None]  # freed at once, without the collector
    finally:
        gc.enable()
