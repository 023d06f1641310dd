"""Incremental detokenization and stop-string handling.

Text is decoded from a sliding window of tokens so multi-byte characters split across tokens
(byte-fallback tokenizers) only appear once complete. Streamed pieces hold back as many
characters as the longest stop string could still need, so they always concatenate to the
final text.
"""
from __future__ import annotations

import sys


def rust_decode(tokenizer):
    """``tokenizer.decode(ids, skip_special_tokens=s, clean_up_tokenization_spaces=False)``
    without transformers' Python wrapper around it (~5 us a call, two calls a token): the Rust
    decode of a fast tokenizer whose class keeps the base ``decode``/``_decode`` and that gives
    the same text on a sample of ids; None for any other tokenizer."""
    transformers = sys.modules.get("transformers")
    base = getattr(transformers, "PreTrainedTokenizerFast", None) if transformers else None
    cls = type(tokenizer)
    if base is None or not isinstance(tokenizer, base) or cls.decode is not base.decode \
            or cls._decode is not base._decode:
        return None
    fast = tokenizer.backend_tokenizer.decode
    sample = list(range(min(len(tokenizer), 64)))
    try:
        for skip in (False, True):
            if fast(sample, skip_special_tokens=skip) != tokenizer.decode(
                    sample, skip_special_tokens=skip, clean_up_tokenization_spaces=False):
                return None
    except Exception:  # noqa: BLE001 - the wrapper's decode stays in use
        return None
    return fast


class DetokState:
    def __init__(self, prompt_len: int):
        self.prefix_offset = max(prompt_len - 6, 0)
        self.read_offset = prompt_len
        self.text = ""       # full decoded output text
        self.emitted = 0     # characters already streamed


class Detokenizer:
    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.fast = rust_decode(tokenizer)

    def _decode(self, ids, skip_special):
        if self.fast is not None:
            return self.fast(ids, skip_special_tokens=skip_special)
        return self.tokenizer.decode(ids, skip_special_tokens=skip_special,
                                     clean_up_tokenization_spaces=False)

    def step(self, state: DetokState, token_ids: list[int], skip_special: bool = True,
             final: bool = False) -> str:
        """Decode newly appended tokens; returns the new text (possibly empty). An incomplete
        character (U+FFFD) is held back, unless ``final`` (the sequence ended): then it is
        added as a whole decode would give it."""
        if final and state.read_offset >= len(token_ids):
            return ""  # nothing held back
        prefix = self._decode(token_ids[state.prefix_offset:state.read_offset], skip_special)
        full = self._decode(token_ids[state.prefix_offset:], skip_special)
        if len(full) > len(prefix) and (final or not full.endswith("\ufffd")):
            new = full[len(prefix):]
            state.prefix_offset, state.read_offset = state.read_offset, len(token_ids)
            state.text += new
            return new
        return ""


def find_stop(text: str, new_len: int, stops: list[str]) -> tuple[int, str] | None:
    """Earliest stop string overlapping the last ``new_len`` characters: (index, stop)."""
    best = None
    for stop in stops:
        start = max(0, len(text) - new_len - len(stop) + 1)
        i = text.find(stop, start)
        if i != -1 and (best is None or i < best[0]):
            best = (i, stop)
    return best


def stream_delta(state: DetokState, stops: list[str], finished: bool) -> str:
    """Text to stream now: everything settled, minus a possible stop-string prefix at the end."""
    hold = 0 if finished else max((len(s) - 1 for s in stops), default=0)
    end = max(state.emitted, len(state.text) - hold)
    delta = state.text[state.emitted:end]
    state.emitted = end
    return delta
