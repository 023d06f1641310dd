"""Batched sampling: penalties, temperature, top-k / top-p / min-p, seeded noise, logprobs.

One pass over the batch's [B, V] logits. Randomness comes from a counter-based hash of
(sequence seed, output position, token id), so a seeded request samples the same tokens
whatever else shares its batch.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from itertools import repeat
from operator import attrgetter, is_

import torch

from litevllm.engine.host_tensors import HostCopy, to_device
from litevllm.engine.sequence import Sequence
from litevllm.ops import torch_ops
from litevllm.ops.torch_ops import filter_logits, uniform_noise

_params = attrgetter("params")


@dataclass
class SampleResult:
    token_ids: list[int]
    logprobs: list[dict[int, float] | None]   # per row: {token: logprob}, sampled token first


@dataclass
class LaunchedSample:
    """A sampling launched on the device: ``tokens`` [B] stay there (the next step's inputs;
    a multi-step run's last ones); ``result()`` waits for the copy to the host only."""
    tokens: torch.Tensor
    want_logprobs: list[int | None] | None      # per row, or None: no row wants logprobs
    host: HostCopy

    def result(self) -> SampleResult:
        token_ids, *tables = [t.tolist() for t in self.host.get()]
        want = self.want_logprobs
        if want is None:
            return SampleResult(token_ids, [None] * len(token_ids))
        chosen, (top_vals, top_ids) = tables[0], tables[1:] if len(tables) > 1 else (None, None)
        out = []
        for i, n in enumerate(want):
            if n is None:
                out.append(None)
                continue
            entry = {token_ids[i]: chosen[i]}
            for j in range(n):
                entry.setdefault(top_ids[i][j], top_vals[i][j])
            out.append(entry)
        return SampleResult(token_ids, out)


def _padded(rows: list[list[int]], pad: int, device) -> torch.Tensor:
    width = max(1, max(len(r) for r in rows))
    out = torch.full((len(rows), width), pad, dtype=torch.int64)
    for i, r in enumerate(rows):
        if r:
            out[i, :len(r)] = torch.tensor(r, dtype=torch.int64)
    return to_device(out, device)


def apply_penalties(logits: torch.Tensor, seqs: list[Sequence]) -> torch.Tensor:
    """Repetition (HF-style, over prompt and output), presence and frequency (over output)."""
    b, v = logits.shape
    dev = logits.device
    rep, pres, freq = to_device(torch.tensor([[s.params.repetition_penalty for s in seqs],
                                              [s.params.presence_penalty for s in seqs],
                                              [s.params.frequency_penalty for s in seqs]]), dev)
    out_tokens = _padded([s.output_token_ids for s in seqs], v, dev)
    counts = torch.zeros(b, v + 1, device=dev).scatter_add_(
        1, out_tokens, torch.ones_like(out_tokens, dtype=torch.float32))[:, :v]
    if bool((rep != 1).any()):
        seen = counts > 0
        prompt_tokens = _padded([s.token_ids[:s.num_prompt_tokens] for s in seqs], v, dev)
        seen |= torch.zeros(b, v + 1, dtype=torch.bool, device=dev).scatter_(
            1, prompt_tokens, True)[:, :v]
        r = rep[:, None].expand_as(logits)
        logits = torch.where(seen, torch.where(logits > 0, logits / r, logits * r), logits)
    logits = logits - freq[:, None] * counts - pres[:, None] * (counts > 0).float()
    return logits


def _ban_stop_tokens(logits: torch.Tensor, seqs: list[Sequence], eos_ids: list[int]) -> torch.Tensor:
    """Before ``min_tokens`` outputs, EOS and stop tokens cannot be sampled."""
    rows, cols = [], []
    for i, s in enumerate(seqs):
        if s.num_output_tokens < s.params.min_tokens:
            banned = set(s.params.stop_token_ids) | (set() if s.params.ignore_eos else set(eos_ids))
            rows += [i] * len(banned)
            cols += list(banned)
    if rows:
        index = to_device(torch.tensor([rows, cols]), logits.device)
        logits = logits.index_put((index[0], index[1]),
                                  logits.new_full((), float("-inf")))
    return logits


def fused_sampling_enabled() -> bool:
    """``LITEVLLM_FUSED_SAMPLING=0`` keeps random rows on the torch reference op."""
    return os.environ.get("LITEVLLM_FUSED_SAMPLING", "1") != "0"


class Sampler:
    def __init__(self, eos_token_ids: list[int], ops=None):
        """``ops``: the model's op registry; random rows sample through its ``sample`` op (a
        fused kernel where a plugin provides one), else the reference."""
        self.eos_token_ids = eos_token_ids
        self.sample = ops.sample if ops is not None and fused_sampling_enabled() \
            else torch_ops.sample

    def __call__(self, logits: torch.Tensor, seqs: list[Sequence]) -> SampleResult:
        return self.launch(logits, seqs).result()

    def launch(self, logits: torch.Tensor, seqs: list[Sequence]) -> LaunchedSample:
        """Sample on the device without waiting for it: the tokens (and logprob tables) stay
        there, copied to the host in the background; ``result()`` reads them."""
        params = list(map(_params, seqs))
        # one SamplingParams object for the whole batch (LLM.generate's case): flags once
        distinct = params[:1] if params and all(map(is_, params, repeat(params[0]))) else params
        wants, penalties, min_tokens, greedy = False, False, False, True
        for p in distinct:  # one pass for every flag
            wants = wants or p.logprobs is not None
            penalties = penalties or p.repetition_penalty != 1 or bool(p.presence_penalty
                                                                        or p.frequency_penalty)
            min_tokens = min_tokens or p.min_tokens > 0
            greedy = greedy and p.greedy
        want_logprobs = [p.logprobs for p in params] if wants else None
        raw_logprobs = logits.log_softmax(-1) if wants else None
        if penalties:
            logits = apply_penalties(logits, seqs)
        if min_tokens:
            logits = _ban_stop_tokens(logits, seqs, self.eos_token_ids)
        sampled = self.picker(seqs, greedy)(logits, 0)
        tables = ()
        if wants:
            k = max(k or 0 for k in want_logprobs)
            chosen = raw_logprobs.gather(1, sampled[:, None]).squeeze(1)
            tables = (chosen, *raw_logprobs.topk(k, dim=-1)) if k else (chosen,)
        return LaunchedSample(sampled, want_logprobs, HostCopy(sampled, *tables))

    def picker(self, seqs: list[Sequence], greedy: bool | None = None):
        """``pick(logits, j)``: greedy or seeded random choice per row on the device, for step
        ``j`` of a run over the same rows (row ``i``'s noise stream position is its output count
        plus ``j``). The rows' parameters cross to the device once per run, from pinned memory
        on CUDA, so no call waits for the device. ``greedy``: whether every row is greedy, if
        the caller knows. Random rows take the ``sample`` op (one fused kernel where a plugin
        provides one); on the torch reference, temperature-only rows skip the filters' sort."""
        if greedy is None:
            greedy = all(s.params.greedy for s in seqs)
        if greedy:
            return lambda logits, j: logits.argmax(-1)
        params = [s.params for s in seqs]
        floats = torch.tensor([[p.temperature or 1.0 for p in params], [p.top_p for p in params],
                               [p.min_p for p in params]])
        ints = torch.tensor([[p.greedy for p in params], [p.top_k for p in params],
                             [s.seed for s in seqs], [s.num_output_tokens for s in seqs]],
                            dtype=torch.int64)
        nucleus = any(p.top_p < 1 or p.min_p > 0 for p in params)
        min_top_k = min((p.top_k for p in params if p.top_k > 0), default=None)
        sample, on_device = self.sample, {}
        fused = sample is not torch_ops.sample

        def pick(logits: torch.Tensor, j: int) -> torch.Tensor:
            dev, v = logits.device, logits.shape[-1]
            if dev not in on_device:
                pin = dev.type == "cuda"
                f, i = [(t.pin_memory() if pin else t).to(dev, non_blocking=True)
                        for t in (floats, ints)]
                on_device[dev] = (*f, i[0].bool(), *i[1:])
            temp, top_p, min_p, is_greedy, top_k, seeds, steps = on_device[dev]
            if fused or nucleus or (min_top_k is not None and min_top_k < v):
                return sample(logits, temp, top_k, top_p, min_p, is_greedy, seeds, steps + j)
            # Gumbel-max: argmax(x - log E), E ~ Exp(1), samples softmax(x), as argmax p/E does
            drawn = torch_ops.gumbel_max(logits / temp[:, None], seeds, steps + j)
            return torch.where(is_greedy, logits.argmax(-1), drawn)
        return pick

    @staticmethod
    def verify(logits: torch.Tensor, seqs: list[Sequence], drafts: list[list[int]]) -> list[list[int]]:
        """Speculative verification: ``logits`` holds 1 + len(draft) rows per sequence (the
        predictions after its last token and after each draft token). Returns each sequence's
        new tokens: the accepted draft prefix plus one token from the target model.

        Greedy rows accept a draft token that is the argmax. Random rows use rejection sampling
        with a deterministic (n-gram) proposer: a draft token x is accepted with probability
        p(x); on rejection the token is drawn from p with x removed, renormalised; after all
        drafts the bonus token is drawn from p. This samples exactly from p."""
        dev, v = logits.device, logits.shape[-1]
        counts = [len(d) + 1 for d in drafts]
        row_seqs = [s for s, c in zip(seqs, counts) for _ in range(c)]
        offsets = [j for c in counts for j in range(c)]
        draft_col = torch.tensor([t for d in drafts for t in d + [0]], device=dev)
        greedy_rows = all(s.params.greedy for s in seqs)
        if greedy_rows:
            target = logits.argmax(-1)
            accept = target == draft_col
            residual = target
        else:
            temp = torch.tensor([s.params.temperature or 1.0 for s in row_seqs], device=dev)
            scaled = logits / temp[:, None]
            if any(0 < s.params.top_k < v or s.params.top_p < 1 or s.params.min_p > 0 for s in seqs):
                top_k = torch.tensor([s.params.top_k if 0 < s.params.top_k < v else v for s in row_seqs],
                                     device=dev)
                scaled = filter_logits(scaled, top_k,
                                       torch.tensor([s.params.top_p for s in row_seqs], device=dev),
                                       torch.tensor([s.params.min_p for s in row_seqs], device=dev))
            probs = scaled.softmax(-1)
            seeds = torch.tensor([s.seed for s in row_seqs], dtype=torch.int64, device=dev)
            steps = torch.tensor([s.num_output_tokens + j for s, j in zip(row_seqs, offsets)],
                                 dtype=torch.int64, device=dev)
            noise = -torch.log(uniform_noise(seeds, steps, v))
            target = (probs / noise).argmax(-1)                     # a plain sample from p
            u = uniform_noise(seeds ^ 0x5DEECE66D, steps, 1)[:, 0]
            accept = u < probs.gather(1, draft_col[:, None]).squeeze(1)
            residual = (probs.scatter(1, draft_col[:, None], 0.0) / noise).argmax(-1)
            greedy = torch.tensor([s.params.greedy for s in row_seqs], device=dev)
            argmax = logits.argmax(-1)
            accept = torch.where(greedy, argmax == draft_col, accept)
            residual = torch.where(greedy, argmax, residual)
            target = torch.where(greedy, argmax, target)
        accept, residual, target = accept.tolist(), residual.tolist(), target.tolist()
        out, row = [], 0
        for d in drafts:
            tokens = []
            for j, t in enumerate(d):
                if not accept[row + j]:
                    tokens.append(residual[row + j])
                    break
                tokens.append(t)
            else:
                tokens.append(target[row + len(d)])
            out.append(tokens)
            row += len(d) + 1
        return out

def prompt_logprobs(logits: torch.Tensor, next_tokens: list[int], k: int) -> list[dict]:
    """Logprob of each next prompt token (plus the top k) from the rows' logits."""
    raw = logits.log_softmax(-1)
    index = torch.tensor(next_tokens, dtype=torch.int64, device=raw.device)[:, None]
    chosen = raw.gather(1, index).squeeze(1).tolist()
    top_vals, top_ids = raw.topk(k, dim=-1) if k else (None, None)
    top_vals = top_vals.tolist() if k else None
    top_ids = top_ids.tolist() if k else None
    out = []
    for i, tok in enumerate(next_tokens):
        entry = {tok: chosen[i]}
        for j in range(k):
            entry.setdefault(top_ids[i][j], top_vals[i][j])
        out.append(entry)
    return out
