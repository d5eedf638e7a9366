"""The prompter encodes a prompt line by line and keeps each line's ids: the ids must be
exactly the tokenizer's own for the whole text, for the tiny model's tokenizer and for one
with Qwen2.5's normalizer and pre-tokenizer, and a tokenizer where cutting would change
them must get whole-text encodes."""

import json
import random

import pytest
from tokenizers import Tokenizer
from transformers import PreTrainedTokenizerFast

from app.brand_store import BrandStore
from app.composer import compose
from app.prompter import Prompter, pieces
from app.prompts import build_messages, render_prompt
from conftest import REPO

# Qwen2.5-7B-Instruct's tokenizer.json, as published: NFC, then this split, then bytes.
QWEN_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|"
              r"\s*[\r\n]+|\s+(?!\S)|\s+")


def _variant(tiny_tokenizer, normalizer, pre_tokenizer) -> PreTrainedTokenizerFast:
    spec = json.loads(tiny_tokenizer.backend_tokenizer.to_str())
    spec["normalizer"], spec["pre_tokenizer"] = normalizer, pre_tokenizer
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=Tokenizer.from_str(json.dumps(spec)),
                                        eos_token="<|im_end|>", pad_token="<|endoftext|>")
    tokenizer.chat_template = tiny_tokenizer.chat_template
    return tokenizer


@pytest.fixture(scope="module")
def qwen_like(tiny_tokenizer):
    return _variant(tiny_tokenizer, {"type": "NFC"}, {"type": "Sequence", "pretokenizers": [
        {"type": "Split", "pattern": {"Regex": QWEN_SPLIT}, "behavior": "Isolated", "invert": False},
        {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False, "use_regex": False},
    ]})


def _whole(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def test_pieces_join_to_the_text_and_cut_only_after_a_visible_character():
    text = "### Brand\nBrand: A\n\n### Request\n  - indented\nก่อน\n<|im_end|>\n"
    cut = list(pieces(text))
    assert "".join(cut) == text
    # Not after a blank line or before a space or a Thai letter: only between two visible ASCII-led lines.
    assert cut == ["### Brand\n", "Brand: A\n\n### Request\n  - indented\nก่อน\n", "<|im_end|>\n"]
    assert list(pieces("")) == [""]


@pytest.mark.parametrize("which", ["tiny", "qwen-like"])
def test_every_prompt_of_the_repository_data_encodes_as_the_tokenizer_does(which, tiny_tokenizer, qwen_like):
    tokenizer = tiny_tokenizer if which == "tiny" else qwen_like
    prompter = Prompter(tokenizer)
    assert prompter.cuts_lines
    snapshot = BrandStore(REPO / "brands" / "brands.json").load()
    by_name = {b.name: b for b in snapshot.brands}
    records = [json.loads(line) for path in sorted((REPO / "training" / "data").glob("*.jsonl"))
               for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    compared = 0
    for record in records:
        if record.get("brand") not in by_name:
            continue
        composed = compose(record["task"], by_name[record["brand"]], record, snapshot.retriever,
                           prompter.count_tokens, prompter.special_tokens, 384)
        prompt = prompter.render(composed.messages)
        assert prompt == render_prompt(tokenizer, composed.messages)  # the kept frame, filled
        assert prompter.encode(prompt) == _whole(tokenizer, prompt), record
        assert prompter.encode(prompt) == _whole(tokenizer, prompt)  # again, from the kept lines
        compared += 1
    assert compared > 100


@pytest.mark.parametrize("which", ["tiny", "qwen-like"])
def test_random_text_encodes_as_the_tokenizer_does(which, tiny_tokenizer, qwen_like):
    """Lines of Thai, Latin, digits, punctuation, emoji, spaces and control tokens, in any order."""
    tokenizer = tiny_tokenizer if which == "tiny" else qwen_like
    prompter = Prompter(tokenizer)
    parts = ["ก", "่", "ๆ", "เปิดตัว", "a", "Latte", "9", "20%", ".", ")", ":", "#", "-", "(", " ", "  ", "\n",
             "\n\n", "\t", "☕", "🎉", "<|im_start|>", "<|im_end|>", "<", "e\u0301", "Brand: ", "- "]
    rng = random.Random(7)
    for _ in range(3000):
        text = "".join(rng.choice(parts) for _ in range(rng.randint(0, 30)))
        assert prompter.encode(text) == _whole(tokenizer, text), repr(text)


def test_a_tokenizer_that_adds_a_prefix_space_gets_whole_encodes(tiny_tokenizer):
    """ByteLevel with add_prefix_space gives a line alone a space it does not have in the text."""
    tokenizer = _variant(tiny_tokenizer, None, {"type": "ByteLevel", "add_prefix_space": True,
                                                "trim_offsets": True, "use_regex": True})
    prompter = Prompter(tokenizer)
    assert not prompter.cuts_lines
    text = "### Brand\nBrand: CoffeeLab\n- Latte ☕\n<|im_end|>\n"
    assert prompter.encode(text) == _whole(tokenizer, text)


def test_a_template_that_does_more_than_place_the_contents_is_rendered_by_the_template(tiny_tokenizer):
    """A template that trims contents, or tests them, gets no kept frame: every render is its own."""
    prompter = Prompter(tiny_tokenizer)
    messages = [{"role": "system", "content": "  ระบบ  "}, {"role": "user", "content": " ขอแคปชัน\n"}]
    assert prompter.render(messages) == render_prompt(tiny_tokenizer, messages)
    assert prompter._frames[("system", "user")] is not None
    for template in ("{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content | trim }}<|im_end|>\n{% endfor %}",
                     "{% for m in messages %}{{ m.content if m.content | length > 3 else 'short' }}{% endfor %}"):
        tokenizer = _variant(tiny_tokenizer, None, json.loads(tiny_tokenizer.backend_tokenizer.to_str())["pre_tokenizer"])
        tokenizer.chat_template = template
        prompter = Prompter(tokenizer)
        for content in (" ขอแคปชัน\n", "ab"):
            messages = [{"role": "system", "content": "  ระบบ  "}, {"role": "user", "content": content}]
            assert prompter.render(messages) == render_prompt(tokenizer, messages)
        assert prompter._frames[("system", "user")] is None


def test_the_first_request_after_a_start_runs_no_template(tiny_tokenizer, monkeypatch):
    """The template is compiled while the prompter loads (in the loading thread): compiled on the
    first request instead, it held the event loop for 30-60 ms while a burst was waiting."""
    import app.prompter

    prompter = Prompter(tiny_tokenizer)
    messages = build_messages("caption", "CoffeeLab", {"context": "ลดราคา 11.11", "platform": "instagram"}, None)
    expected = render_prompt(tiny_tokenizer, messages)

    def no_template(*args, **kwargs):
        raise AssertionError("the chat template ran on a request")

    monkeypatch.setattr(app.prompter, "render_prompt", no_template)
    assert prompter.render(messages) == expected


def test_a_long_line_is_encoded_exactly_and_not_kept(tiny_tokenizer):
    """Lines are kept up to PIECE_MAX_CHARS: a client's 5,000-character context must not fill memory."""
    from app.prompter import PIECE_MAX_CHARS

    prompter = Prompter(tiny_tokenizer)
    text = "Brand: CoffeeLab\nContext: " + "ลาเต้เย็น " * (PIECE_MAX_CHARS // 5) + "ค่ะ\n### Request\n"
    kept = prompter._kept.cache_info().currsize
    assert prompter.encode(text) == _whole(tiny_tokenizer, text)
    assert prompter._kept.cache_info().currsize == kept + 2  # the two short lines, not the long one
