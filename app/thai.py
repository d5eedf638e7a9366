"""Thai-safe text helpers: segmentation, hashtags, Thai ratio. Library defaults get Thai wrong."""

import re
import unicodedata
from functools import lru_cache

# \w misses Thai combining marks (category Mn), so the Thai block is named explicitly.
HASHTAG = re.compile(r"#[\w\u0E00-\u0E7F]+")
_PUNCT_ONLY = re.compile(r"^[\W_]+$")


def nfc(text: str) -> str:
    return unicodedata.normalize("NFC", text)


@lru_cache(maxsize=1)
def _thai_words() -> frozenset[str]:
    from pythainlp.corpus import thai_words

    return frozenset(thai_words())


def build_dictionary(extra_terms):
    """newmm's dictionary plus our brand terms, so "โกลว์แล็บ" is one token, not โก|ลว์|แล็บ."""
    from pythainlp.tokenize import Trie

    return Trie(_thai_words() | {nfc(t) for t in extra_terms if t})


def tokenize(text: str, dictionary=None) -> list[str]:
    """Word tokens for matching: newmm for Thai, casefolded, no spaces or bare punctuation."""
    from pythainlp.tokenize import word_tokenize

    words = word_tokenize(nfc(text), custom_dict=dictionary, engine="newmm", keep_whitespace=False)
    return [w.casefold() for w in words if w.strip() and not _PUNCT_ONLY.match(w)]


def warm_up() -> None:
    """Load newmm's dictionary now (about 0.5 s) rather than on the first request."""
    tokenize("อุ่นเครื่อง")


def hashtags(text: str) -> list[str]:
    return [nfc(tag) for tag in HASHTAG.findall(text)]


def thai_ratio(text: str) -> float:
    """Share of Thai characters among letters (spaces, digits, punctuation, emoji ignored)."""
    letters = [c for c in text if c.isalpha() or unicodedata.category(c) == "Mn"]
    if not letters:
        return 0.0
    return sum("\u0e00" <= c <= "\u0e7f" for c in letters) / len(letters)
