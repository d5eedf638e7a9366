"""A task is defined once (app/tasks.py): a throwaway fourth task, registered here, gets its
route, its prompt, its retrieval query, its batch-free service path and its training records
from that one definition."""

import json

import pytest
from pydantic import Field

from app.main import create_app
from app.prompt_contract import prompt_format_sha256
from app.prompts import build_messages
from app.schemas import TaskRequest
from app.settings import Settings
from app.tasks import TASKS, Task
from conftest import REPO
from fakes import FakeEngine
from test_server import serving_in_thread
from training.formatting import Formatter, load_brands
from training.records import load_records


class TaglineRequest(TaskRequest):
    product: str = Field(max_length=200, description="The product the tagline sells.")
    mood: str | None = Field(None, max_length=100)


TAGLINE = Task(
    name="tagline", route="/tagline", summary="A one-line tagline for a product.", request=TaglineRequest,
    instruction="Write one short tagline in Thai for the product below, in the brand's voice.",
    fields=(("product", "Product"), ("mood", "Mood")), query_fields=("product", "mood"), main_field="product",
)


@pytest.fixture
def tagline(monkeypatch):
    before = prompt_format_sha256()
    monkeypatch.setitem(TASKS, "tagline", TAGLINE)
    return before


def test_the_prompt_and_the_contract_follow_the_definition(tagline):
    assert TAGLINE.query({"product": "Cold Brew", "mood": "สดชื่น", "brand": "x"}) == "Cold Brew สดชื่น"
    messages = build_messages("tagline", "CoffeeLab", {"product": "Cold Brew", "mood": "สดชื่น"}, None)
    user = messages[1]["content"]
    assert user.startswith(TAGLINE.instruction)
    assert user.endswith("### Request\nBrand: CoffeeLab\nProduct: Cold Brew\nMood: สดชื่น")
    assert prompt_format_sha256() != tagline  # an adapter trained without the task is told apart


def test_the_route_serves_it_through_the_whole_brand_layer(tagline, tiny_model_dir, tiny_tokenizer):
    # A budget with room for products: the tiny tokenizer spends most of the default on the profile.
    settings = Settings(base_model=str(tiny_model_dir), brands_path=REPO / "brands" / "brands.json",
                        context_token_budget=1200, max_seq_length=2048, _env_file=None)
    app = create_app(settings, engine_factory=lambda s: FakeEngine(tiny_tokenizer))
    with serving_in_thread(app) as (client, _):
        dry = client.post("/tagline", json={"brand": "คอฟฟี่แล็บ", "product": "Cold Brew Honey Yuzu", "dry_run": True})
        assert dry.status_code == 200, dry.text
        assert "Product: Cold Brew Honey Yuzu" in dry.json()["prompt"] and TAGLINE.instruction in dry.json()["prompt"]
        assert dry.json()["context"]["products"][0]["text"].startswith("Cold Brew")  # its query ranked them
        answer = client.post("/tagline", json={"brand": "CoffeeLab", "product": "Cold Brew", "seed": 3})
        assert answer.status_code == 200 and answer.json()["checks"] is not None
        wrong = client.post("/tagline", json={"brand": "CoffeeLab", "context": "not a tagline field"})
        assert wrong.status_code == 422 and wrong.json()["error"]["param"] in ("product", "context")
        document = client.get("/openapi.json").json()
        assert document["paths"]["/tagline"]["post"]["operationId"] == "tagline"


def test_training_records_take_its_fields(tagline, tiny_tokenizer, tmp_path):
    data = tmp_path / "train.jsonl"
    record = {"instruction": "x", "output": "☕ Cold Brew จาก CoffeeLab", "task": "tagline", "brand": "CoffeeLab",
              "product": "Cold Brew", "mood": "สดชื่น"}
    data.write_text(json.dumps(record, ensure_ascii=False) + "\n", encoding="utf-8")
    [loaded] = load_records(data)
    assert loaded.request_fields() == {"product": "Cold Brew", "mood": "สดชื่น"}
    formatter = Formatter(tiny_tokenizer, load_brands(REPO / "brands" / "brands.json"), 384, 1024)
    user = formatter.messages(loaded)[1]["content"]
    assert user.startswith(TAGLINE.instruction) and "Product: Cold Brew" in user and "### Brand" in user
    data.write_text(json.dumps(record | {"prodcut": "typo"}) + "\n", encoding="utf-8")
    with pytest.raises(ValueError, match="field 'prodcut' is not a known field"):
        load_records(data)


def test_an_unregistered_task_is_refused_by_name(tmp_path):
    data = tmp_path / "train.jsonl"
    data.write_text(json.dumps({"instruction": "x", "output": "y", "task": "tagline", "brand": "CoffeeLab"}) + "\n")
    with pytest.raises(ValueError, match="task must be one of caption, adapt_voice, brief"):
        load_records(data)
    with pytest.raises(ValueError, match="unknown task 'tagline'"):
        build_messages("tagline", "CoffeeLab", {}, None)
