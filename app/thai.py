"""Thai-safe text helpers: segmentation, hashtags, Thai ratio. Library defaults get Thai wrong."""

import re
import unicodedata
from functools import lru_cache

# \w misses Thai combining marks (category Mn), so the Thai block is named explicitly.
HASHTAG = re.compile(r"#[\w\u0E00-\u0E7F]+")
THAI_LETTER = re.compile(r"[\u0E00-\u0E7F]")  # one character of the Thai block
_PUNCT_ONLY = re.compile(r"^[\W_]+$")


def nfc(text: str) -> str:
    return unicodedata.normalize("NFC", text)


_KEY = 3  # brand terms are bucketed by their first 3 characters; shorter ones are kept apart


@lru_cache(maxsize=1)
def _base_dictionary():
    """newmm's own ~62k-word trie and its words as a set: built once per process (~0.5 s),
    shared, never modified."""
    from pythainlp.corpus import thai_words

    try:
        from pythainlp.tokenize import word_dict_trie  # pythainlp's cached default trie
    except ImportError:  # older pythainlp
        from pythainlp.util import Trie

        trie = Trie(thai_words())
    else:
        trie = word_dict_trie()
    return trie, frozenset(w.strip() for w in thai_words())  # Trie.add strips each word


class Dictionary:
    """newmm's word list plus brand terms, with the part of pythainlp's Trie that newmm uses
    (`prefixes`, truth value) and read-only set behaviour (`in`, `len`, iteration).

    Building Trie(thai_words() | terms) on every reload took about 1 s on a 2-core CPU even
    for 14 brands: a Python node per character, ~240k nodes for the word list alone, which
    the garbage collector then scans too. Here the base trie is built once per process and
    shared; each brands version adds only its own terms, in a flat table: first 3 characters
    -> (term lengths, terms). `prefixes` merges both, shortest first as Trie.prefixes does,
    so newmm segments exactly as with the rebuilt Trie.
    """

    def __init__(self, base, base_words: frozenset[str], terms):
        self._base = base
        short: dict[str, set[str]] = {}  # terms shorter than _KEY, by first character
        grouped: dict[str, set[str]] = {}
        for term in terms:
            if not term or term in base_words:  # a set look-up, cheaper than walking the trie
                continue
            if len(term) < _KEY:
                short.setdefault(term[0], set()).add(term)
            else:
                grouped.setdefault(term[:_KEY], set()).add(term)
        self._short = {first: tuple(sorted(group, key=len)) for first, group in short.items()}
        self._buckets = {key: (tuple(sorted({len(t) for t in group})), group) for key, group in grouped.items()}
        self._count = sum(map(len, short.values())) + sum(map(len, grouped.values()))

    def prefixes(self, text: str, start: int = 0) -> list[str]:
        """Every dictionary word that starts at text[start], shortest first."""
        found = self._base.prefixes(text, start)
        short = self._short.get(text[start : start + 1]) if self._short else None
        bucket = self._buckets.get(text[start : start + _KEY])  # near the end the slice is short: no key
        if short is None and bucket is None:
            return found
        extra = [t for t in short if text.startswith(t, start)] if short else []
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
            return word in self._base or word in self._short.get(word[:1], ())
        return word in self._base or word in self._buckets.get(word[:_KEY], ((), ()))[1]

    def __len__(self) -> int:
        return len(self._base) + self._count

    def __iter__(self):
        yield from self._base
        for group in self._short.values():
            yield from group
        for _, group in self._buckets.values():
            yield from group


def build_dictionary(extra_terms) -> Dictionary:
    """newmm's dictionary plus our brand terms, so "โกลว์แล็บ" is one token, not โก|ลว์|แล็บ."""
    return Dictionary(*_base_dictionary(), {nfc(t).strip() for t in extra_terms if t})


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
