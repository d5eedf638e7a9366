"""The tasks the service writes, each defined once.

A task's definition holds everything that differs between tasks: its name (the prompt's
and the dataset's), its route, its request model, its instruction, the request fields the
prompt shows with their labels, the fields whose text ranks a brand's products and example
posts, and its main field (the one an error about the request's length names, and the one
a content calendar's row must fill). Routes, prompts, the composer, the service, batches,
calendars, training records and augmentation all read this registry: adding a task is one
more entry here (and its request model in app/schemas.py).

Pure Python plus pydantic, no torch: `training/` reads it too.
"""

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from app.schemas import AdaptVoiceRequest, BriefRequest, CaptionRequest


@dataclass(frozen=True)
class Task:
    name: str  # in prompts, datasets and batch items: "adapt_voice"
    route: str  # "/adapt-voice"; a calendar's task column may give it without the slash
    summary: str  # the route's one-line documentation
    request: type  # its request model: brand and the sampling fields, plus its own fields
    instruction: str  # the first paragraph of the user turn
    fields: tuple[tuple[str, str], ...]  # (request field, label), in the order the prompt shows them
    query_fields: tuple[str, ...]  # the fields whose text ranks the brand's products and example posts
    main_field: str  # the request's own required text

    def query(self, fields: Mapping[str, Any]) -> str:
        """The request text that ranks a brand's products and example posts."""
        words: list[str] = []
        for name in self.query_fields:
            value = fields.get(name)
            words += [v for v in value if v] if isinstance(value, (list, tuple)) else [value] if value else []
        return " ".join(words)


TASKS: dict[str, Task] = {task.name: task for task in (
    Task(
        name="caption", route="/caption", summary="A social caption for a brand and an occasion.",
        request=CaptionRequest,
        instruction=("Write one social media caption in Thai for the brand below. Follow the brand's tone, "
                     "emoji and hashtags, mention the brand by name, and use only the facts given here."),
        fields=(("context", "Occasion"), ("platform", "Platform"), ("tone", "Tone")),
        query_fields=("context", "tone"), main_field="context",
    ),
    Task(
        name="adapt_voice", route="/adapt-voice", summary="A generic message rewritten in a brand's voice.",
        request=AdaptVoiceRequest,
        instruction=("Rewrite the message below in Thai in the brand's voice. Keep every fact (offers, numbers, "
                     "dates) unchanged and use the brand's tone, emoji and hashtags."),
        fields=(("message", "Message"), ("platform", "Platform"), ("tone", "Tone")),
        query_fields=("message",), main_field="message",
    ),
    Task(
        name="brief", route="/brief", summary="A campaign brief for a brand and its objectives.",
        request=BriefRequest,
        instruction=("Write a campaign brief in Thai for the brand below: campaign name, objectives, target "
                     "audience, key message, content ideas, channels, KPIs and hashtags."),
        fields=(("objectives", "Objectives"), ("audience", "Audience"), ("platform", "Platform")),
        query_fields=("objectives", "audience"), main_field="objectives",
    ),
)}


def task_named(name: str) -> Task:
    try:
        return TASKS[name]
    except KeyError:
        raise ValueError(f"unknown task {name!r}; expected one of {', '.join(TASKS)}") from None


def task_of(request) -> Task:
    """The task a request belongs to: the nearest class of its model that is a task's request."""
    by_model = {task.request: task for task in TASKS.values()}
    for cls in type(request).__mro__:
        if cls in by_model:
            return by_model[cls]
    raise ValueError(f"{type(request).__name__} is the request of no task")


def request_field_names() -> tuple[str, ...]:
    """Every field any task's prompt shows, for dataset records."""
    return tuple(dict.fromkeys(name for task in TASKS.values() for name, _ in task.fields))
