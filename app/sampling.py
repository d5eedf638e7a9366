"""Per-request sampling and per-request streaming inside one batched `generate` call.

transformers applies one temperature / top-p / seed to a whole batch. To batch requests
that asked for different settings, and to make `seed` reproducible whatever else shares
the batch, each row samples from its own torch.Generator here and the chosen token is
handed to greedy search as the only finite logit.
"""

import torch
from transformers import LogitsProcessor, StoppingCriteria


# Below these floors a setting cannot be told apart from its limit in float32 (1/1e-40
# overflows, a top-p of 1e-50 keeps nothing), so it means the limit: greedy, or the top token.
TEMPERATURE_FLOOR = 1e-4
TOP_P_FLOOR = 1e-6


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
            if temperature < TEMPERATURE_FLOOR or top_p < TOP_P_FLOOR or top_k == 1:
                continue  # greedy row: argmax of the raw scores
            logits = scores[row] / temperature
            if 0 < top_k < logits.shape[-1]:
                kth = torch.topk(logits, top_k).values[-1]
                logits = logits.masked_fill(logits < kth, float("-inf"))
            if top_p < 1:
                sorted_logits, order = torch.sort(logits, descending=True)
                cumulative = sorted_logits.softmax(-1).cumsum(-1)
                remove = cumulative - sorted_logits.softmax(-1) >= top_p  # keep the token that crosses top_p
                logits[order[remove]] = float("-inf")
            probs = logits.softmax(-1)
            if not torch.isfinite(probs).all():  # never sample from NaN: the row takes its best token
                continue
            token = torch.multinomial(probs, 1, generator=self.generators[row])
            scores[row] = float("-inf")
            scores[row, token] = 0.0
        return scores


class RowTracker(StoppingCriteria):
    """Follows each row of a batched `generate` step by step.

    Called after every new token, it decodes each live row incrementally, hands the new
    text to the row's listener, and ends the row at its own stop token, its own
    max_new_tokens, or when its client has gone. A finished row's listener gets its
    result at once, not when the longest row of the batch is done.
    """

    def __init__(self, tokenizer, limits: list[int], stop_ids, listeners, make_result):
        from app.detokenize import IncrementalDecoder

        self.limits = limits
        self.stop_ids = set(stop_ids)
        self.listeners = listeners
        self.make_result = make_result  # (row, decoder, finish_reason) -> GenerationResult
        self.decoders = [IncrementalDecoder(tokenizer) for _ in limits]
        self.results: list = [None] * len(limits)

    def _finish(self, row: int, reason: str) -> None:
        tail = self.decoders[row].finish()
        result = self.results[row] = self.make_result(row, self.decoders[row], reason)
        listener = self.listeners[row]
        if listener is not None:
            if tail:
                listener.delta(tail)
            listener.finished(result)

    def __call__(self, input_ids: torch.LongTensor, scores, **kwargs) -> torch.BoolTensor:
        newest = input_ids[:, -1].tolist()  # one device sync per step; generate makes one anyway
        for row, token in enumerate(newest):
            if self.results[row] is not None:
                continue
            listener = self.listeners[row]
            if listener is not None and listener.cancelled:
                self._finish(row, "cancelled")
                continue
            if token in self.stop_ids:
                self._finish(row, "stop")
                continue
            delta = self.decoders[row].push(token)
            if delta and listener is not None:
                listener.delta(delta)
            if len(self.decoders[row].ids) >= self.limits[row]:
                self._finish(row, "length")
        return torch.tensor([r is not None for r in self.results], device=input_ids.device)
