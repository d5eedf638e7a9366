"""The prompt contract: what an adapter was trained on, written beside it and checked before use.

Training writes `prompt_contract.json` into the adapter folder; the service and
`python -m training evaluate` read it and stop when they would build a different prompt,
because an adapter fed a prompt it never saw in training degrades without any error.
The contract holds the two settings that shape the prompt (the brand-context token budget
and the maximum sequence length) and a SHA-256 of the prompt format.

What the format hash covers, all read from `app.prompts` (the one prompt definition):
- the system prompt, each task's instruction, and the request fields with their labels in order;
- the block layout, captured by rendering a fixed synthetic request per task with the very
  functions that build every prompt (`build_messages`): once with a brand block holding every
  profile field, products and example posts, once without it (the no-retrieval mode), with
  a control token in the input so that a change to `neutralize` shows too. Any edit to a
  header, a label, a separator or the order of lines changes the messages, so the hash.

What it leaves out, on purpose: brands.json (brand facts change live, the format does not)
and the tokenizer with its chat template (the adapter folder ships its own tokenizer, and
the service loads that one). Bump FORMAT_VERSION when what is hashed here changes, so an
old contract is never compared with a hash computed another way.
"""

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, ConfigDict, ValidationError

from app import prompts, tasks
from app.brand_schema import Brand, Product

FORMAT_VERSION = 1  # of the hashing scheme above, not of the prompt itself
CONTRACT_FILE = "prompt_contract.json"

# Fixed special tokens for the canonical render: the hash must not depend on the tokenizer.
_CANONICAL_SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")

# One value per request field any task has; build_messages keeps only its task's fields.
_CANONICAL_FIELDS = {
    "context": "Launch day <|im_end|> offer",  # a control token: neutralize's output is part of the format
    "message": "Everything is 20% off until Sunday",
    "platform": "instagram",
    "tone": "  playful ",  # edge spaces: how request text is cleaned is part of the format too
    "objectives": ["awareness", "sign-ups"],
    "audience": "students",
}


class ContractError(ValueError):
    """The contract file cannot be read; the message names the file."""


class PromptContract(BaseModel):
    """The contents of prompt_contract.json."""

    # Unknown keys are ignored: a newer trainer may add informational fields; the checked ones are required.
    model_config = ConfigDict(extra="ignore", frozen=True)

    format_version: int
    prompt_format_sha256: str
    context_token_budget: int
    max_seq_length: int
    base_model: str | None = None  # informational: the service already warns about another base


@dataclass(frozen=True)
class Mismatch:
    """One contract field that differs: its name, the adapter's value and the current one."""

    field: str
    trained: object
    current: object


def _canonical_brand() -> Brand:
    return Brand(
        name="Canonical Brand", aliases=["แบรนด์ตัวอย่าง"], industry="Retail", description="A fixed example brand.",
        tone=["warm", "witty"], target_audience="Everyone", core_values=["care"], visual_style="Pastel",
        hashtags=["#Canonical"], emoji=["✨"], words_to_avoid=["cheap"],
        products=[Product(name="Item", description="A product.", price="99 THB")],
        example_posts=["First line\nSecond line"],
    )


def canonical_messages() -> dict[str, list[list[dict[str, str]]]]:
    """Per task, the messages of the fixed request with and without its brand block."""
    brand = _canonical_brand()
    context = prompts.BrandContext(
        brand=brand,
        products=[prompts.Retrieved(prompts.product_line(p), 1.0) for p in brand.products],
        examples=[prompts.Retrieved(post, 0.5) for post in brand.example_posts],
    )
    return {
        task: [prompts.build_messages(task, brand.name, _CANONICAL_FIELDS, ctx, _CANONICAL_SPECIAL_TOKENS)
               for ctx in (context, None)]
        for task in tasks.TASKS
    }


def prompt_format_sha256() -> str:
    """SHA-256 of the current prompt format; read at call time, so it follows `app.prompts` as it is now."""
    spec = {
        "format_version": FORMAT_VERSION,
        "system_prompt": prompts.SYSTEM_PROMPT,
        "tasks": {task.name: {"instruction": task.instruction, "request_fields": task.fields}
                  for task in tasks.TASKS.values()},
        "block_header": prompts.BLOCK_HEADER,
        "section_headers": prompts.SECTION_HEADERS,
        "rendered": canonical_messages(),
    }
    # sort_keys + fixed separators: the same bytes in every process, whatever the dict order.
    raw = json.dumps(spec, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(raw.encode("utf-8")).hexdigest()


def current_contract(context_token_budget: int, max_seq_length: int, base_model: str | None = None) -> PromptContract:
    """The contract these settings and this code would train (or serve) with."""
    return PromptContract(format_version=FORMAT_VERSION, prompt_format_sha256=prompt_format_sha256(),
                          context_token_budget=context_token_budget, max_seq_length=max_seq_length,
                          base_model=base_model)


def write_contract(folder: Path, contract: PromptContract) -> Path:
    """Write prompt_contract.json into `folder` atomically: tmp + replace."""
    path = Path(folder) / CONTRACT_FILE
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(contract.model_dump_json(indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path


def read_contract(folder: Path) -> PromptContract | None:
    """The adapter's contract; None when the folder has none (an adapter trained before contracts)."""
    path = Path(folder) / CONTRACT_FILE
    if not path.is_file():
        return None
    try:
        return PromptContract.model_validate_json(path.read_bytes())
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(map(str, err["loc"])) or "file"
        raise ContractError(f"{path} is not a valid prompt contract ({where}: {err['msg']}); "
                            "retrain the adapter to rewrite it") from exc


_LABELS = {
    "format_version": "prompt contract format version",
    "prompt_format_sha256": "prompt format (system prompt, instructions, field labels, block layout)",
    "context_token_budget": "context_token_budget",
    "max_seq_length": "max_seq_length",
}


def describe(m: Mismatch) -> str:
    """One difference as a phrase naming the field and both values."""
    trained, current = m.trained, m.current
    if m.field == "prompt_format_sha256":  # 12 hex digits tell two formats apart and stay readable
        trained, current = f"sha256 {str(trained)[:12]}", f"sha256 {str(current)[:12]}"
    return f"{_LABELS[m.field]} is {trained} in the adapter but {current} here"


def compare(trained: PromptContract, current: PromptContract) -> list[Mismatch]:
    """The checked fields that differ; empty when the adapter can be used as it is."""
    if trained.format_version != current.format_version:  # hashes made by different schemes cannot be compared
        return [Mismatch("format_version", trained.format_version, current.format_version)]
    return [Mismatch(name, getattr(trained, name), getattr(current, name))
            for name in ("prompt_format_sha256", "context_token_budget", "max_seq_length")
            if getattr(trained, name) != getattr(current, name)]
