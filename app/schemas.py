"""Request and response bodies of the API."""

import json
import unicodedata
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, field_validator

from app.brand_schema import Brand
from app.checks import CheckReport

Platform = Literal["instagram", "facebook", "tiktok", "x", "line"]

# What `_has_words` enforces, for the API document: at least one letter or digit of any script,
# as `str.isalnum` decides (Thai consonants are letters; emoji and punctuation are neither).
# Said as "not only non-letters" in an ECMA-262 pattern, read with the `u` flag as JSON Schema
# does; `\w` would be ASCII-only there and reject Thai. Inside `not`: client generators mostly
# skip `not`, so a client whose regex engine lacks `\p{..}` never refuses Thai, and schemathesis
# validates it with a Unicode engine instead of its Latin-only rewrite of a plain `\p{L}`
# pattern. Documentation only: the validators below keep their own, actionable messages.
HAS_WORDS = {"minLength": 1, "not": {"pattern": r"^[^\p{L}\p{N}]*$"}}

# The letters and digits Unicode 15.0 and 16.0 added (Egyptian hieroglyphs extended-A, CJK
# extension H, Kawi, Garay, ...), as (first, last) code points. Python 3.11's unicodedata is
# Unicode 14.0 and calls them unassigned, while the readers of the document (JSON Schema
# validators, clients' regex engines) know them as letters: without this, text in them alone
# would be valid by the document and refused by the server.
NEWER_LETTERS = (
    (0x1C89, 0x1C8A), (0xA7CB, 0xA7CD), (0xA7DA, 0xA7DC), (0x105C0, 0x105F3), (0x10D40, 0x10D65),
    (0x10D6F, 0x10D85), (0x10EC2, 0x10EC4), (0x1123F, 0x11240), (0x11380, 0x11389), (0x1138B, 0x1138B),
    (0x1138E, 0x1138E), (0x11390, 0x113B5), (0x113B7, 0x113B7), (0x113D1, 0x113D1), (0x113D3, 0x113D3),
    (0x116D0, 0x116E3), (0x11BC0, 0x11BE0), (0x11BF0, 0x11BF9), (0x11F02, 0x11F02), (0x11F04, 0x11F10),
    (0x11F12, 0x11F33), (0x11F50, 0x11F59), (0x1342F, 0x1342F), (0x13441, 0x13446), (0x13460, 0x143FA),
    (0x16100, 0x1611D), (0x16130, 0x16139), (0x16D40, 0x16D6C), (0x16D70, 0x16D79), (0x18CFF, 0x18CFF),
    (0x1B132, 0x1B132), (0x1B155, 0x1B155), (0x1CCF0, 0x1CCF9), (0x1D2C0, 0x1D2D3), (0x1DF25, 0x1DF2A),
    (0x1E030, 0x1E06D), (0x1E4D0, 0x1E4EB), (0x1E4F0, 0x1E4F9), (0x1E5D0, 0x1E5ED), (0x1E5F0, 0x1E5FA),
    (0x2B739, 0x2B739), (0x2EBF0, 0x2EE5D), (0x31350, 0x323AF),
)


def _is_word_character(c: str) -> bool:
    """A letter or digit of any script, as `str.isalnum` or a newer Unicode than Python's says."""
    return c.isalnum() or (unicodedata.category(c) == "Cn" and any(lo <= ord(c) <= hi for lo, hi in NEWER_LETTERS))


def _has_words(value: str | None, field: str) -> str | None:
    if value is None:
        return None
    value = value.strip()
    if not value:
        raise ValueError(f"{field} is empty; write what the copy should be about")
    if not any(_is_word_character(c) for c in value):
        raise ValueError(f"{field} has no words (only emoji or symbols); describe it in words")
    return value


def _document(example: dict):
    """The request's JSON Schema extras: a Thai example, and the stream/attempts rule."""

    def extra(schema: dict) -> None:
        schema["examples"] = [example]
        # `stream: true` takes one attempt only (see _one_attempt_when_streaming).
        schema["if"] = {"properties": {"stream": {"const": True}}, "required": ["stream"]}
        schema["then"] = {"properties": {"attempts": {"maximum": 1}}}

    return extra


class TaskRequest(BaseModel):
    """What every task's request holds: the brand and the generation fields; each task adds its own."""

    model_config = ConfigDict(extra="forbid")

    # Numbers and switches take what the API document says, integer, number and boolean: lax
    # validation would take `true` as 1, or "1" as true, without a word.
    brand: str = Field(min_length=1, max_length=200, description="Brand name or alias, Thai or Latin.",
                       json_schema_extra=HAS_WORDS)
    max_new_tokens: int | None = Field(None, ge=1, le=4096, description="Capped by the server's MAX_NEW_TOKENS.")
    temperature: float | None = Field(None, ge=0, le=2, description="0 = greedy; default from the model.")
    top_p: float | None = Field(None, gt=0, le=1)
    seed: int | None = Field(None, ge=0, le=2**31 - 1, description="Same seed + same input = same output.")
    stream: StrictBool = Field(False, description="Answer as server-sent events: `delta` events, then `done`.")
    attempts: int = Field(1, ge=1, le=4, description="Candidates to generate; the first on-brand one wins.")
    dry_run: StrictBool = Field(False, description="Return the prompt and brand context without generating.")
    adapter: str | None = Field(
        None, pattern=r"^[A-Za-z0-9_-]{1,64}$", examples=["agency-a"],
        description="A served adapter's name (GET /adapters); `none` = the base model alone; default: `default`.",
    )

    @field_validator("brand")
    @classmethod
    def _brand_words(cls, v: str) -> str:
        return _has_words(v, "brand")

    @field_validator("max_new_tokens", "temperature", "top_p", "seed", "attempts", mode="before")
    @classmethod
    def _a_number(cls, v):
        # The document's integer takes 1 and 1.0 (strict mode would refuse 1.0), and neither it
        # nor number takes true or "1" (lax mode would take both).
        if isinstance(v, (bool, str)):
            raise ValueError(f"expected a JSON number, not {json.dumps(v)}")
        return v

    @field_validator("attempts")
    @classmethod
    def _one_attempt_when_streaming(cls, v: int, info) -> int:
        # `stream` is declared before `attempts`, so it is already validated here.
        if v > 1 and info.data.get("stream"):
            raise ValueError("streaming returns one answer; use attempts 1 with stream, or stream false to compare candidates")
        return v


class CaptionRequest(TaskRequest):
    model_config = ConfigDict(json_schema_extra=_document({
        "brand": "CoffeeLab", "context": "เปิดตัวเมนูใหม่ Cold Brew Honey Yuzu ต้อนรับหน้าร้อน",
        "platform": "instagram", "tone": "สดใส เป็นกันเอง",
    }))

    context: str = Field(max_length=2000, description="The occasion: a launch, a promotion, a season.",
                         json_schema_extra=HAS_WORDS)
    platform: Platform | None = None
    tone: str | None = Field(None, max_length=200, description="Extra tone for this post.")

    @field_validator("context")
    @classmethod
    def _context_words(cls, v: str) -> str:
        return _has_words(v, "context")


class AdaptVoiceRequest(TaskRequest):
    model_config = ConfigDict(json_schema_extra=_document({
        "brand": "GlowLab", "message": "ลดราคา 20% ทุกรายการ ถึงสิ้นเดือนนี้ สั่งซื้อได้ทางเว็บไซต์", "platform": "facebook",
    }))

    message: str = Field(max_length=4000, description="The generic message to rewrite.", json_schema_extra=HAS_WORDS)
    platform: Platform | None = None
    tone: str | None = Field(None, max_length=200)

    @field_validator("message")
    @classmethod
    def _message_words(cls, v: str) -> str:
        return _has_words(v, "message")


OBJECTIVE_MAX = 300  # characters in one objective


def _one_or_many(schema: dict) -> None:
    """`objectives` as the server reads it: a list of 1-10 objectives, or a single one."""
    item = {"type": "string", "maxLength": OBJECTIVE_MAX, **HAS_WORDS}
    many = {"type": "array", "items": item, "minItems": schema.pop("minItems"), "maxItems": schema.pop("maxItems")}
    del schema["type"], schema["items"]
    schema["anyOf"] = [many, item]


class BriefRequest(TaskRequest):
    model_config = ConfigDict(json_schema_extra=_document({
        "brand": "ครัวคุณยาย", "objectives": ["เพิ่มยอดสั่งกลับบ้านช่วงสงกรานต์", "ให้คนรู้จักแกงเขียวหวานไก่บ้านสูตรดั้งเดิม"],
        "audience": "ครอบครัวคนทำงานในกรุงเทพฯ", "platform": "line",
    }))

    objectives: list[str] = Field(min_length=1, max_length=10, description="What the campaign must achieve.",
                                  json_schema_extra=_one_or_many)
    audience: str | None = Field(None, max_length=500)
    platform: Platform | None = None

    @field_validator("objectives", mode="before")
    @classmethod
    def _one_objective(cls, v):
        return [v] if isinstance(v, str) else v

    @field_validator("objectives")
    @classmethod
    def _objective_words(cls, v: list[str]) -> list[str]:
        for item in v:
            if len(item) > OBJECTIVE_MAX:
                raise ValueError("each objective must be at most 300 characters")
        return [_has_words(item, "objective") for item in v]


class CheckRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{
        "brand": "CoffeeLab", "text": "☕ Cold Brew Honey Yuzu จาก CoffeeLab สดชื่นรับหน้าร้อน #CoffeeLab #กาแฟดริป",
        "platform": "instagram",
    }]})

    brand: str = Field(min_length=1, max_length=200)
    text: str = Field(max_length=70_000, description="Any copy, written by a person or a model.")
    platform: Platform | None = None


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int


class ModelRef(BaseModel):
    base: str
    adapter: str | None = Field(description="The adapter's folder (or vLLM's LoRA module); null = the base model alone.")
    adapter_name: str | None = Field(None, description="The adapter's name, as a request's `adapter` field gives it.")
    adapter_version: str | None = Field(
        None, description="12 hex digits of the sha256 of the adapter's weights: which version wrote this answer."
    )
    adapter_loaded_at: datetime | None = Field(None, description="When that version was loaded, ISO 8601 UTC.")


class AdapterFailure(BaseModel):
    message: str
    at: datetime = Field(description="When the reload failed, ISO 8601 UTC.")


class AdapterOut(BaseModel):
    name: str = Field(description="What a request's `adapter` field names: `default`, or a name of AI_DIRECTOR_ADAPTERS.")
    path: str
    version: str | None = Field(description="12 hex digits of the sha256 of the weights served; null before loading.")
    loaded_at: datetime | None = Field(description="When the version served was loaded, ISO 8601 UTC.")
    last_reload_error: AdapterFailure | None = Field(
        description="Set while the folder on disk cannot be served; the version above is still served."
    )


class AdaptersResponse(BaseModel):
    base: str = Field(description="The base model; a request with `adapter: none` gets it alone.")
    adapters: list[AdapterOut]


class BrandMatchOut(BaseModel):
    method: Literal["exact", "alias", "fuzzy"]
    score: float
    matched: str


class RetrievedItem(BaseModel):
    text: str
    score: float


class ContextOut(BaseModel):
    profile: list[str]
    products: list[RetrievedItem]
    examples: list[RetrievedItem]
    dropped: list[str]
    tokens: int
    budget: int


class Candidate(BaseModel):
    text: str
    seed: int | None
    checks: CheckReport
    chosen: bool = Field(description="The one answered in `text`: the first on brand, else the best scored.")


class GenerateResponse(BaseModel):
    brand: str = Field(description="The brand's name as brands.json writes it.")
    text: str = Field(description="The generated copy; empty with dry_run.")
    usage: Usage
    brand_version: str = Field(description="The brands.json version that answered: 12 hex digits of its sha256.")
    model: ModelRef
    brand_match: BrandMatchOut
    finish_reason: str | None = Field(None, description="`stop` or `length`; absent with dry_run.")
    seed: int | None = Field(None, description="The seed that produced `text`; absent with dry_run.")
    checks: CheckReport | None = Field(None, description="The on-brand verdict on `text`; absent with dry_run.")
    candidates: list[Candidate] | None = Field(None, description="Every attempt, only when attempts > 1.")
    prompt: str | None = Field(None, description="Only with dry_run.")
    context: ContextOut | None = Field(None, description="Only with dry_run.")


class CheckResponse(BaseModel):
    brand: str
    brand_version: str
    brand_match: BrandMatchOut
    checks: CheckReport


class BrandSummary(BaseModel):
    name: str
    aliases: list[str]
    industry: str


class BrandsResponse(BaseModel):
    brand_version: str
    count: int
    brands: list[BrandSummary]


class BrandResponse(BaseModel):
    brand_version: str
    brand_match: BrandMatchOut
    brand: Brand


class ReadyResponse(BaseModel):
    ready: Literal[True]
