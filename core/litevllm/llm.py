"""The offline API, shaped like vLLM's: ``LLM(model=...).generate(prompts, params)``."""
from __future__ import annotations

import itertools
from typing import Iterator

from litevllm.chat import chat_prompt_ids
from litevllm.config import engine_config
from litevllm.engine.engine import LLMEngine
from litevllm.outputs import CompletionOutput, RequestOutput
from litevllm.sampling_params import SamplingParams


class LLM:
    def __init__(self, model: str, **options):
        """``options``: the engine options of ``litevllm.config`` (``option_fields``), e.g.
        dtype, max_model_len, block_size, max_num_seqs, speculative_config."""
        self.config = engine_config(model, **options)
        self.engine = LLMEngine(self.config)
        self._ids = itertools.count()

    @property
    def tokenizer(self):
        return self.engine.tokenizer

    @property
    def hf_config(self):
        """The checkpoint's transformers config (vocab_size, quantization_config, ...)."""
        return self.engine.hf_config

    def _submit(self, prompts, sampling_params, return_errors: bool = False
                ) -> tuple[list[str], dict[str, RequestOutput]]:
        """Queue every prompt. An invalid one raises ValueError naming its index (nothing runs);
        with ``return_errors`` it becomes an output with ``finish_reason="error"`` instead."""
        if isinstance(prompts, (str, dict)):
            prompts = [prompts]
        prompts = list(prompts)
        if sampling_params is None:
            sampling_params = SamplingParams()
        if isinstance(sampling_params, SamplingParams):
            sampling_params = [sampling_params] * len(prompts)
        if len(sampling_params) != len(prompts):
            raise ValueError(f"got {len(sampling_params)} SamplingParams for {len(prompts)} prompts")
        ids, failed = [], {}
        for i, (prompt, params) in enumerate(zip(prompts, sampling_params)):
            rid = str(next(self._ids))
            ids.append(rid)
            try:
                self.engine.add_request(rid, prompt, params)
            except ValueError as e:
                if not return_errors:
                    for queued in ids[:-1]:
                        if queued not in failed:
                            self.engine.abort_request(queued)
                    raise ValueError(f"prompt {i}: {e}") from None
                failed[rid] = _error_output(rid, prompt, str(e))
        return ids, failed

    def generate(self, prompts, sampling_params=None, *, stream: bool = False,
                 use_tqdm: bool = False, return_errors: bool = False):
        """Outputs in input order; with ``stream=True`` an iterator of incremental outputs.

        An invalid prompt raises ValueError ("prompt 3: prompt is empty") before any request
        runs. ``return_errors=True`` (batch jobs) runs the valid ones instead and gives each
        invalid one an output with ``finish_reason="error"`` and the cause in ``.error``."""
        ids, failed = self._submit(prompts, sampling_params, return_errors)
        if stream:
            return self._stream(ids, failed)
        done = dict(failed)
        bar = _progress(len(ids)) if use_tqdm else None
        try:
            while self.engine.has_unfinished_requests():
                for out in self.engine.step(unfinished_outputs=False):
                    if out.finished:
                        done[out.request_id] = out
                        if bar:
                            bar.update(1)
        except BaseException:
            for rid in ids:
                if rid in self.engine.requests:
                    self.engine.abort_request(rid)
            raise
        finally:
            if bar:
                bar.close()
        return [done[rid] for rid in ids]

    def _stream(self, ids, failed) -> Iterator[RequestOutput]:
        yield from failed.values()
        try:
            while self.engine.has_unfinished_requests():
                yield from self.engine.step()
        finally:
            for rid in ids:
                if rid in self.engine.requests:
                    self.engine.abort_request(rid)

    def chat(self, messages, sampling_params=None, *, chat_template: str | None = None,
             stream: bool = False, **kwargs):
        """Apply the chat template (``add_generation_prompt``) to one conversation or a list.
        Without ``sampling_params`` a reply runs until the model ends it (or the context is
        full), unlike ``generate``'s 16-token default, which would cut replies short."""
        conversations = [messages] if messages and isinstance(messages[0], dict) else list(messages)
        prompts = []
        for i, c in enumerate(conversations):
            try:
                prompts.append({"prompt_token_ids": self.apply_chat_template(c, chat_template)})
            except ValueError as e:
                raise ValueError(f"conversation {i}: {e}" if len(conversations) > 1 else str(e)) from None
        if sampling_params is None:
            sampling_params = SamplingParams(max_tokens=None)
        return self.generate(prompts, sampling_params, stream=stream, **kwargs)

    def apply_chat_template(self, conversation: list[dict], chat_template: str | None = None) -> list[int]:
        return chat_prompt_ids(self.tokenizer, conversation, chat_template)


def _error_output(rid: str, prompt, error: str) -> RequestOutput:
    text = prompt if isinstance(prompt, str) else None
    ids = list(prompt.get("prompt_token_ids", [])) if isinstance(prompt, dict) else []
    return RequestOutput(rid, text, ids, [CompletionOutput(0, "", [], "error")], True, error=error)


def _progress(total: int):
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm(total=total, desc="requests", unit="req")
