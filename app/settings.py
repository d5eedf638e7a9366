"""The service's one settings object. Every value comes from an `AI_DIRECTOR_*` variable."""

import re
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

DEFAULT_BASE_MODEL = "Qwen/Qwen2.5-7B-Instruct"
ADAPTER_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")


class Settings(BaseSettings):
    """Read once at startup; a bad value stops the process before the model loads."""

    model_config = SettingsConfigDict(env_prefix="AI_DIRECTOR_", env_file=".env", extra="ignore")

    base_model: str = Field(DEFAULT_BASE_MODEL, description="Hub name or local folder of the base model.")
    adapter_path: Path | None = Field(None, description="Folder holding adapter_config.json; empty = base model only.")
    adapters: Annotated[dict[str, Path], NoDecode] = Field(
        default_factory=dict,
        description="More adapters beside the default one, picked per request by name: name=folder,name2=folder2.",
    )
    adapter_poll_s: float = Field(
        30.0, ge=0, description="Also re-read the adapter folders this often, for volumes without file events (NFS); 0 = off."
    )
    brands_path: Path = Field(Path("brands/brands.json"), description="The brand knowledge file, watched live.")
    load_in_4bit: bool | None = Field(None, description="NF4 4-bit weights; unset = on when CUDA is available.")
    device: str = Field("auto", description="auto, cpu, cuda or cuda:N.")
    cpu_reserved_cores: int = Field(
        1, ge=0, le=1024,
        description="Generating on CPU, cores left to the HTTP server: generation gets the others, at least one "
                    "(vLLM's VLLM_CPU_NUM_OF_RESERVED_CPU). OMP_NUM_THREADS, when set, wins.",
    )
    max_batch_size: int = Field(8, gt=0, le=256, description="Requests generated together in one call.")
    batch_timeout_ms: float = Field(10.0, ge=0, le=10_000, description="How long the first request waits for company.")
    max_queue: int = Field(64, gt=0, description="Waiting requests beyond this get 429.")
    request_timeout_s: float = Field(120.0, gt=0, description="A request not answered by then gets 504.")
    max_batch_items: int = Field(
        200, ge=1, le=10_000, description="Items one POST /batch may hold (a month's calendar); more get 422."
    )
    max_body_bytes: int = Field(1_048_576, ge=1024, description="Request bodies over this get 413 while being read.")
    body_timeout_s: float = Field(30.0, gt=0, description="A request body that stalls this long gets 408.")
    max_header_bytes: int = Field(32_768, ge=4096, description="A request line plus headers over this gets 431.")
    shutdown_grace_s: float = Field(
        25.0, ge=0, description="On SIGTERM, how long requests in flight may take to finish; new ones get 503."
    )
    # 20 events a second per stream reads as smooth as one per token, and each event costs the
    # event loop, which shares the GIL with generation: on 2 CPU cores streaming cost 10-18% of
    # the throughput at 25 ms, and a median 2.5% at 50 ms (bench/streaming.py).
    stream_interval_ms: float = Field(
        50.0, ge=0, le=1000, description="Text produced within this many ms of the last event is sent as one event."
    )
    stream_keepalive_s: float = Field(15.0, gt=0, description="Seconds between keep-alive comments on an event stream.")
    engine: Literal["local", "vllm"] = Field(
        "local", description="local: the model in this process; vllm: a vLLM server at AI_DIRECTOR_VLLM_URL."
    )
    vllm_url: str | None = Field(
        None, validate_default=True, description="Base URL of vLLM (one server, or a load balancer in front of many)."
    )
    vllm_model: str | None = Field(
        None, description="Served model name to call, e.g. the LoRA module; empty = the LoRA vLLM lists, else its base."
    )
    vllm_api_key: SecretStr | None = Field(None, description="vLLM's --api-key, sent as a Bearer token.")
    vllm_connect_timeout_s: float = Field(5.0, gt=0, description="Connecting to vLLM that takes longer is a 503.")
    vllm_read_timeout_s: float = Field(
        120.0, gt=0, description="vLLM silent this long within one answer (or stream) is a 504."
    )
    vllm_unload_grace_s: float = Field(
        30.0, ge=0, description="How long vLLM keeps an adapter module a rollout replaced, so other gateways switch first."
    )
    max_new_tokens: int = Field(512, gt=0, le=4096, description="Cap on a request's max_new_tokens.")
    max_seq_length: int = Field(1024, ge=128, description="Prompt + completion budget; the adapter's training length.")
    context_token_budget: int = Field(384, ge=32, description="Tokens the brand-context block may take in a prompt.")
    fuzzy_threshold: float = Field(80.0, ge=0, le=100, description="Lowest fuzzy score accepted as a brand match.")
    api_key: SecretStr | None = Field(None, description="When set, generation routes require this key.")
    metrics_require_key: bool = Field(False, description="Put /metrics behind the API key as well.")
    host: str = Field("127.0.0.1", description="Bind address.")
    port: int = Field(8000, ge=1, le=65535, description="Bind port.")
    log_level: Literal["debug", "info", "warning", "error"] = Field("info", description="debug, info, warning or error.")

    @field_validator("device")
    @classmethod
    def _device_known(cls, value: str) -> str:
        value = value.strip().lower()
        if value in ("auto", "cpu", "cuda") or (value.startswith("cuda:") and value[5:].isdigit()):
            return value
        raise ValueError(f"device must be auto, cpu, cuda or cuda:N, not {value!r}")

    @field_validator("vllm_url")
    @classmethod
    def _vllm_url_when_needed(cls, value: str | None, info) -> str | None:
        if value is None:
            if info.data.get("engine") == "vllm":
                raise ValueError("AI_DIRECTOR_ENGINE=vllm needs the URL of the vLLM server, e.g. http://vllm:8000")
            return None
        value = value.strip().rstrip("/").removesuffix("/v1")  # the base URL; the /v1/... paths are added
        if not value.startswith(("http://", "https://")):
            raise ValueError(f"must be an http:// or https:// URL, not {value!r}")
        return value

    @field_validator("adapters", mode="before")
    @classmethod
    def _parse_adapters(cls, value):
        if not isinstance(value, str):
            return value
        pairs = {}
        for part in filter(None, (p.strip() for p in value.split(","))):
            name, sep, folder = part.partition("=")
            name, folder = name.strip(), folder.strip()
            if not sep or not name or not folder:
                raise ValueError(f"{part!r} is not name=folder; write e.g. agency-a=/adapters/agency-a,ab-test=/adapters/v2")
            if name in pairs:
                raise ValueError(f"the adapter name {name!r} is given twice")
            pairs[name] = folder
        return pairs

    @field_validator("adapters")
    @classmethod
    def _adapter_names(cls, value: dict[str, Path]) -> dict[str, Path]:
        for name in value:
            # The name becomes a key inside the model (no dots) and a request field: keep it plain.
            if not ADAPTER_NAME.fullmatch(name) or name in ("default", "none"):
                raise ValueError(
                    f"adapter name {name!r} must be 1-64 letters, digits, '-' or '_', and not 'default' or 'none' "
                    "(those mean the default adapter and the base model)"
                )
        return value

    @field_validator("adapter_path", "api_key", "vllm_url", "vllm_model", "vllm_api_key", mode="before")
    @classmethod
    def _empty_is_none(cls, value):
        # An exported-but-empty variable means "not set", as in most CLIs.
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("api_key")
    @classmethod
    def _key_fits_a_header(cls, value: SecretStr | None) -> SecretStr | None:
        # Clients send header values as ASCII (or Latin-1): a key outside printable ASCII
        # could never be presented, and every request would be refused.
        if value is not None and not all(0x21 <= ord(c) <= 0x7E for c in value.get_secret_value()):
            raise ValueError("the API key must be printable ASCII without spaces, so that HTTP clients can send it")
        return value

    @model_validator(mode="after")
    def _budget_fits(self) -> "Settings":
        if self.context_token_budget >= self.max_seq_length:
            raise ValueError(
                f"context_token_budget ({self.context_token_budget}) must be smaller than "
                f"max_seq_length ({self.max_seq_length}) to leave room for the request and the answer"
            )
        return self


@lru_cache
def get_settings() -> Settings:
    """The process-wide settings; tests build their own Settings instead."""
    return Settings()
