"""Dataset records: Alpaca fields plus the request fields the prompt needs, read strictly."""

import hashlib
import json
from pathlib import Path
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from app.tasks import TASKS, request_field_names


class DatasetError(ValueError):
    """A dataset problem, with the file, the line and what to do about it."""


class Record(BaseModel):
    # Extra keys are kept, then checked against the fields the tasks' prompts show (app/tasks.py):
    # a task added there brings its fields to the dataset without a change here.
    model_config = ConfigDict(extra="allow", str_strip_whitespace=True)

    instruction: str = Field(min_length=1)
    input: str = ""
    output: str = Field(min_length=1)
    # RAG-aware records name the task and brand; a plain Alpaca record leaves them out.
    task: str | None = None
    brand: str | None = None
    context: str | None = None
    message: str | None = None
    objectives: list[str] | str | None = None
    audience: str | None = None
    platform: str | None = None
    tone: str | None = None

    @field_validator("task")
    @classmethod
    def _known_task(cls, v: str | None) -> str | None:
        if v is not None and v not in TASKS:
            raise ValueError(f"task must be one of {', '.join(TASKS)}")
        return v

    def unknown_fields(self) -> list[str]:
        return [k for k in self.model_extra or {} if k not in request_field_names()]

    def request_fields(self) -> dict:
        values = self.model_dump()
        return {k: values[k] for k in request_field_names() if values.get(k) is not None}


def load_records(path: Path) -> list[Record]:
    """Every record of a JSONL file; the first bad line stops with its number."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"{path}: file not found; run `python -m training augment` or pass --data")
    records = []
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            data = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DatasetError(f"{path}:{lineno}: invalid JSON ({exc.msg} at column {exc.colno}); fix or remove the line") from exc
        if not isinstance(data, dict):
            raise DatasetError(f"{path}:{lineno}: expected a JSON object with instruction, input and output")
        try:
            record = Record.model_validate(data)
        except ValidationError as exc:
            err = exc.errors()[0]
            field = ".".join(str(p) for p in err["loc"])
            what = "is required" if err["type"] == "missing" else err["msg"]
            if err["type"] == "extra_forbidden":
                what = "is not a known field (misspelt?)"
            raise DatasetError(f"{path}:{lineno}: field '{field}' {what}") from exc
        if unknown := record.unknown_fields():
            raise DatasetError(f"{path}:{lineno}: field '{unknown[0]}' is not a known field (misspelt?)")
        if (record.task is None) != (record.brand is None):
            raise DatasetError(f"{path}:{lineno}: 'task' and 'brand' go together; give both or neither")
        records.append(record)
    if not records:
        raise DatasetError(f"{path}: no records; a split needs at least one")
    return records


def write_records(path: Path, records: list[Record]) -> None:
    """Write atomically: a reader never sees half a file."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    lines = [json.dumps(r.model_dump(exclude_none=True, exclude_defaults=False), ensure_ascii=False) for r in records]
    tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
    tmp.replace(path)


def sha256_of(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()
