"""Which brand facts go into a prompt: the profile always, then the products and example
posts that best match the request (BM25 over newmm tokens), within a token budget."""

import re
from collections.abc import Callable
from threading import Lock

import bm25s

from app.brand_schema import Brand
from app.prompts import BrandContext, Retrieved, brand_block, product_line
from app.thai import build_dictionary, tokenize

_THAI = re.compile("[\u0e00-\u0e7f]")


class BrandRetriever:
    """Built with each brands version and swapped with it; per-brand indexes are made on first use."""

    def __init__(self, brands: list[Brand]):
        names = set()
        for brand in brands:
            names.update(brand.all_names)
            names.update(p.name for p in brand.products)
        # Word by word: a dictionary entry with spaces ("Viper X Pro Gaming Mouse") would make
        # one token that a query saying "gaming mouse" never matches. Only Thai words need the
        # dictionary; newmm already splits Latin text at spaces and script changes.
        terms = {w for name in names for w in name.split() if _THAI.search(w)}
        self.dictionary = build_dictionary(terms)
        self._indexes: dict[str, tuple[list[tuple[str, str]], bm25s.BM25 | None]] = {}
        self._lock = Lock()

    def _index(self, brand: Brand):
        with self._lock:
            cached = self._indexes.get(brand.name)
            if cached is None:
                items = [("product", product_line(p)) for p in brand.products]
                items += [("example", post) for post in brand.example_posts]
                docs = [tokenize(text, self.dictionary) for _, text in items]
                index = None
                if any(docs):
                    index = bm25s.BM25()
                    index.index([d or [""] for d in docs], show_progress=False)
                cached = self._indexes[brand.name] = (items, index)
            return cached

    def rank(self, brand: Brand, query: str) -> list[tuple[str, Retrieved]]:
        """Every product and example post of `brand`, best match for `query` first."""
        items, index = self._index(brand)
        tokens = tokenize(query, self.dictionary) if query.strip() else []
        scores = [0.0] * len(items)
        if index is not None and tokens:
            scores = [float(s) for s in index.get_scores(tokens)]
        order = sorted(range(len(items)), key=lambda i: (-scores[i], i))  # ties keep the file's order
        return [(items[i][0], Retrieved(items[i][1], round(scores[i], 3))) for i in order]

    def context(
        self, brand: Brand, query: str, count_tokens: Callable[[str], int], budget: int
    ) -> tuple[BrandContext, int]:
        """The brand context for one request and its size in tokens, cut to fit `budget`."""
        products: list[Retrieved] = []
        examples: list[Retrieved] = []
        dropped: list[str] = []
        used = count_tokens(brand_block(BrandContext(brand)))
        for kind, item in self.rank(brand, query):
            target = products if kind == "product" else examples
            target.append(item)
            size = count_tokens(brand_block(BrandContext(brand, products, examples)))
            if size > budget:
                target.pop()
                dropped.append(f"{kind}: {item.text[:60]}")
            else:
                used = size
        if used > budget:
            dropped.insert(0, f"profile alone is {used} tokens, over the {budget}-token budget")
        return BrandContext(brand, tuple(products), tuple(examples), tuple(dropped)), used
