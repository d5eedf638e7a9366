"""Token ids to text, one token at a time, without ever splitting a character.

A Thai character is three UTF-8 bytes, and byte-level BPE often spreads one over two
tokens; an emoji with its modifiers spans several. Decoding the newest token alone would
emit U+FFFD halves. This is the prefix-window method of vLLM and TGI: decode a short
window ending at the newest token, and commit its new text only once it no longer ends
in U+FFFD. The committed text is the answer: the final text is the deltas joined.
"""

REPLACEMENT = "\ufffd"


class IncrementalDecoder:
    """Feed token ids with `push`; each call returns the text that became safe to show."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.ids: list[int] = []
        self.prefix = 0  # window start: the tokens before it are committed for good
        self.read = 0  # tokens up to here are committed
        self.text = ""  # every committed character
        self.shown = 0  # how much of the visible text has been handed out

    def _decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True)

    def push(self, token_id: int) -> str:
        self.ids.append(token_id)
        before = self._decode(self.ids[self.prefix : self.read])
        after = self._decode(self.ids[self.prefix :])
        if len(after) > len(before) and not after.endswith(REPLACEMENT):
            self.text += after[len(before) :]
            self.prefix, self.read = self.read, len(self.ids)
        return self._release()

    def finish(self) -> str:
        """The rest, once no token will follow: bytes the model left incomplete stay U+FFFD."""
        if self.read < len(self.ids):
            before = self._decode(self.ids[self.prefix : self.read])
            self.text += self._decode(self.ids[self.prefix :])[len(before) :]
            self.prefix = self.read = len(self.ids)
        return self._release()

    @property
    def final_text(self) -> str:
        # Whitespace around the answer is not part of it; `_release` never shows it either.
        return self.text.strip()

    def _release(self) -> str:
        # Leading whitespace is dropped and trailing whitespace waits for what follows it, so
        # the deltas always join to exactly `final_text`.
        visible = self.text.strip()
        delta = visible[self.shown :]
        self.shown = len(visible)
        return delta
