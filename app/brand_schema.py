"""The shape of `brands.json`: one record per brand, only `name` required."""

import unicodedata
from collections.abc import Callable, Sequence
from typing import Annotated

from pydantic import (
    BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, ValidationInfo, field_validator, model_validator,
)

from app.reload_pacing import unpaced


_KEYS: dict[str, str] = {}  # label -> key, for short strings: names, aliases and hashtags
_KEYS_MAX = 1 << 17  # entries; cleared when full (a reload of 10k brands needs ~80k)
_KEYS_MAX_LEN = 200  # longer strings (whole captions) are not kept


def normalize_key(text: str) -> str:
    """The form names and aliases are compared in: NFC, casefolded, inner spaces collapsed."""
    key = _KEYS.get(text)
    if key is None:
        # Every reload normalizes each name, alias and hashtag several times (uniqueness check,
        # resolver, leak index), and mostly the same ones as the version before: remember them.
        key = " ".join(unicodedata.normalize("NFC", text).casefold().split())
        if len(text) <= _KEYS_MAX_LEN:
            if len(_KEYS) >= _KEYS_MAX:
                _KEYS.clear()
            _KEYS[text] = key
    return key


class _Strict(BaseModel):
    # A misspelt field ("hashtag" for "hashtags") must fail loudly, not vanish. Only the field
    # names are worth pydantic's string cache: a brand's values are its own, and caching every
    # short one cost a 10,000-brand parse about a fifth of its time (0.60 s against 0.47 s, for
    # 13 MB more held: the few values brands share, like tone words, are no longer one object).
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True, frozen=True, cache_strings="keys")


class Product(_Strict):
    name: str = Field(min_length=1, max_length=200)
    description: str = Field("", max_length=2000)
    price: str | None = Field(None, max_length=50)


# Generous for any real brand, and a bound on what one record can cost every request and
# reload: a 10 MB description once stalled the whole server for seconds.
MAX_TEXT = 5_000  # characters in one text field or list item
MAX_ITEMS = 100  # items in one list

Text = Annotated[str, Field(max_length=MAX_TEXT)]
Items = Annotated[list[Annotated[str, Field(max_length=MAX_TEXT)]], Field(max_length=MAX_ITEMS)]


class Brand(_Strict):
    name: str = Field(min_length=1, max_length=100)
    aliases: Items = []
    industry: Text = ""
    description: Text = ""
    tone: Items = []
    target_audience: Text = ""
    core_values: Items = []
    visual_style: Text = ""
    hashtags: Items = []
    emoji: Items = []
    products: Annotated[list[Product], Field(max_length=MAX_ITEMS)] = []
    example_posts: Items = []
    words_to_avoid: Items = []

    @field_validator("hashtags")
    @classmethod
    def _hashtags_start_with_hash(cls, value: list[str]) -> list[str]:
        return [tag if tag.startswith("#") else f"#{tag}" for tag in value if tag.strip("# ")]

    @model_validator(mode="after")
    def _pace(self, info: ValidationInfo) -> "Brand":
        # A point where a reload gives way to requests (see app/reload_pacing.py): parsing is
        # most of a reload, in one call that only comes back to Python here, once per brand.
        if info.context:
            info.context["pace"]()
        return self

    @property
    def all_names(self) -> list[str]:
        return [self.name, *self.aliases]


def name_keys(brands: Sequence["Brand"], pace: Callable[[], None] = unpaced) -> dict[str, tuple[int, str, str]]:
    """Every name and alias in `normalize_key` form -> (brand index, "exact" or "alias", the
    label as written; the first label of a brand with that key). Raises ValueError naming the
    brands when a name or alias points to two of them: the resolver and the leak index read
    this one map, made once per brands version."""
    keys: dict[str, tuple[int, str, str]] = {}
    for i, brand in enumerate(brands):
        pace()
        for j, label in enumerate(brand.all_names):
            key = normalize_key(label)
            if not key:
                raise ValueError(f"brand {brand.name!r} has an empty alias")
            hit = keys.get(key)
            if hit is None:
                keys[key] = (i, "alias" if j else "exact", label)
            elif hit[0] != i:
                other = brands[hit[0]].name
                if j == 0 and normalize_key(other) == key:
                    raise ValueError(
                        f"brand {brand.name!r} is in the file twice (records #{hit[0] + 1} and #{i + 1}); "
                        "merge them into one record"
                    )
                raise ValueError(
                    f"brand {brand.name!r}: name or alias {label!r} is already used by brand "
                    f"{other!r}; every name and alias must point to one brand"
                )
    return keys


class BrandFile(_Strict):
    brands: list[Brand] = Field(min_length=1)
    # name_keys(brands), made while checking that each name points to one brand, and handed to
    # the resolver and the leak index: each normalized all 40k of a 10,000-brand file again.
    _name_keys: dict[str, tuple[int, str, str]] = PrivateAttr(default_factory=dict)

    @model_validator(mode="after")
    def _names_unique(self, info: ValidationInfo) -> "BrandFile":
        self._name_keys = name_keys(self.brands, info.context["pace"] if info.context else unpaced)
        return self

    @property
    def name_keys(self) -> dict[str, tuple[int, str, str]]:
        return self._name_keys


class BrandFileError(ValueError):
    """A brands file that cannot be used, with a message naming the file, brand and field."""


def _closest_field(name: str, depth: int) -> str:
    import difflib

    fields = Product.model_fields if depth > 4 else Brand.model_fields
    close = difflib.get_close_matches(name, list(fields), n=1)
    return f" (did you mean {close[0]!r}?)" if close else f"; known fields: {', '.join(fields)}"


def describe_validation_error(exc: ValidationError, raw: object) -> str:
    """Turn pydantic's locations (brands.3.hashtag) into 'brand "X", field "hashtag"'."""
    parts = []
    for err in exc.errors()[:5]:
        loc = list(err["loc"])
        where = ""
        if len(loc) >= 2 and loc[0] == "brands" and isinstance(loc[1], int):
            name = None
            try:
                name = raw["brands"][loc[1]].get("name")  # type: ignore[index]
            except Exception:
                pass
            label = f"brand {name!r}" if name else f"brand #{loc[1] + 1}"
            field = ".".join(str(p) for p in loc[2:])
            where = f"{label}, field {field!r}" if field else label
        elif loc:
            where = "field " + ".".join(str(p) for p in loc)
        message = err["msg"].removeprefix("Value error, ")  # our own checks' words, as they are
        if err["type"] == "extra_forbidden":
            message = "unknown field" + _closest_field(str(loc[-1]), len(loc))
        parts.append(f"{where}: {message}" if where else message)
    more = len(exc.errors()) - len(parts)
    return "; ".join(parts) + (f"; and {more} more" if more > 0 else "")
