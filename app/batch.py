"""Batches: a content calendar's captions, rewrites and briefs in one request.

- Running: every item goes through the service's own `generate()`, so through the same
  queue and batching as single requests, but the batch holds at most `window()` places of
  the queue at a time: single requests always find room. An item the queue refuses (single
  requests filled it) waits and asks again; any other failure is that item's own result.
- Export: the results as JSON, JSON lines, or CSV in UTF-8 with a BOM (Excel reads a CSV
  without one as the local code page, and Thai comes out as mojibake).
- Calendars: the CSV that `ai-director batch` reads, one item per row.
"""

import asyncio
import csv
import io
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from pydantic import BaseModel, Field

from app.errors import APIError, ErrorDetail, error_body
from app.platforms import PLATFORMS
from app.batch_request import TaskName
from app.schemas import GenerateResponse
from app.tasks import TASKS

log = logging.getLogger(__name__)

# An item the queue refused asks again after 20 ms, doubling up to 0.5 s: quick to take a
# place that frees, without spinning while single requests keep the queue full.
FIRST_RETRY_S, LONGEST_RETRY_S = 0.02, 0.5

# --- the answer -------------------------------------------------------------------------
# Here rather than in app/schemas.py: the error shape comes with FastAPI, which the training
# code, a reader of the request models, does without.

class BatchSuccess(GenerateResponse):
    index: int = Field(ge=0, description="The item's position in `items`.")
    task: TaskName


class BatchFailure(BaseModel):
    index: int = Field(ge=0, description="The item's position in `items`.")
    task: TaskName
    status: int = Field(description="The status the item would have had alone: 404, 422, 429, 500, 503 or 504.")
    error: ErrorDetail = Field(description="The one error shape's `error`, as the item alone would have had it.")


class BatchResponse(BaseModel):
    results: list[BatchSuccess | BatchFailure] = Field(
        description="One per item, in order: the single request's body, or that item's own `error`.")


# --- running ----------------------------------------------------------------------------

def window(settings) -> int:
    """Queue places a batch may hold at once: a model batch's worth, and at most half the queue."""
    return max(1, min(settings.max_batch_size, settings.max_queue // 2))


def places_of(item) -> int:
    """Queue places an item takes: one per attempt; a dry run takes none."""
    return 0 if item.dry_run else item.attempts


def request_of(item):
    """The item as its task's own request model, which the service knows."""
    return TASKS[item.task].request.model_validate(item.model_dump(exclude={"task"}, exclude_unset=True))


def failure(index: int, task: str, error: APIError) -> dict:
    """An item's result when it failed: its status and the one error shape's `error`."""
    body = error_body(error.code, error.message, error.param, **error.extra)
    return {"index": index, "task": task, "status": error.status, "error": body["error"]}


async def run_batch(items: list, generate: Callable[..., Awaitable[dict]], places: int, patience_s: float,
                    request_id: str) -> list[dict]:
    """Each item's result, in order, with at most `places` queue places held at a time."""
    free = asyncio.Semaphore(places)
    tasks: list[asyncio.Task] = []
    try:
        # Items start in order, each once its places are free; an item with more attempts than
        # the window holds the whole window. One loop takes the places, so none waits on another.
        for index, item in enumerate(items):
            held = min(places_of(item), places)
            for _ in range(held):
                await free.acquire()
            tasks.append(asyncio.create_task(
                _run_item(index, item, generate, patience_s, f"{request_id}.{index}", free, held)))
        return list(await asyncio.gather(*tasks))
    finally:
        for task in tasks:  # the client left: nothing of the batch stays queued
            task.cancel()


async def _run_item(index: int, item, generate, patience_s: float, request_id: str, free: asyncio.Semaphore,
                    held: int) -> dict:
    try:
        body = await _admitted(generate, request_of(item), request_id, patience_s)
        answer = GenerateResponse.model_validate(body).model_dump(mode="json", exclude_unset=True)
        return {"index": index, "task": item.task} | answer
    except APIError as exc:
        return failure(index, item.task, exc)
    except Exception:  # a bug fails this item, logged with its id, never the batch
        log.exception("batch item %s failed", request_id)
        error = APIError(500, "internal_error", f"the server failed on this item (id {request_id}); it is logged")
        return failure(index, item.task, error)
    finally:
        for _ in range(held):
            free.release()


async def _admitted(generate, request, request_id: str, patience_s: float) -> dict:
    """generate(), asked again while the queue is full, for up to `patience_s` seconds."""
    loop = asyncio.get_running_loop()
    give_up = loop.time() + patience_s
    wait = FIRST_RETRY_S
    while True:
        try:
            return await generate(request, request_id)
        except APIError as exc:
            if exc.code != "queue_full" or loop.time() + wait > give_up:
                raise
        await asyncio.sleep(wait)
        wait = min(wait * 2, LONGEST_RETRY_S)


# --- export -----------------------------------------------------------------------------

# `format=` value -> the media type answered; Accept's types -> the format they ask for.
MEDIA_TYPES = {"json": "application/json", "csv": "text/csv", "jsonl": "application/x-ndjson"}
ACCEPTED = {"application/json": "json", "text/csv": "csv", "application/x-ndjson": "jsonl",
            "application/jsonl": "jsonl", "*/*": "json", "application/*": "json"}
COLUMNS = ("index", "task", "brand", "platform", "input", "text", "on_brand", "score", "reasons", "finish_reason",
           "error_code", "error_message")


def negotiate(fmt: str | None, accept: str | None) -> tuple[str, str]:
    """(format, media type): the `format` parameter, else the Accept header's most wanted type, else JSON."""
    if fmt:
        return fmt, MEDIA_TYPES[fmt]
    wanted = []  # (-q, position, media type): the highest q first, then the first listed
    for position, entry in enumerate((accept or "").split(",")):
        media_type, *params = entry.split(";")
        media_type, weight = media_type.strip().lower(), 1.0
        for param in params:
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                try:
                    weight = float(value)
                except ValueError:
                    weight = 0.0
        if media_type in ACCEPTED and weight > 0:
            wanted.append((-weight, position, media_type))
    if not wanted:
        return "json", MEDIA_TYPES["json"]
    media_type = min(wanted)[2]
    kind = ACCEPTED[media_type]
    return kind, media_type if media_type in ("application/jsonl", "application/x-ndjson") else MEDIA_TYPES[kind]


def table(items: list[dict], results: list[dict]) -> list[dict]:
    """One flat row per result, for a spreadsheet: the item's input next to its answer or error."""
    rows = []
    for item, result in zip(items, results, strict=True):
        given = item.get(TASKS[item["task"]].main_field)
        checks = result.get("checks") or {}
        error = result.get("error") or {}
        rows.append({
            "index": result["index"],
            "task": result["task"],
            "brand": result.get("brand") or item.get("brand"),  # as brands.json writes it, once resolved
            "platform": item.get("platform") or "",
            "input": "; ".join(given) if isinstance(given, list) else given,
            "text": result.get("text", ""),
            "on_brand": "" if not checks else str(checks["on_brand"]).lower(),
            "score": checks.get("score", ""),
            "reasons": "; ".join(checks.get("reasons", [])),
            "finish_reason": result.get("finish_reason") or "",
            "error_code": error.get("code", ""),
            "error_message": error.get("message", ""),
        })
    return rows


def to_csv(rows: list[dict], columns=COLUMNS) -> str:
    """The rows as CSV with a header, starting with a BOM (see the module docstring)."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(columns), extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    return "\ufeff" + out.getvalue()


def to_jsonl(results: list[dict]) -> str:
    """One result object per line; Thai as it is, not as \\u escapes."""
    return "".join(json.dumps(result, ensure_ascii=False) + "\n" for result in results)


# --- calendars --------------------------------------------------------------------------

# A calendar names a task as its route does (adapt-voice) or as its items do (adapt_voice).
TASK_NAMES = {name: task.name for task in TASKS.values() for name in (task.name, task.route.strip("/"))}
OPTIONAL_COLUMNS = ("platform", "tone", "audience", "adapter")  # each sent to the tasks whose request has it


class CalendarError(ValueError):
    """A calendar that cannot be sent: the message names the row or the column."""


@dataclass(frozen=True)
class CalendarRow:
    number: int  # as a spreadsheet numbers it: the header is row 1
    date: str
    item: dict  # the batch item: task, brand and that task's fields


def read_calendar(data: bytes) -> list[CalendarRow]:
    """A content calendar's rows as batch items; a row that cannot be one is a CalendarError."""
    try:
        text = data.decode("utf-8-sig")  # a BOM, as Excel saves "CSV UTF-8", is tolerated
    except UnicodeDecodeError as exc:
        raise CalendarError(f"is not UTF-8 (byte {exc.start}); save it as CSV UTF-8") from None
    reader = csv.DictReader(io.StringIO(text, newline=""))
    reader.fieldnames = [name.strip().lower() for name in reader.fieldnames or []]
    missing = [name for name in ("brand", "task") if name not in reader.fieldnames]
    if missing:
        raise CalendarError(f"has no {' or '.join(repr(m) for m in missing)} column (its columns: "
                            f"{', '.join(reader.fieldnames) or 'none'}); the header row names brand, task, "
                            "context / message / objectives, platform and date")
    rows = []
    for number, record in enumerate(reader, start=2):
        cells = {k: (v or "").strip() for k, v in record.items() if k is not None}
        if any(cells.values()):  # rows a spreadsheet leaves empty are skipped
            rows.append(CalendarRow(number, cells.get("date", ""), _item(number, cells)))
    if not rows:
        raise CalendarError("has no rows below its header")
    return rows


def _item(number: int, cells: dict) -> dict:
    task = TASK_NAMES.get(cells["task"].lower())
    if task is None:
        raise CalendarError(f"row {number}: task {cells['task']!r} is not one of "
                            f"{', '.join(t.route.strip('/') for t in TASKS.values())}")
    if not cells["brand"]:
        raise CalendarError(f"row {number}: the brand is empty")
    field = TASKS[task].main_field
    if not cells.get(field):
        raise CalendarError(f"row {number}: a {task.replace('_', '-')} needs its {field}, and that cell is "
                            f"{'empty' if field in cells else 'missing (no such column)'}")
    given = cells[field]
    if field == "objectives":  # one per line of the cell, or separated by ";"
        given = [part.strip() for line in given.splitlines() for part in line.split(";") if part.strip()]
    item = {"task": task, "brand": cells["brand"], field: given}
    model_fields = TASKS[task].request.model_fields
    for column in OPTIONAL_COLUMNS:
        if cells.get(column) and column in model_fields:
            item[column] = cells[column]
    if "platform" in item:
        item["platform"] = item["platform"].lower()
        if item["platform"] not in PLATFORMS:
            raise CalendarError(f"row {number}: platform {cells['platform']!r} is not one of {', '.join(PLATFORMS)}")
    return item


def output_format(path) -> str:
    """The export format an output file's extension asks for: .jsonl, .json, else CSV."""
    suffix = path.suffix.lower() if path else ""
    return {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "json"}.get(suffix, "csv")
