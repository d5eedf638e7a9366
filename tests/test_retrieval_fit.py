"""The budget fit by summed token counts chooses exactly what the encode-every-candidate fit
chose, for every brand and every request in the repository's data."""

import json

import pytest

from app.brand_store import BrandStore
from app.prompter import Prompter
from app.prompts import brand_block
from app.tasks import task_named
from conftest import REPO


@pytest.fixture(scope="module")
def setup(tiny_tokenizer):
    snapshot = BrandStore(REPO / "brands" / "brands.json").load()
    records = [json.loads(line) for path in sorted((REPO / "training" / "data").glob("*.jsonl"))
               for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return snapshot, records, Prompter(tiny_tokenizer)


def test_same_items_as_the_exact_fit_for_every_request_in_the_data(setup):
    snapshot, records, prompter = setup
    by_name = {b.name: b for b in snapshot.brands}
    retriever, compared = snapshot.retriever, 0
    cases = [(by_name[r["brand"]], task_named(r["task"]).query(r)) for r in records if r.get("brand") in by_name]
    cases += [(brand, query) for brand in snapshot.brands for query in ("", "เปิดตัวสินค้าใหม่", "launch sale")]
    for brand, query in cases:
        for budget in (96, 200, 384):
            fast = retriever.context(brand, query, prompter.count_tokens, budget)
            assert fast == retriever._fit_exactly(brand, query, prompter.count_tokens, budget), (brand.name, query)
            assert fast[1] == prompter.count_tokens(brand_block(fast[0]))  # the size is exact
            compared += 1
    assert compared > 300


def test_a_tokenizer_that_merges_across_lines_falls_back_to_the_exact_fit(setup, monkeypatch):
    snapshot, records, _ = setup
    retriever = snapshot.retriever
    exact_calls = []
    original = retriever._fit_exactly

    def spy(*args):
        exact_calls.append(args)
        return original(*args)

    monkeypatch.setattr(retriever, "_fit_exactly", spy)

    def lumpy(text: str) -> int:  # not additive over lines: a sum of counts misjudges blocks
        return len(text) // 7

    for brand in snapshot.brands:
        fast = retriever.context(brand, "เปิดตัว", lumpy, 150)
        assert fast == original(brand, "เปิดตัว", lumpy, 150)
    assert exact_calls  # the one exact check caught the difference and corrected it


def test_scores_are_bm25s_own_for_every_request_in_the_data(setup):
    """The weights are read back from bm25s and summed as its get_scores sums them: the same
    float32 numbers, so the same order and ties, for every brand and request in the data."""
    import bm25s

    from app.thai import tokenize

    snapshot, records, _ = setup
    by_name = {b.name: b for b in snapshot.brands}
    cases = [(by_name[r["brand"]], task_named(r["task"]).query(r)) for r in records if r.get("brand") in by_name]
    cases += [(brand, text) for brand in snapshot.brands for text in (*brand.example_posts, "เปิดตัวสินค้าใหม่ sale")]
    references = {}
    for brand, query in cases:
        index = snapshot.retriever._index(brand)
        if brand.name not in references:
            reference = references[brand.name] = bm25s.BM25()
            reference.index([tokenize(text, index.dictionary) or [""] for _, text in index.items], show_progress=False)
        words = tokenize(query, index.dictionary)
        expected = [float(s) for s in references[brand.name].get_scores(words)] if words else [0.0] * len(index.items)
        assert index.scores(words) == expected, (brand.name, query)
    assert len(cases) > 100
