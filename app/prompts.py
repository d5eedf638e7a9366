"""The prompt format, defined once for serving and training.

Pure Python on purpose (no torch): `training/` imports the very same functions, so the
adapter is trained on exactly the prompt the service sends. A request becomes:

    system:    SYSTEM_PROMPT
    user:      the task's instruction, the brand-context block, the request block
               (each task's instruction and request fields are in app/tasks.py)
    assistant: (generated; in training, the reference output)

Every untrusted string (request fields, brands.json values) goes through `neutralize`
first, so no text can open or close a ChatML turn.
"""

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from app.brand_schema import Brand, Product
from app.tasks import task_named

SYSTEM_PROMPT = "You are an AI Director for marketing content creation."
PROMPT_ROLES = ("system", "user")  # the messages of every prompt served; training adds the assistant's

# Qwen's control tokens all look like <|name|>; breaking the "<|" / "|>" pairs covers every
# one of them, including tokens a future tokenizer adds, without a list.
_CONTROL_PAIR = re.compile(r"<\||\|>")


def neutralize(text: str, special_tokens: Iterable[str] = ()) -> str:
    """Make `text` unable to contain a control token; visible text is otherwise unchanged."""
    previous = None
    while previous != text:  # "<|>" becomes "< |>", which holds a new "|>": repeat to a fixpoint
        previous = text
        text = _CONTROL_PAIR.sub(lambda m: "< |" if m.group() == "<|" else "| >", text)
        for token in special_tokens:
            if len(token) > 1 and token in text:
                text = text.replace(token, token[0] + "\u2060" + token[1:])
    return text


@dataclass(frozen=True)
class Retrieved:
    """One product or example post chosen for the prompt, with its retrieval score."""

    text: str
    score: float = 0.0


@dataclass(frozen=True)
class BrandContext:
    """The brand facts that go into one prompt: the profile plus the retrieved items."""

    brand: Brand
    products: Sequence[Retrieved] = ()
    examples: Sequence[Retrieved] = ()
    dropped: Sequence[str] = field(default_factory=tuple)


def product_line(product: Product) -> str:
    text = product.name
    if product.description:
        text += f": {product.description}"
    if product.price:
        text += f" ({product.price})"
    return text


def profile_lines(brand: Brand) -> list[str]:
    """The always-included part of the brand block; empty fields are left out."""
    lines = [f"Brand: {brand.name}"]
    optional = (
        ("Also known as", ", ".join(brand.aliases)),
        ("Industry", brand.industry),
        ("Description", brand.description),
        ("Tone", ", ".join(brand.tone)),
        ("Target audience", brand.target_audience),
        ("Core values", ", ".join(brand.core_values)),
        ("Visual style", brand.visual_style),
        ("Hashtags", " ".join(brand.hashtags)),
        ("Signature emoji", " ".join(brand.emoji)),
        ("Words to avoid", ", ".join(brand.words_to_avoid)),
    )
    lines += [f"{label}: {value}" for label, value in optional if value]
    return lines


BLOCK_HEADER = "### Brand"
SECTION_HEADERS = {"product": "Products:", "example": "Example posts:"}


def item_line(kind: str, text: str) -> str:
    """One retrieved product or example post as a line of the brand block."""
    return "- " + (text if kind == "product" else " / ".join(text.splitlines()))


def brand_block_lines(context: BrandContext) -> list[str]:
    """The block's lines, before neutralizing; retrieval counts tokens line by line."""
    lines = [BLOCK_HEADER, *profile_lines(context.brand)]
    for kind, items in (("product", context.products), ("example", context.examples)):
        if items:
            lines.append(SECTION_HEADERS[kind])
            lines += [item_line(kind, item.text) for item in items]
    return lines


def brand_block(context: BrandContext, special_tokens: Iterable[str] = ()) -> str:
    """The brand-context block of the user turn."""
    return neutralize("\n".join(brand_block_lines(context)), tuple(special_tokens))


def _field_text(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return "; ".join(str(v) for v in value)
    return str(value)


def request_block(task: str, brand_name: str, fields: Mapping[str, Any], special_tokens: Iterable[str] = ()) -> str:
    """The request block: the brand's name plus the request's own fields, in a fixed order."""
    lines = ["### Request", f"Brand: {brand_name}"]
    for key, label in task_named(task).fields:
        # Stripped: a request keeps the edge spaces of `tone` or `audience`, a training record
        # drops them, and the two must give the same prompt.
        text = _field_text(fields.get(key) or "").strip()
        if text:
            lines.append(f"{label}: {text}")
    return neutralize("\n".join(lines), tuple(special_tokens))


def build_messages(
    task: str,
    brand_name: str,
    fields: Mapping[str, Any],
    context: BrandContext | None,
    special_tokens: Iterable[str] = (),
) -> list[dict[str, str]]:
    """System + user messages for one request. `context=None` leaves the brand block out."""
    special_tokens = tuple(special_tokens)
    parts = [task_named(task).instruction]
    if context is not None:
        parts.append(brand_block(context, special_tokens))
    parts.append(request_block(task, neutralize(brand_name, special_tokens), fields, special_tokens))
    system, user = PROMPT_ROLES
    return [
        {"role": system, "content": SYSTEM_PROMPT},
        {"role": user, "content": "\n\n".join(parts)},
    ]


# An added token shaped like markup is a control token even when not flagged special: Qwen2.5
# adds <tool_call> and </tool_call> that way, and they still encode as one token each. Added
# tokens that are plain text (some tokenizers add runs of spaces) are left alone.
_MARKUP_TOKEN = re.compile(r"<[^\s<>]+>")


def special_tokens_of(tokenizer) -> tuple[str, ...]:
    """Every special or markup-shaped added token string of a tokenizer, for `neutralize`."""
    added = (
        t.content for t in tokenizer.added_tokens_decoder.values() if t.special or _MARKUP_TOKEN.fullmatch(t.content)
    )
    return tuple(dict.fromkeys([*tokenizer.all_special_tokens, *added]))


def render_prompt(tokenizer, messages: list[dict[str, str]]) -> str:
    """The text the model sees, through the tokenizer's own chat template."""
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def render_conversation(tokenizer, messages: list[dict[str, str]], answer: str) -> str:
    """A full training example: the prompt plus the assistant's answer and its end token."""
    full = [*messages, {"role": "assistant", "content": answer}]
    return tokenizer.apply_chat_template(full, tokenize=False)
