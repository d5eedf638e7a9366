"""Per-request sampling inside one batched `generate` call.

transformers applies one temperature / top-p / seed to a whole batch. To batch requests
that asked for different settings, and to make `seed` reproducible whatever else shares
the batch, each row samples from its own torch.Generator here and the chosen token is
handed to greedy search as the only finite logit.
"""

import torch
from transformers import LogitsProcessor, StoppingCriteria


class PerRowSampler(LogitsProcessor):
    def __init__(self, settings: list[tuple[float, float, int]], seeds: list[int], device: str):
        self.settings = settings
        self.generators = []
        for seed in seeds:
            gen = torch.Generator(device=device)
            gen.manual_seed(seed)
            self.generators.append(gen)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        scores = scores.float()
        for row, (temperature, top_p, top_k) in enumerate(self.settings):
            if temperature <= 0:
                continue  # greedy row: argmax of the raw scores
            logits = scores[row] / temperature
            if 0 < top_k < logits.shape[-1]:
                kth = torch.topk(logits, top_k).values[-1]
                logits = logits.masked_fill(logits < kth, float("-inf"))
            if 0 < top_p < 1:
                sorted_logits, order = torch.sort(logits, descending=True)
                cumulative = sorted_logits.softmax(-1).cumsum(-1)
                remove = cumulative - sorted_logits.softmax(-1) >= top_p  # keep the token that crosses top_p
                logits[order[remove]] = float("-inf")
            token = torch.multinomial(logits.softmax(-1), 1, generator=self.generators[row])
            scores[row] = float("-inf")
            scores[row, token] = 0.0
        return scores


class PerRowLimit(StoppingCriteria):
    """Stops each row at its own max_new_tokens; the batch runs until the longest is done."""

    def __init__(self, prompt_len: int, limits: list[int]):
        self.prompt_len = prompt_len
        self.limits = torch.tensor(limits)

    def __call__(self, input_ids: torch.LongTensor, scores, **kwargs) -> torch.BoolTensor:
        generated = input_ids.shape[1] - self.prompt_len
        return (self.limits.to(input_ids.device) <= generated)
