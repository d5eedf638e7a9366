"""On-brand checks for generated copy, shared by the service and the offline evaluation.

Pure Python and fast: names and hashtags are found with dict look-ups, never a loop over
brands. Everything is compared in `normalize_key` form (NFC, casefolded, spaces
collapsed) so text and brand terms meet in the same shape.
"""

import re
import unicodedata
from collections.abc import Callable, Iterable, Sequence
from functools import lru_cache

from pydantic import BaseModel, Field
from typing_extensions import TypedDict  # pydantic reads typing.TypedDict only from Python 3.12

from app.brand_schema import Brand, name_keys, normalize_key
from app.platforms import check_platform
from app.reload_pacing import unpaced
from app.thai import THAI_LETTER, hashtags, thai_ratio

_MIN_THAI_LEAK = 3  # shorter Thai terms turn up inside ordinary words
_KEY = 3  # terms are bucketed by their first 3 characters


def _word(ch: str) -> bool:
    """A letter/digit of a script that separates words with spaces. Thai is left out on purpose:
    "ลองTechZoneวันนี้" mentions TechZone even though Thai letters touch it."""
    return (ch.isalnum() or ch == "_") and not "\u0e00" <= ch <= "\u0e7f"


class _Terms:
    """Leftmost-longest, non-overlapping literal matching by dict look-up: cheap to build for
    40k terms (a 40k-way regex takes seconds to compile) and ~1 µs per text position.
    Latin edges need a word boundary ("Lab" is not in "CoffeeLab"; "#GreenLeaf" has GreenLeaf);
    Thai is unspaced, so a Thai edge is a substring match. Either way a term followed by a
    combining mark is another word: "ฟิตโก้" is not "ฟิตโก"."""

    def __init__(self, terms: Iterable[str]):
        # first characters -> (term lengths, longest first; the terms). Checking one slice per
        # length keeps a crowded prefix ("กาแฟ..." x 3,000 brands) as cheap as a rare one.
        grouped: dict[str, set[str]] = {}
        for term in terms:
            if term:
                grouped.setdefault(term[:_KEY], set()).add(term)
        self._buckets = {
            key: (sorted({len(t) for t in group}, reverse=True), group) for key, group in grouped.items()
        }
        self._key_lengths = sorted({len(key) for key in self._buckets}, reverse=True)
        # Where a term can start: its first character. Most of a text's positions hold none, and
        # a regex finds the rest in C; this was most of a check's cost, position by position.
        firsts = sorted({term[0] for group in grouped.values() for term in group})
        self._starts = re.compile("[" + "".join(map(re.escape, firsts)) + "]") if firsts else None

    def _at(self, s: str, i: int) -> str | None:
        if i and _word(s[i]) and _word(s[i - 1]):
            return None  # inside a Latin word: nothing can start here
        for k in self._key_lengths:
            lengths, group = self._buckets.get(s[i : i + k], ((), ()))
            for n in lengths:
                term, j = s[i : i + n], i + n
                if j <= len(s) and term in group and (  # near the end a slice comes up short
                    j == len(s)
                    or not (unicodedata.category(s[j]) == "Mn" or (_word(term[-1]) and _word(s[j])))
                ):
                    return term
        return None

    def findall(self, s: str) -> list[str]:
        found, free = [], 0  # free: the first position not inside a term found
        for start in self._starts.finditer(s) if self._starts else ():
            i = start.start()
            if i >= free and (term := self._at(s, i)):
                found.append(term)
                free = i + len(term)
        return found


@lru_cache(maxsize=4096)
def _names_of(names: tuple[str, ...]) -> _Terms:
    """A brand's own names to look for, built once per spelling of them, not per check."""
    return _Terms(map(normalize_key, names))


def _own_terms(brand: Brand) -> set[str]:
    return {normalize_key(t) for t in (*brand.all_names, *brand.hashtags)}


class LeakIndex:
    """Names, aliases and signature hashtags of every brand; built once per brands version."""

    def __init__(
        self, brands: Sequence[Brand], pace: Callable[[], None] = unpaced,
        keys: dict[str, tuple[int, str, str]] | None = None,
    ):
        # Names and aliases: key -> [(brand, label as written)], from name_keys(brands) (a key
        # is one brand's), as the brands file's validation made it. Hashtags are shared freely.
        self._names: dict[str, list[tuple[str, str]]] = {
            key: [(brands[i].name, label)]
            for key, (i, _, label) in (keys if keys is not None else name_keys(brands)).items()
            if len(key) >= _MIN_THAI_LEAK or not THAI_LETTER.search(key)
        }
        self._tags: dict[str, list[tuple[str, str]]] = {}
        for brand in brands:
            pace()  # see app/reload_pacing.py
            for tag in brand.hashtags:
                self._tags.setdefault(normalize_key(tag), []).append((brand.name, tag))
        self._terms = _Terms(self._names)

    def find(self, text: str, brand: Brand) -> list[dict]:
        """Brands other than `brand` named in `text`: [{"brand": name, "found": [labels as the
        brand writes them]}]. A term `brand` shares (a common hashtag) is not a leak; its terms
        are read from the record passed, so an edit since the index was built counts too."""
        excluded = normalize_key(brand.name)
        own = _own_terms(brand)
        flat = normalize_key(text)
        hits = [(self._names, key) for key in self._terms.findall(flat)]
        hits += [(self._tags, normalize_key(tag)) for tag in hashtags(text)]
        found: dict[str, list[str]] = {}
        for table, key in hits:
            if key in own:  # shared with the brand being checked: not a leak
                continue
            for other, label in table.get(key, ()):
                if normalize_key(other) != excluded and label not in found.setdefault(other, []):
                    found[other].append(label)
        return [{"brand": other, "found": labels} for other, labels in found.items() if labels]


# TypedDicts, not models: the values stay plain dicts for the code that reads them, and the
# API document still spells out their fields.
class OtherBrand(TypedDict):
    brand: str
    found: list[str]


class PlatformCheck(TypedDict):
    name: str
    length: int
    limit: int
    hashtag_count: int
    hashtag_limit: int | None
    within_limit: bool


class CheckReport(BaseModel):
    """The on-brand verdict on one text."""

    on_brand: bool
    reasons: list[str] = Field(description="Why it is not on brand; empty when it is.")
    brand_mentioned: bool
    hashtags_brand: list[str] = Field(description="The brand's own hashtags found in the text.")
    hashtags_new: list[str]
    words_to_avoid_found: list[str]
    other_brands: list[OtherBrand] = Field(description="Other brands named in the text, as they write themselves.")
    thai_ratio: float = Field(ge=0, le=1, description="Share of letters that are Thai.")
    platform: PlatformCheck | None = Field(description="Length and hashtag limits; only when a platform was given.")
    score: float = Field(ge=0, le=1, description="Share of checks passed, to rank candidates.")
    # Names of the failed checks, for the metrics: not part of the API response.
    failed: list[str] = Field(default_factory=list, exclude=True)


def check_text(
    text: str,
    brand: Brand,
    platform: str | None = None,
    leaks: LeakIndex | None = None,
    min_thai_ratio: float = 0.25,
) -> CheckReport:
    """Run every on-brand check; `score` is the share passed, to rank candidate captions."""
    platform_info = check_platform(text, platform) if platform else None
    if not text.strip():
        return CheckReport(
            on_brand=False, reasons=["empty text"], brand_mentioned=False, hashtags_brand=[],
            hashtags_new=[], words_to_avoid_found=[], other_brands=[], thai_ratio=0.0,
            platform=platform_info, score=0.0, failed=["brand_mentioned", "thai_ratio"],
        )
    flat = normalize_key(text)
    # No minimum length here: the brand's own short Thai alias is a deliberate mention.
    mentioned = bool(_names_of(tuple(brand.all_names)).findall(flat))

    own_tags = {normalize_key(t) for t in brand.hashtags}
    tags: dict[str, str] = {}  # one entry per hashtag, in its first spelling
    for tag in hashtags(text):
        tags.setdefault(normalize_key(tag), tag)
    tags_brand = [t for key, t in tags.items() if key in own_tags]
    tags_new = [t for key, t in tags.items() if key not in own_tags]

    avoid = [w for w in brand.words_to_avoid if normalize_key(w) and normalize_key(w) in flat]

    others = []
    if leaks is not None:
        others = leaks.find(text, brand)

    ratio = round(thai_ratio(text), 3)
    checks = [  # (name, passed, reason if not)
        ("brand_mentioned", mentioned, "does not mention the brand name or any alias"),
        ("words_to_avoid", not avoid, "uses a word to avoid: " + ", ".join(avoid)),
    ]
    if leaks is not None:
        named = "; ".join(f"{o['brand']} ({', '.join(o['found'])})" for o in others)
        checks.append(("other_brand", not others, f"mentions another brand: {named}"))
    if platform_info is not None:
        p = platform_info
        over = []
        if p["length"] > p["limit"]:
            over.append(f"exceeds {p['name']} limit: {p['length']}/{p['limit']}")
        if p["hashtag_limit"] is not None and p["hashtag_count"] > p["hashtag_limit"]:
            over.append(f"exceeds {p['name']} hashtag limit: {p['hashtag_count']}/{p['hashtag_limit']}")
        checks.append(("platform_limit", p["within_limit"], "; ".join(over)))
    checks.append(("thai_ratio", ratio >= min_thai_ratio, f"Thai ratio {ratio:g} below {min_thai_ratio:g}"))

    reasons = [reason for _, ok, reason in checks if not ok]
    return CheckReport(
        on_brand=not reasons,
        reasons=reasons,
        brand_mentioned=mentioned,
        hashtags_brand=tags_brand,
        hashtags_new=tags_new,
        words_to_avoid_found=avoid,
        other_brands=others,
        thai_ratio=ratio,
        platform=platform_info,
        score=round(sum(ok for _, ok, _ in checks) / len(checks), 3),
        failed=[name for name, ok, _ in checks if not ok],
    )
