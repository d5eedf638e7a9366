"""The prompt side of the model: chat template, token counts and special tokens.

It needs the tokenizer alone, which loads in seconds with no weights, so brand
resolution, retrieval and `dry_run` answer while the model itself is still loading, and
a gateway in front of a remote engine needs nothing more.
"""

from app.prompts import render_prompt, special_tokens_of
from app.settings import Settings


def tokenizer_source(settings: Settings) -> str:
    """The adapter folder when it ships a tokenizer (training saves it there), else the base."""
    if settings.adapter_path and (settings.adapter_path / "tokenizer_config.json").is_file():
        return str(settings.adapter_path)
    return settings.base_model


class Prompter:
    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.special_tokens = special_tokens_of(tokenizer)
        # The Rust tokenizer's encode without offsets gives the same ids a third faster than the
        # transformers call, and a request encodes twice (its brand block, then its prompt).
        backend = getattr(tokenizer, "backend_tokenizer", None)
        self._fast = getattr(backend, "encode_batch_fast", None)

    @classmethod
    def load(cls, settings: Settings) -> "Prompter":
        from transformers import AutoTokenizer

        from app.engine import EngineLoadError

        source = tokenizer_source(settings)
        try:
            return cls(AutoTokenizer.from_pretrained(source))
        except (OSError, ValueError) as exc:
            raise EngineLoadError(
                f"cannot load the tokenizer of {source!r}: {exc}. Set AI_DIRECTOR_BASE_MODEL to a hub name or a "
                "local folder holding the tokenizer files"
            ) from exc

    def render(self, messages: list[dict[str, str]]) -> str:
        return render_prompt(self.tokenizer, messages)

    def encode(self, text: str) -> list[int]:
        if self._fast is not None:
            return self._fast([text], add_special_tokens=False)[0].ids
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def count_tokens(self, text: str) -> int:
        return len(self.encode(text))
