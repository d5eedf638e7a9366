"""A fake engine for the serving logic: real prompts, no model."""

import threading
import time

from app.engine import GenerationRequest, GenerationResult, ModelInfo, SamplingDefaults


class FakeEngine:
    """Renders with the tiny tokenizer's real template; 'generates' by echoing a brand caption.

    `batches` records every batch the worker handed over, so tests can prove batching.
    """

    def __init__(self, tokenizer, reply="🎮 TechZone เมาส์เกมมิ่งตัวใหม่ ตอบสนองไวทันใจ #TechZone", delay_s=0.0):
        self.tokenizer = tokenizer
        self.reply = reply
        self.delay_s = delay_s
        self.batches: list[list[GenerationRequest]] = []
        self.fail_on: str | None = None  # a prompt substring that makes generation raise
        self.info = ModelInfo(base="fake-base", adapter=None, device="cpu", quantization=None)
        self.defaults = SamplingDefaults(temperature=0.0, top_p=1.0, top_k=0)
        self.special_tokens = tuple(tokenizer.all_special_tokens)
        self.release = threading.Event()
        self.release.set()

    def render(self, messages):
        return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

    def count_tokens(self, text):
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def generate(self, requests, listeners=None):
        """Reports each reply in a few pieces to its listener, like a real streaming row."""
        self.release.wait(timeout=30)
        self.batches.append(list(requests))
        time.sleep(self.delay_s)
        if self.fail_on and any(self.fail_on in r.prompt for r in requests):
            raise RuntimeError("simulated failure")
        results = []
        for row, r in enumerate(requests):
            text = self.reply() if callable(self.reply) else self.reply
            result = GenerationResult(text, self.count_tokens(r.prompt), 7, "stop", r.seed)
            listener = listeners[row] if listeners else None
            if listener is not None:
                for start in range(0, len(text), 8):
                    listener.delta(text[start : start + 8])
                listener.finished(result)
            results.append(result)
        return results
