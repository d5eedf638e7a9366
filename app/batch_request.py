"""The body of POST /batch, built from the task registry: one item model per task, each its
task's request plus `task` (the discriminator), without streaming."""

from typing import Annotated, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic_core import InitErrorDetails, PydanticCustomError

from app.tasks import TASKS, Task


class _BatchItem(BaseModel):
    """What a batch item changes in its task's request: it never streams."""

    stream: Literal[False] = Field(False, description="Always false: a batch answers once, with every result.")

    @field_validator("stream", mode="before")
    @classmethod
    def _no_stream(cls, v):
        if v is not False:  # strictly: the document says `const: false`, and 0 or "no" are not that
            raise ValueError("a batch does not stream; leave `stream` out of its items, or send the item alone")
        return v


def _item_model(task: Task) -> type[BaseModel]:
    """`CaptionItem` for CaptionRequest: json_schema_extra=None drops the single request's example."""
    name = task.request.__name__.removesuffix("Request") + "Item"
    namespace = {
        "__module__": __name__,
        "__annotations__": {"task": Literal[task.name]},
        "task": Field(description=f"`{task.name}`: {task.summary} The fields of POST {task.route}."),
        "model_config": ConfigDict(json_schema_extra=None),
    }
    return type(name, (_BatchItem, task.request), namespace)


ITEM_MODELS = {name: _item_model(task) for name, task in TASKS.items()}
BatchItem = Annotated[Union[tuple(ITEM_MODELS.values())], Field(discriminator="task")]  # noqa: UP007
TaskName = Literal[tuple(TASKS)]


def _item_error(error: dict) -> InitErrorDetails:
    """An item's validation error located as `items[3].context`, without pydantic's union tag."""
    loc = tuple(error["loc"])
    kind, ctx = error["type"], error.get("ctx") or {}
    if len(loc) >= 2 and loc[1] in ITEM_MODELS:  # (3, "caption", "context") -> (3, "context")
        loc = (loc[0], *loc[2:])
    if kind == "union_tag_invalid":
        kind = PydanticCustomError("invalid_task", "task must be one of {tasks}, not {tag}",
                                   {"tasks": ", ".join(ITEM_MODELS), "tag": repr(ctx.get("tag"))})
        loc, ctx = (*loc[:1], "task"), {}
    elif kind == "union_tag_not_found":
        kind, loc, ctx = "missing", (*loc[:1], "task"), {}
    return InitErrorDetails(type=kind, loc=loc, input=error["input"], ctx=ctx)


class BatchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"items": [
        {"task": "caption", "brand": "CoffeeLab", "context": "เปิดตัวเมนูใหม่ Cold Brew Honey Yuzu ต้อนรับหน้าร้อน",
         "platform": "instagram"},
        {"task": "adapt_voice", "brand": "GlowLab", "message": "ลดราคา 20% ทุกรายการ ถึงสิ้นเดือนนี้",
         "platform": "facebook"},
        {"task": "brief", "brand": "ครัวคุณยาย", "objectives": ["เพิ่มยอดสั่งกลับบ้านช่วงสงกรานต์"],
         "platform": "line"},
    ]}]})

    # No maxItems in the document: the limit is a setting, checked by the service (a 422 naming it).
    items: list[BatchItem] = Field(
        min_length=1, description="Up to AI_DIRECTOR_MAX_BATCH_ITEMS items (200 unless the server sets it), each "
                                  "`task` plus that task's request fields; answered in the same order.")

    @field_validator("items", mode="wrap")
    @classmethod
    def _items_by_index(cls, v, handler):
        try:
            return handler(v)
        except ValidationError as exc:
            raise ValidationError.from_exception_data(exc.title, [_item_error(e) for e in exc.errors()]) from None
