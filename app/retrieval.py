"""Which brand facts go into a prompt: the profile always, then the products and example
posts that best match the request (BM25 over newmm tokens), within a token budget.

Token counts are taken once per brand, tokenizer and brands version, line by line, and a
request fits its budget by adding them up. Byte-level BPE (Qwen's and the tiny model's)
never merges across a line break except for the break itself, which joins the end of the
line before it, so each line is counted with its newline and the last one without. One
exact encode of the chosen block checks the sum; a tokenizer that merges across lines
after all gets the line-by-line exact fit instead, so the chosen items never differ.
"""

from array import array
from collections.abc import Callable
from dataclasses import dataclass

import bm25s

from app.brand_schema import Brand
from app.prompts import (
    BLOCK_HEADER, SECTION_HEADERS, BrandContext, Retrieved, brand_block, item_line, neutralize, product_line,
    profile_lines,
)
from app.reload_pacing import unpaced
from app.thai import THAI_LETTER, Dictionary, build_dictionary, tokenize



class BrandRetriever:
    """Built with each brands version and swapped with it; per-brand indexes are made on first use.

    Each brand segments its items and its queries with newmm's words plus its own names and
    product names. Its prompts then depend on its own record alone: with one dictionary of
    every brand's terms, another client's Thai name changed how a brand's posts were split
    (and a model trained with one brands file was served other prompts with another). And no
    reload builds that dictionary, about 0.2 s for 10,000 brands.
    """

    def __init__(self):
        # Filled from the warm-up thread and read on the loop, without a lock: a dict's get and
        # setdefault are atomic, and the loop must never wait for a build in another thread.
        # Two threads building one brand at once keep the first; the other's work is dropped.
        self._indexes: dict[str, _Index] = {}
        self._costs: dict[tuple[str, Callable], _Costs] = {}

    def _index(self, brand: Brand, pace: Callable[[], None] = unpaced) -> "_Index":
        cached = self._indexes.get(brand.name)
        if cached is None:
            cached = self._indexes.setdefault(brand.name, _Index.build(brand, pace))
        return cached

    def _ranked(self, brand: Brand, query: str) -> list[tuple[int, str, Retrieved]]:
        """(item index, kind, item) for every product and example post, best match first."""
        index = self._index(brand)
        scores = index.scores(tokenize(query, index.dictionary) if query.strip() else [])
        items = index.items
        order = sorted(range(len(items)), key=lambda i: (-scores[i], i))  # ties keep the file's order
        return [(i, items[i][0], Retrieved(items[i][1], round(scores[i], 3))) for i in order]

    def rank(self, brand: Brand, query: str) -> list[tuple[str, Retrieved]]:
        """Every product and example post of `brand`, best match for `query` first."""
        return [(kind, item) for _, kind, item in self._ranked(brand, query)]

    def _costs_of(
        self, brand: Brand, count_tokens: Callable[[str], int], pace: Callable[[], None] = unpaced
    ) -> "_Costs":
        key = (brand.name, count_tokens)  # bound methods of one tokenizer compare equal
        costs = self._costs.get(key)
        if costs is None:
            items = self._index(brand, pace).items
            profile = "\n".join([BLOCK_HEADER, *profile_lines(brand)])
            lines = [item_line(kind, text) for kind, text in items]
            costs = self._costs.setdefault(key, _Costs.count(profile, lines, count_tokens, pace))
        return costs

    def is_warm(self, brand: Brand, count_tokens: Callable[[str], int]) -> bool:
        return (brand.name, count_tokens) in self._costs

    def warm(self, brand: Brand, count_tokens: Callable[[str], int], pace: Callable[[], None] = unpaced) -> None:
        """Build the brand's index and token counts now, rather than on its first request; in a
        thread, with `pace` giving way to requests (see app/reload_pacing.py)."""
        self._costs_of(brand, count_tokens, pace)

    def context(
        self, brand: Brand, query: str, count_tokens: Callable[[str], int], budget: int
    ) -> tuple[BrandContext, int]:
        """The brand context for one request and its size in tokens, cut to fit `budget`."""
        costs = self._costs_of(brand, count_tokens)
        chosen: dict[str, list[Retrieved]] = {"product": [], "example": []}
        last_example = -1  # the block's last line when any example post is in it
        dropped: list[str] = []
        total = costs.profile.with_newline  # every line counted with its newline
        used = costs.profile.alone

        def size(sum_lines: int, last_line: "_Line") -> int:
            return sum_lines - last_line.with_newline + last_line.alone  # the block's last line has no newline

        for i, kind, item in self._ranked(brand, query):
            line = costs.items[i]
            trial = total + line.with_newline + (costs.headers[kind].with_newline if not chosen[kind] else 0)
            # The block's last line: the last example post, else the last product.
            tail = costs.items[last_example] if kind == "product" and chosen["example"] else line
            if size(trial, tail) > budget:
                dropped.append(f"{kind}: {item.text[:60]}")
                continue
            chosen[kind].append(item)
            if kind == "example":
                last_example = i
            total = trial
            used = size(trial, tail)
        context = BrandContext(brand, tuple(chosen["product"]), tuple(chosen["example"]))
        if count_tokens(brand_block(context)) != used:  # the one exact check
            return self._fit_exactly(brand, query, count_tokens, budget)
        if used > budget:
            dropped.insert(0, f"profile alone is {used} tokens, over the {budget}-token budget")
        return BrandContext(brand, context.products, context.examples, tuple(dropped)), used

    def _fit_exactly(
        self, brand: Brand, query: str, count_tokens: Callable[[str], int], budget: int
    ) -> tuple[BrandContext, int]:
        """The reference fit: one encode of the whole block per candidate item."""
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


@dataclass(frozen=True)
class _Index:
    """One brand's products and example posts, its dictionary, and their BM25 weights by word,
    as bm25s computes them (Lucene's BM25) and keeps them: a sparse matrix, one row per word."""

    items: list[tuple[str, str]]  # (kind, text)
    dictionary: Dictionary
    rows: dict[str, int]  # word -> its row
    starts: list[int]  # row k's entries are starts[k]:starts[k + 1] of the two below
    columns: list[int]  # the item of each entry
    weights: array  # its weight, float32

    @classmethod
    def build(cls, brand: Brand, pace: Callable[[], None] = unpaced) -> "_Index":
        items = [("product", product_line(p)) for p in brand.products]
        items += [("example", post) for post in brand.example_posts]
        names = [*brand.all_names, *(p.name for p in brand.products)]
        # Word by word: a dictionary entry with spaces ("Viper X Pro Gaming Mouse") would make
        # one token that a query saying "gaming mouse" never matches. Only Thai words need the
        # dictionary; newmm already splits Latin text at spaces and script changes.
        dictionary = build_dictionary({w for name in names for w in name.split() if THAI_LETTER.search(w)})
        # Segmenting is most of a build, a few ms of Python per post: it paces at every word
        # newmm looks up, so that a request's brand work never waits for a whole post.
        segmenting = dictionary if pace is unpaced else _Paced(dictionary, pace)
        docs = [tokenize(text, segmenting) for _, text in items]
        if not any(docs):
            return cls(items, dictionary, {}, [0], [], array("f"))
        bm25 = bm25s.BM25()
        bm25.index([d or [""] for d in docs], show_progress=False)
        matrix = bm25.scores
        # bm25s's "" is a placeholder past the last row; no query word is empty.
        rows = {word: k for word, k in bm25.vocab_dict.items() if word}
        return cls(items, dictionary, rows, matrix["indptr"].tolist(), matrix["indices"].tolist(),
                   array("f", matrix["data"].tolist()))

    def scores(self, words: list[str]) -> list[float]:
        """BM25 of every item for a query's words: bm25s's get_scores without its numpy set-up
        (most of a lookup for ten items). The sums are its float32 ones: each addition is done
        in double precision and stored to float32, which rounds to the same number."""
        sums = array("f", bytes(4 * len(self.items)))
        rows, starts, columns, weights = self.rows, self.starts, self.columns, self.weights
        for word in words:
            k = rows.get(word)
            if k is not None:
                for j in range(starts[k], starts[k + 1]):
                    sums[columns[j]] += weights[j]
        return sums.tolist()


class _Paced:
    """A dictionary that paces at each look-up newmm makes: the only way back into Python
    from deep inside its segmenting of one text."""

    def __init__(self, dictionary: Dictionary, pace: Callable[[], None]):
        self._dictionary, self._pace = dictionary, pace

    def prefixes(self, text: str, start: int = 0) -> list[str]:
        self._pace()
        return self._dictionary.prefixes(text, start)

    def __contains__(self, word: str) -> bool:
        return word in self._dictionary

    def __len__(self) -> int:
        return len(self._dictionary)

    def __iter__(self):
        return iter(self._dictionary)


@dataclass(frozen=True)
class _Line:
    with_newline: int  # tokens of the line followed by "\n"
    alone: int  # tokens of the line when it ends the block


@dataclass(frozen=True)
class _Costs:
    """One brand's token counts for one tokenizer: the profile, the section headers, each item."""

    profile: _Line
    headers: dict[str, _Line]
    items: list[_Line]

    @classmethod
    def count(
        cls, profile: str, item_lines: list[str], count_tokens: Callable[[str], int],
        pace: Callable[[], None] = unpaced,
    ) -> "_Costs":
        def line(text: str) -> _Line:
            pace()
            text = neutralize(text)
            return _Line(count_tokens(text + "\n"), count_tokens(text))

        return cls(line(profile), {k: line(h) for k, h in SECTION_HEADERS.items()}, [line(t) for t in item_lines])
