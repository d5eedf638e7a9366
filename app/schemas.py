"""Request and response bodies of the API."""

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

Platform = Literal["instagram", "facebook", "tiktok", "x", "line"]


def _has_words(value: str | None, field: str) -> str | None:
    if value is None:
        return None
    value = value.strip()
    if not value:
        raise ValueError(f"{field} is empty; write what the copy should be about")
    if not any(c.isalnum() for c in value):
        raise ValueError(f"{field} has no words (only emoji or symbols); describe it in words")
    return value


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid")

    brand: str = Field(min_length=1, max_length=200, description="Brand name or alias, Thai or Latin.")
    max_new_tokens: int | None = Field(None, ge=1, le=4096, description="Capped by the server's MAX_NEW_TOKENS.")
    temperature: float | None = Field(None, ge=0, le=2, description="0 = greedy; default from the model.")
    top_p: float | None = Field(None, gt=0, le=1)
    seed: int | None = Field(None, ge=0, le=2**31 - 1, description="Same seed + same input = same output.")
    stream: bool = Field(False, description="Answer as server-sent events: `delta` events, then `done`.")
    attempts: int = Field(1, ge=1, le=4, description="Candidates to generate; the first on-brand one wins.")
    dry_run: bool = Field(False, description="Return the prompt and brand context without generating.")

    @field_validator("brand")
    @classmethod
    def _brand_words(cls, v: str) -> str:
        return _has_words(v, "brand")

    @field_validator("attempts")
    @classmethod
    def _one_attempt_when_streaming(cls, v: int, info) -> int:
        # `stream` is declared before `attempts`, so it is already validated here.
        if v > 1 and info.data.get("stream"):
            raise ValueError("streaming returns one answer; use attempts 1 with stream, or stream false to compare candidates")
        return v


class CaptionRequest(_Request):
    context: str = Field(max_length=2000, description="The occasion: a launch, a promotion, a season.")
    platform: Platform | None = None
    tone: str | None = Field(None, max_length=200, description="Extra tone for this post.")

    @field_validator("context")
    @classmethod
    def _context_words(cls, v: str) -> str:
        return _has_words(v, "context")


class AdaptVoiceRequest(_Request):
    message: str = Field(max_length=4000, description="The generic message to rewrite.")
    platform: Platform | None = None
    tone: str | None = Field(None, max_length=200)

    @field_validator("message")
    @classmethod
    def _message_words(cls, v: str) -> str:
        return _has_words(v, "message")


class BriefRequest(_Request):
    objectives: list[str] = Field(min_length=1, max_length=10, description="What the campaign must achieve.")
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
            if len(item) > 300:
                raise ValueError("each objective must be at most 300 characters")
        return [_has_words(item, "objective") for item in v]


REQUEST_MODELS = {"caption": CaptionRequest, "adapt_voice": AdaptVoiceRequest, "brief": BriefRequest}


class CheckRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    brand: str = Field(min_length=1, max_length=200)
    text: str = Field(max_length=70_000, description="Any copy, written by a person or a model.")
    platform: Platform | None = None


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int


class ModelRef(BaseModel):
    base: str
    adapter: str | None


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


class GenerateResponse(BaseModel):
    brand: str
    text: str
    usage: Usage
    brand_version: str
    model: ModelRef
    brand_match: BrandMatchOut
    finish_reason: str | None = None
    seed: int | None = None
    checks: dict | None = None
    candidates: list[dict] | None = None
    prompt: str | None = Field(None, description="Only with dry_run.")
    context: ContextOut | None = Field(None, description="Only with dry_run.")
