"""Which brand a request means: exact name or alias, then a Thai-safe fuzzy match."""

from dataclasses import dataclass

from rapidfuzz import fuzz, process

from app.brand_schema import Brand, normalize_key


@dataclass(frozen=True)
class BrandMatch:
    brand: Brand
    method: str  # "exact" (name), "alias", or "fuzzy"
    score: float  # 100 for exact and alias
    matched: str  # the name or alias that matched


class BrandResolver:
    """Built once per brands version; lookups never touch the file."""

    def __init__(self, brands: list[Brand]):
        self._by_key: dict[str, tuple[Brand, str, str]] = {}
        for brand in brands:
            self._by_key[normalize_key(brand.name)] = (brand, "exact", brand.name)
            for alias in brand.aliases:
                self._by_key.setdefault(normalize_key(alias), (brand, "alias", alias))
        self._keys = list(self._by_key)

    def exact(self, query: str) -> BrandMatch | None:
        hit = self._by_key.get(normalize_key(query))
        return BrandMatch(hit[0], hit[1], 100.0, hit[2]) if hit else None

    def _fuzzy(self, query: str, limit: int, cutoff: float) -> list[tuple[Brand, str, float]]:
        # processor=None: rapidfuzz's default_process would strip Thai combining marks and
        # make "ฟิตโก้" equal "ฟิตโก". Keys are already NFC + casefold.
        hits = process.extract(
            normalize_key(query), self._keys, scorer=fuzz.ratio, processor=None, limit=limit * 4, score_cutoff=cutoff
        )
        best: dict[str, tuple[Brand, str, float]] = {}
        for key, score, _ in hits:
            brand, _, label = self._by_key[key]
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
