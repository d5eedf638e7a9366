"""Which brand a request means: exact name or alias, then a Thai-safe fuzzy match."""

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from rapidfuzz import fuzz, process

from app.brand_schema import Brand, name_keys, normalize_key


_BITS = 128  # width of the character-set signature used by the fuzzy first pass
_WORD = (1 << 64) - 1
_OTHER = 1 << (_BITS - 1)  # the bit every rarer character shares


def _popcount(a: np.ndarray) -> np.ndarray:
    if hasattr(np, "bitwise_count"):  # numpy >= 2.0
        return np.bitwise_count(a).astype(np.int64)
    return np.unpackbits(a.view(np.uint8).reshape(-1, 8), axis=1).sum(axis=1, dtype=np.int64)


@dataclass(frozen=True)
class BrandMatch:
    brand: Brand
    method: str  # "exact" (name), "alias", or "fuzzy"
    score: float  # 100 for exact and alias
    matched: str  # the name or alias that matched

    def summary(self) -> dict:
        """How the brand was found, as responses report it."""
        return {"method": self.method, "score": self.score, "matched": self.matched}


class BrandResolver:
    """Built once per brands version; lookups never touch the file."""

    def __init__(self, brands: Sequence[Brand], keys: dict[str, tuple[int, str, str]] | None = None):
        # key -> (brand index, "exact" or "alias", the label as written): name_keys(brands), as
        # the brands file's validation made it. Only strings and ints in the tuples: the garbage
        # collector stops tracking them, which matters at 40k keys.
        self._brands = tuple(brands)
        self._by_key = keys if keys is not None else name_keys(self._brands)
        self._keys = list(self._by_key)
        # A cheap, exact first pass for the fuzzy match (see _candidates): each key's length and
        # which characters it contains, as a 128-bit set in two uint64 words. The 127 most common
        # characters get a bit each; every rarer character shares the last bit. Built with numpy
        # over all keys at once: a Python loop over 40k keys would add ~0.3 s to every reload.
        lengths = np.fromiter(map(len, self._keys), dtype=np.int64, count=len(self._keys))
        codes = np.frombuffer("".join(self._keys).encode("utf-32-le", "surrogatepass"), dtype=np.uint32)
        chars, inverse, counts = np.unique(codes, return_inverse=True, return_counts=True)
        bit_of = np.full(len(chars), _BITS - 1, dtype=np.uint64)
        common = np.argsort(-counts, kind="stable")[: _BITS - 1]
        bit_of[common] = np.arange(len(common), dtype=np.uint64)
        self._bit = {chr(int(chars[i])): 1 << int(bit_of[i]) for i in common}
        bits = bit_of[inverse.ravel()]
        one = np.uint64(1)
        lo_bits = np.where(bits < 64, one << (bits & np.uint64(63)), np.uint64(0))
        hi_bits = np.where(bits >= 64, one << (bits & np.uint64(63)), np.uint64(0))
        self._lo = np.zeros(len(self._keys), dtype=np.uint64)
        self._hi = np.zeros(len(self._keys), dtype=np.uint64)
        filled = np.flatnonzero(lengths)  # reduceat needs non-empty segments
        if len(filled):
            starts = (np.cumsum(lengths) - lengths)[filled]
            self._lo[filled] = np.bitwise_or.reduceat(lo_bits, starts)
            self._hi[filled] = np.bitwise_or.reduceat(hi_bits, starts)
        self._len = lengths

    def _charset(self, key: str) -> int:
        mask = 0
        for ch in set(key):
            mask |= self._bit.get(ch, _OTHER)
        return mask

    def _candidates(self, key: str, cutoff: float) -> list[str]:
        """The keys that can still reach `cutoff`, in their original order; the rest are skipped.

        fuzz.ratio is 100 * (1 - indel / (n + m)) with indel = n + m - 2 * LCS. A character (bit)
        the query has and a key lacks cannot be in their LCS, so LCS <= n - a and LCS <= m - b,
        where a and b count the bits only the query / only the key has. That bounds the ratio
        from above without reading the key strings: over 40k keys, rapidfuzz spends most of its
        time on cache misses, as the strings lie scattered over the heap of a large snapshot.
        """
        q = self._charset(key)
        q_lo, q_hi = np.uint64(q & _WORD), np.uint64(q >> 64)
        only_query = _popcount(q_lo & ~self._lo) + _popcount(q_hi & ~self._hi)
        only_key = _popcount(self._lo & ~q_lo) + _popcount(self._hi & ~q_hi)
        n = len(key)
        lcs = np.minimum(n - only_query, self._len - only_key)
        total = self._len + n
        best = 100.0 * (2 * np.maximum(lcs, 0)) / np.maximum(total, 1)
        keep = np.flatnonzero(best >= cutoff - 1e-6)  # float slack: never drop a key rapidfuzz would keep
        keys = self._keys
        return [keys[i] for i in keep.tolist()]

    def exact(self, query: str) -> BrandMatch | None:
        hit = self._by_key.get(normalize_key(query))
        return BrandMatch(self._brands[hit[0]], hit[1], 100.0, hit[2]) if hit else None

    def _fuzzy(self, query: str, limit: int, cutoff: float) -> list[tuple[Brand, str, float]]:
        # processor=None: rapidfuzz's default_process would strip Thai combining marks and
        # make "ฟิตโก้" equal "ฟิตโก". Keys are already NFC + casefold.
        wanted = normalize_key(query)
        hits = process.extract(
            wanted, self._candidates(wanted, cutoff), scorer=fuzz.ratio, processor=None, limit=limit * 4,
            score_cutoff=cutoff,
        )
        best: dict[str, tuple[Brand, str, float]] = {}
        for key, score, _ in hits:
            index, _, label = self._by_key[key]
            brand = self._brands[index]
            if brand.name not in best or score > best[brand.name][2]:
                best[brand.name] = (brand, label, float(score))
        return sorted(best.values(), key=lambda hit: -hit[2])[:limit]

    def resolve(self, query: str, threshold: float) -> BrandMatch | None:
        """The brand `query` names, or None when nothing reaches `threshold`."""
        match = self.exact(query)
        if match:
            return match
        hits = self._fuzzy(query, limit=1, cutoff=threshold)
        if not hits:
            return None
        brand, label, score = hits[0]
        return BrandMatch(brand, "fuzzy", round(score, 1), label)

    def suggest(self, query: str, limit: int = 3) -> list[str]:
        """Up to `limit` close canonical names, for a 404's hint."""
        return [brand.name for brand, _, _ in self._fuzzy(query, limit=limit, cutoff=40)]
