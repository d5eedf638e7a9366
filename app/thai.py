"""Thai-safe text helpers: segmentation, hashtags, Thai ratio. Library defaults get Thai wrong."""

import re
import unicodedata
from functools import lru_cache

# \w misses Thai combining marks (category Mn), so the Thai block is named explicitly.
HASHTAG = re.compile(r"#[\w\u0E00-\u0E7F]+")
_PUNCT_ONLY = re.compile(r"^[\W_]+$")


def nfc(text: str) -> str:
    return unicodedata.normalize("NFC", text)


_KEY = 3  # brand terms are bucketed by their first 3 characters; shorter ones are kept apart


@lru_cache(maxsize=1)
def _base_dictionary():
    """newmm's own ~62k-word trie: built once per process (~0.5 s), shared, never modified."""
    try:
        from pythainlp.tokenize import word_dict_trie  # pythainlp's cached default trie
    except ImportError:  # older pythainlp
        from pythainlp.corpus import thai_words
        from pythainlp.util import Trie

        return Trie(thai_words())
    return word_dict_trie()


class Dictionary:
    """newmm's word list plus brand terms, with the part of pythainlp's Trie that newmm uses.

    Rebuilding a full Trie on every reload cost ~0.7 s for 14 brands and several seconds for
    10k (a Python node per character, ~500k nodes, all scanned by the garbage collector). The
    base trie is shared instead, and each brands version adds only its own terms, in a flat
    table: first 3 characters -> (term lengths, the terms). `prefixes` merges both, shortest
    first, as Trie.prefixes does, so newmm segments exactly as with Trie(words | terms).
    """

    def __init__(self, base, terms):
        self._base = base
        self._short: set[str] = set()  # terms shorter than _KEY
        grouped: dict[str, set[str]] = {}
        for term in terms:
            if term and term not in base:
                if len(term) < _KEY:
                    self._short.add(term)
                else:
                    grouped.setdefault(term[:_KEY], set()).add(term)
        self._buckets = {key: (tuple(sorted({len(t) for t in group})), group) for key, group in grouped.items()}
        self._count = len(self._short) + sum(len(group) for group in grouped.values())

    def prefixes(self, text: str, start: int = 0) -> list[str]:
        """Every dictionary word that starts at text[start], shortest first."""
        found = self._base.prefixes(text, start)
        bucket = self._buckets.get(text[start : start + _KEY])  # near the end the slice is short: no key
        if bucket is None and not self._short:
            return found
        extra = [w for n in range(1, _KEY) if (w := text[start : start + n]) in self._short and len(w) == n]
        if bucket is not None:
            lengths, group = bucket
            end = len(text)
            for n in lengths:
                if start + n > end:
                    break
                if (word := text[start : start + n]) in group:
                    extra.append(word)
        if not extra:
            return found
        return sorted(found + extra, key=len) if found else extra

    def __contains__(self, word: str) -> bool:
        if len(word) < _KEY:
            return word in self._short or word in self._base
        return word in self._base or word in self._buckets.get(word[:_KEY], ((), ()))[1]

    def __len__(self) -> int:
        return len(self._base) + self._count

    def __iter__(self):
        yield from self._base
        yield from self._short
        for _, group in self._buckets.values():
            yield from group


def build_dictionary(extra_terms) -> Dictionary:
    """newmm's dictionary plus our brand terms, so "โกลว์แล็บ" is one token, not โก|ลว์|แล็บ."""
    return Dictionary(_base_dictionary(), {nfc(t).strip() for t in extra_terms if t})


def tokenize(text: str, dictionary=None) -> list[str]:
    """Word tokens for matching: newmm for Thai, casefolded, no spaces or bare punctuation."""
    from pythainlp.tokenize import word_tokenize

    words = word_tokenize(nfc(text), custom_dict=dictionary, engine="newmm", keep_whitespace=False)
    return [w.casefold() for w in words if w.strip() and not _PUNCT_ONLY.match(w)]


def warm_up() -> None:
    """Load newmm's dictionary now (about 0.5 s) rather than on the first request or reload."""
    _base_dictionary()
    tokenize("อุ่นเครื่อง")


def hashtags(text: str) -> list[str]:
    return [nfc(tag) for tag in HASHTAG.findall(text)]


def thai_ratio(text: str) -> float:
    """Share of Thai characters among letters (spaces, digits, punctuation, emoji ignored)."""
    letters = [c for c in text if c.isalpha() or unicodedata.category(c) == "Mn"]
    if not letters:
        return 0.0
    return sum("\u0e00" <= c <= "\u0e7f" for c in letters) / len(letters)
