"""xgrammar behind the ``StructuredOutputBackend`` contract."""
from __future__ import annotations

import re

import xgrammar as xgr

from litevllm.plugin_api import GrammarMatcher, StructuredOutputBackend


def choice_regex(choices) -> str:
    return "(" + "|".join(re.escape(c) for c in choices) + ")"


class XGrammarMatcher(GrammarMatcher):
    def __init__(self, compiled):
        self.m = xgr.GrammarMatcher(compiled)

    def accept_token(self, token: int) -> bool:
        return self.m.accept_token(token)

    def fill_bitmask(self, bitmask, row: int) -> None:
        self.m.fill_next_token_bitmask(bitmask, row)

    def rollback(self, num_tokens: int) -> None:
        self.m.rollback(num_tokens)

    def is_terminated(self) -> bool:
        return self.m.is_terminated()


class XGrammarBackend(StructuredOutputBackend):
    name = "xgrammar"

    def __init__(self, tokenizer, vocab_size: int, stop_token_ids: list[int]):
        super().__init__(tokenizer, vocab_size, stop_token_ids)
        info = xgr.TokenizerInfo.from_huggingface(tokenizer, vocab_size=vocab_size,
                                                  stop_token_ids=stop_token_ids or None)
        self.compiler = xgr.GrammarCompiler(info, max_threads=2)
        self._batch = None  # a BatchGrammarMatcher: threads fill many rows' bitmasks at once

    @staticmethod
    def _grammar(params) -> xgr.Grammar:
        """Parse the constraint (cheap): the ValueError names what is wrong with it."""
        kind, spec = params.kind, params.spec
        try:
            if kind == "json":
                # fixed separators: free whitespace lets a weak model pad forever
                return xgr.Grammar.from_json_schema(spec, any_whitespace=False)
            if kind == "regex":
                return xgr.Grammar.from_regex(spec)
            if kind == "choice":
                return xgr.Grammar.from_regex(choice_regex(spec))
            return xgr.Grammar.from_ebnf(spec)
        except Exception as e:  # noqa: BLE001 - xgrammar raises several types
            what = {"json": "JSON schema", "regex": "regex", "choice": "choice",
                    "grammar": "EBNF grammar"}[kind]
            detail = str(e).strip().splitlines()
            raise ValueError(f"invalid {what} in structured_outputs: "
                             f"{detail[-1] if detail else type(e).__name__}") from None

    def validate(self, params) -> None:
        self._grammar(params)

    def compile(self, params):
        return self.compiler.compile_grammar(self._grammar(params))

    def matcher(self, compiled) -> XGrammarMatcher:
        return XGrammarMatcher(compiled)

    def allocate_bitmask(self, rows: int):
        return xgr.allocate_token_bitmask(rows, self.vocab_size)

    def fill_bitmasks(self, matchers, bitmask, rows) -> None:
        if len(matchers) < 8:  # threads do not pay for a few rows
            return super().fill_bitmasks(matchers, bitmask, rows)
        if self._batch is None:
            self._batch = xgr.BatchGrammarMatcher(max_threads="auto")
        self._batch.batch_fill_next_token_bitmask([m.m for m in matchers], bitmask, rows)
