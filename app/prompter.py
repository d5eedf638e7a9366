"""The prompt side of the model: chat template, token counts and special tokens.

It needs the tokenizer alone, which loads in seconds with no weights, so brand
resolution, retrieval and `dry_run` answer while the model itself is still loading, and
a gateway in front of a remote engine needs nothing more.

Encoding was most of a request's brand-layer cost: the byte-level pre-tokenizer's regex is
slow on Thai, about 0.4 µs a character. But a prompt is mostly lines that repeat from one
request to the next (the system turn, the instruction, the brand's profile, products and
posts), so `encode` cuts the text into lines, encodes each line once, and keeps the ids.
Rendering keeps the chat template's output around the messages in the same way. Both check
on their own tokenizer, when it is loaded, that the shortcut gives exactly what the
tokenizer itself would, and go the long way where it does not.
"""

import re
from array import array
from functools import lru_cache

from app.prompts import PROMPT_ROLES, render_prompt, special_tokens_of
from app.settings import Settings

# Where a text is cut: after a line break that follows a visible character, before a
# printable ASCII one ("### Brand", "- item", "Tone: ...", "<|im_start|>"). The pre-tokenizers
# of byte-level BPE (GPT-2's, Qwen's) never join text across such a point, so the pieces' ids,
# concatenated, are the whole text's ids. Each Prompter checks this on its own tokenizer.
_BREAK = re.compile(r"\n(?=[!-~])")
# The line ends and line starts the check tries: Latin, Thai (a consonant, a tone mark, the
# repetition mark), digits, punctuation and emoji before the break; what our prompts start lines with after it.
_ENDS = ("a", "ก", "่", "ๆ", "9", ".", ")", ":", "%", "☕", "🎉")
_STARTS = ("#", "-", "B", "P", "1", "(", "<")
# Lines kept (the hot brands' lines, the system and task lines), as 4-byte ids: a few hundred
# bytes each as brands write them, 8 KB at most, as longer lines are encoded each time.
PIECE_CACHE = 8192
PIECE_MAX_CHARS = 2000


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
        # transformers call.
        backend = getattr(tokenizer, "backend_tokenizer", None)
        self._fast = getattr(backend, "encode_batch_fast", None)
        self._kept = lru_cache(maxsize=PIECE_CACHE)(lambda text: array("I", self._encode_whole(text)))
        self.cuts_lines = self._cutting_is_exact()
        # The serving prompt's frame now, in the loading thread: compiling the template takes
        # 30-60 ms, which on the event loop would hold up the first requests after every start.
        self._frames: dict[tuple[str, ...], list[str] | None] = {PROMPT_ROLES: self._frame(PROMPT_ROLES)}

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
        """The chat template's text for `messages`: its output around the contents is kept per
        sequence of roles, and the contents are put in its slots."""
        roles = tuple(m["role"] for m in messages)
        frame = self._frames.get(roles, False)
        if frame is False:
            frame = self._frames[roles] = self._frame(roles)
        if frame is None or any(len(m) != 2 for m in messages):  # a field besides role and content
            return render_prompt(self.tokenizer, messages)
        return _fill(frame, messages)

    def _frame(self, roles: tuple[str, ...]) -> list[str] | None:
        """The template's text between the contents of messages with these roles, or None
        when the template does more than put each content in place (strips or tests it)."""
        slot = "\ue000{}\ue001"  # private-use characters: no template writes them
        rendered = render_prompt(self.tokenizer, [{"role": r, "content": slot.format(i)} for i, r in enumerate(roles)])
        frame, rest = [], rendered
        for i in range(len(roles)):
            before, found, rest = rest.partition(slot.format(i))
            if not found:
                return None
            frame.append(before)
        frame.append(rest)
        for probe in ("  ข้อความ\nสอง บรรทัด ☕ ", "x"):
            messages = [{"role": r, "content": f"{probe}{i}"} for i, r in enumerate(roles)]
            if _fill(frame, messages) != render_prompt(self.tokenizer, messages):
                return None
        return frame

    def encode(self, text: str) -> list[int]:
        if not self.cuts_lines:
            return self._encode_whole(text)
        ids: list[int] = []
        for piece in pieces(text):
            ids += self._kept(piece) if len(piece) <= PIECE_MAX_CHARS else self._encode_whole(piece)
        return ids

    def count_tokens(self, text: str) -> int:
        return len(self.encode(text))

    def _encode_whole(self, text: str) -> list[int]:
        if self._fast is not None:
            return self._fast([text], add_special_tokens=False)[0].ids
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def _cutting_is_exact(self) -> bool:
        """Whether this tokenizer gives a text's ids as the concatenation of its pieces' ids. A
        tokenizer that adds a prefix space, strips around special tokens or merges across line
        breaks fails here, and gets whole-text encodes."""
        starts = [*_STARTS, *self.special_tokens[:3]]
        for end in _ENDS:
            for start in starts:
                text = f"x{end}\nก่อน{end}\n{start}y z\n"
                cut = list(pieces(text))
                if len(cut) < 2 or sum((self._encode_whole(p) for p in cut), []) != self._encode_whole(text):
                    return False
        return True


def _fill(frame: list[str], messages: list[dict[str, str]]) -> str:
    parts = [frame[0]]
    for message, text in zip(messages, frame[1:], strict=True):
        parts += (message["content"], text)
    return "".join(parts)


def pieces(text: str):
    """`text` cut after each line break that follows a visible character and precedes a
    printable ASCII one; the pieces joined are `text`."""
    start = 0
    for match in _BREAK.finditer(text):
        if match.start() > 0 and not text[match.start() - 1].isspace():
            yield text[start : match.end()]
            start = match.end()
    yield text[start:]
