"""Per-platform caption limits, each counted the way that platform counts."""

import re

from app.thai import hashtags, nfc

PLATFORMS = ("instagram", "facebook", "tiktok", "x", "line")

# length: the platform's own unit (see platform_length); hashtags: max count, None = no cap.
LIMITS: dict[str, dict[str, int | None]] = {
    "instagram": {"length": 2200, "hashtags": 30},
    "facebook": {"length": 63206, "hashtags": None},
    "tiktok": {"length": 2200, "hashtags": None},
    "x": {"length": 280, "hashtags": None},
    "line": {"length": 5000, "hashtags": None},
}

_URL = re.compile(r"https?://\S+")
_X_URL_WEIGHT = 23  # X shortens every link to t.co, whatever its real length


def _x_weight(text: str) -> int:
    # U+0000-U+10FF (Latin, Thai and its combining marks) weigh 1, anything else 2.
    # Per code point, so a ZWJ emoji sequence is over- rather than under-counted.
    return sum(1 if ord(c) <= 0x10FF else 2 for c in text)


def _check_name(platform: str) -> str:
    if platform not in LIMITS:
        raise ValueError(f"unknown platform {platform!r}; expected one of {', '.join(PLATFORMS)}")
    return platform


def platform_length(text: str, platform: str) -> int:
    """Length of `text` in the unit `platform` enforces its limit in."""
    text = nfc(text)
    platform = _check_name(platform)
    if platform == "x":
        urls = _URL.findall(text)
        return _x_weight(_URL.sub("", text)) + _X_URL_WEIGHT * len(urls)
    if platform == "line":
        # LINE counts UTF-16 code units: an emoji outside the BMP is 2.
        return len(text.encode("utf-16-le")) // 2
    return len(text)  # code points of NFC text


def check_platform(text: str, platform: str) -> dict:
    limits = LIMITS[_check_name(platform)]
    length = platform_length(text, platform)
    tag_count = len(hashtags(text))
    tag_limit = limits["hashtags"]
    within = length <= limits["length"] and (tag_limit is None or tag_count <= tag_limit)
    return {
        "name": platform,
        "length": length,
        "limit": limits["length"],
        "hashtag_count": tag_count,
        "hashtag_limit": tag_limit,
        "within_limit": within,
    }
