"""From a validated request to chat messages: the one path both serving and training take.

The service calls `compose` for every request; `training/formatting.py` calls it for every
record. Same brand record + same fields + same tokenizer = the same prompt, token for token.
"""

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from app.brand_schema import Brand
from app.prompts import BrandContext, build_messages
from app.retrieval import BrandRetriever
from app.tasks import task_named

# Request-model fields that steer generation rather than describe the copy.
CONTROL_FIELDS = {"brand", "max_new_tokens", "temperature", "top_p", "seed", "attempts", "dry_run", "stream", "adapter"}


def request_fields(req) -> dict:
    """The request's own fields (context, platform, ...), as the prompt and the dataset name them."""
    return {k: v for k, v in req.model_dump().items() if k not in CONTROL_FIELDS}


@dataclass(frozen=True)
class Composed:
    messages: list[dict[str, str]]
    context: BrandContext | None
    context_tokens: int


def compose(
    task: str,
    brand: Brand,
    fields: dict,
    retriever: BrandRetriever,
    count_tokens: Callable[[str], int],
    special_tokens: Iterable[str],
    budget: int,
    with_context: bool = True,
) -> Composed:
    """Messages for one request; `with_context=False` gives the no-retrieval ablation."""
    context, used = None, 0
    if with_context:
        context, used = retriever.context(brand, task_named(task).query(fields), count_tokens, budget)
    messages = build_messages(task, brand.name, fields, context, special_tokens)
    return Composed(messages, context, used)
