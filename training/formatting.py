"""Records to training examples, through the service's own prompt path.

Each record becomes the request the service would receive, is composed by
`app.composer.compose` with the brand context retrieved from brands.json, and is rendered
by the tokenizer's chat template. Loss falls on the assistant turn only: the answer and
its `<|im_end|>` (plus the template's newline), never the prompt.
"""

from pathlib import Path

from pydantic import ValidationError

from app.brand_store import BrandSnapshot, BrandStore
from app.composer import compose, request_fields
from app.prompts import SYSTEM_PROMPT, neutralize, render_conversation, render_prompt, special_tokens_of
from app.tasks import TASKS
from training.model import IGNORE
from training.records import DatasetError, Record


def load_brands(path: Path) -> BrandSnapshot:
    """The brands as the service loads them, with the same resolver and retriever."""
    return BrandStore(path).load()


class Formatter:
    def __init__(self, tokenizer, brands: BrandSnapshot, context_token_budget: int, max_length: int):
        self.tokenizer = tokenizer
        self.brands = brands
        self.budget = context_token_budget
        self.max_length = max_length
        self.special_tokens = special_tokens_of(tokenizer)

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def messages(self, record: Record, where: str = "record", with_context: bool = True) -> list[dict[str, str]]:
        """The chat messages the service would build for this record's request."""
        if record.task is None:  # plain Alpaca: instruction and input, no brand retrieval
            user = record.instruction + (f"\n\n{record.input}" if record.input else "")
            return [{"role": "system", "content": SYSTEM_PROMPT},
                    {"role": "user", "content": neutralize(user, self.special_tokens)}]
        match = self.brands.resolver.exact(record.brand)
        if match is None:
            raise DatasetError(
                f"{where}: brand {record.brand!r} is not in brands.json; add it there (retrieval needs its facts)"
            )
        try:
            request = TASKS[record.task].request(brand=record.brand, **record.request_fields())
        except ValidationError as exc:
            err = exc.errors()[0]
            raise DatasetError(f"{where}: field '{'.'.join(map(str, err['loc']))}': {err['msg']}") from exc
        composed = compose(
            record.task, match.brand, request_fields(request), self.brands.retriever, self.count_tokens,
            self.special_tokens, self.budget, with_context=with_context,
        )
        return composed.messages

    def prompt(self, record: Record, where: str = "record", with_context: bool = True) -> str:
        return render_prompt(self.tokenizer, self.messages(record, where, with_context))

    def example(self, record: Record, where: str = "record") -> dict:
        """input_ids and labels for one record; the prompt's tokens carry no loss."""
        messages = self.messages(record, where)
        prompt_ids = self.tokenizer(render_prompt(self.tokenizer, messages), add_special_tokens=False)["input_ids"]
        answer = neutralize(record.output, self.special_tokens)
        full = render_conversation(self.tokenizer, messages, answer)
        ids = self.tokenizer(full, add_special_tokens=False)["input_ids"]
        if ids[: len(prompt_ids)] != prompt_ids:
            raise DatasetError(f"{where}: the prompt tokenizes differently inside the conversation; report this")
        return {
            "input_ids": ids,
            "labels": [IGNORE] * len(prompt_ids) + ids[len(prompt_ids) :],
            "attention_mask": [1] * len(ids),
        }

    def dataset(self, records: list[Record], source: str, drop_long: bool = False) -> tuple[list[dict], int]:
        """Examples for a split, and how many were dropped for length (only with drop_long)."""
        examples, dropped = [], 0
        for i, record in enumerate(records, start=1):
            where = f"{source} record {i}"
            example = self.example(record, where)
            if len(example["input_ids"]) > self.max_length:
                if not drop_long:
                    raise DatasetError(
                        f"{where}: {len(example['input_ids'])} tokens, over max_seq_length {self.max_length}; "
                        "shorten it, raise max_seq_length, or pass --drop-long to skip such samples"
                    )
                dropped += 1
                continue
            examples.append(example)
        if not examples:
            raise DatasetError(f"{source}: every sample is over max_seq_length {self.max_length}")
        return examples, dropped
