"""Conformance helpers for plugin authors, usable from any plugin's pytest suite.

``check_architecture`` builds a tiny random Hugging Face checkpoint and compares LitevLLM with
transformers on it; ``check_plugin`` checks that an installed plugin loads and registers valid
objects. Both return a :class:`Report` (named checks, each pass / fail / skip with a one-line
reason); ``assert_architecture`` and ``assert_plugin`` raise ``AssertionError`` on a failure::

    from litevllm.testing import assert_architecture, assert_plugin, tiny_config

    def test_conformance(tmp_path):
        assert_plugin("myarch")
        assert_architecture("MyArchForCausalLM", tiny_config("MyArchForCausalLM"), tmp_path)

This module is part of the public plugin API (see ``litevllm.plugin_api``).
"""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import warnings
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

from litevllm.testing.logits import LogitsRecord, observe_logits

__all__ = ["Check", "Report", "SkippedCheckWarning", "TINY_SIZES", "model_type_for",
           "tiny_config", "conformance_configs", "build_checkpoint", "check_architecture",
           "assert_architecture", "check_plugin", "assert_plugin", "model_class", "model_context",
           "expected_tensors", "HF_ACTIVATIONS", "hf_rms_norm", "hf_act_and_mul",
           "norm_test_inputs", "assert_rms_norm_matches_hf",
           "logprob_rows", "observe_logits", "LogitsRecord"]

PASS, FAIL, SKIP = "PASS", "FAIL", "SKIP"

# Sizes used when deriving a tiny config from transformers (only keys the config class has).
TINY_SIZES = dict(vocab_size=128, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, head_dim=16,
                  max_position_embeddings=128, num_experts=4, num_local_experts=4,
                  num_experts_per_tok=2, moe_intermediate_size=32,
                  shared_expert_intermediate_size=64)  # 2 experts wide: unquantized schemes fold it
_SPECIAL = {"bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0}


# -- results ---------------------------------------------------------------------------------
@dataclass
class Check:
    name: str
    status: str          # PASS | FAIL | SKIP
    reason: str = ""     # one line


@dataclass
class Report:
    """The checks run for one subject (a plugin, or an architecture on one config)."""
    subject: str
    checks: list[Check] = field(default_factory=list)

    def add(self, name: str, status: str, reason: str = "") -> Check:
        check = Check(name, status, _one_line(reason))
        self.checks.append(check)
        return check

    @property
    def ok(self) -> bool:
        return not self.failures

    @property
    def failures(self) -> list[Check]:
        return [c for c in self.checks if c.status == FAIL]

    @property
    def skipped(self) -> list[Check]:
        return [c for c in self.checks if c.status == SKIP]

    def get(self, name: str) -> Check | None:
        return next((c for c in self.checks if c.name == name), None)

    def failure_lines(self) -> list[str]:
        return [f"FAIL {self.subject}: {c.name}: {c.reason}" for c in self.failures]

    def skip_lines(self) -> list[str]:
        return [f"SKIP {self.subject}: {c.name}: {c.reason}" for c in self.skipped]

    def table(self) -> str:
        width = max([len(c.name) for c in self.checks] + [5])
        rows = [f"  {c.status}  {c.name:<{width}}  {c.reason}".rstrip() for c in self.checks]
        return "\n".join([self.subject, *rows])

    def assert_ok(self) -> "Report":
        """Raise on any failure; warn (visible in pytest's summary) for each skipped check."""
        if not self.ok:
            raise AssertionError("\n".join(self.failure_lines()) + "\n\n" + self.table())
        for line in self.skip_lines():
            warnings.warn(line, SkippedCheckWarning, stacklevel=2)
        return self


class SkippedCheckWarning(UserWarning):
    """A conformance check that did not run (its reason says why)."""


def _one_line(text) -> str:
    lines = str(text).strip().splitlines()
    return lines[0] if lines else ""


def _error(e: BaseException) -> str:
    return f"{type(e).__name__}: {_one_line(e)}"


# -- tiny configs ----------------------------------------------------------------------------
def model_type_for(arch: str) -> str | None:
    """The transformers ``model_type`` whose causal-LM class is named ``arch``."""
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES
    types = [t for t, name in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.items() if name == arch]
    # several model types may share a class (exaone -> LlamaForCausalLM): prefer LlamaConfig
    config_name = arch.replace("ForCausalLM", "Config")
    return next((t for t in types if CONFIG_MAPPING_NAMES.get(t) == config_name),
                types[0] if types else None)


def tiny_config(arch: str, model_type: str | None = None, **overrides):
    """A tiny transformers config for ``arch``: its config class with :data:`TINY_SIZES` (only
    the keys that class has), special token ids moved into the vocabulary, then ``overrides``.
    ``model_type`` is needed when ``arch`` is not a transformers class name."""
    from transformers import AutoConfig
    model_type = model_type or model_type_for(arch)
    if model_type is None:
        raise LookupError(f"transformers has no causal-LM class named '{arch}': set "
                          f"tiny_test_config = {{'model_type': ...}} on the model class "
                          f"(or pass model_type=)")
    default = AutoConfig.for_model(model_type)
    sizes = {k: v for k, v in TINY_SIZES.items() if hasattr(default, k)}
    for key, tiny in _SPECIAL.items():
        value = getattr(default, key, None)
        if value is not None:
            sizes[key] = tiny if isinstance(value, int) else [tiny]
    return AutoConfig.for_model(model_type, **{**sizes, **overrides})


def conformance_configs(arch: str, model_cls=None) -> list:
    """Tiny configs to check ``arch`` with: ``model_cls.tiny_test_config`` (a dict of config
    overrides, optionally with ``model_type``, or a list of such dicts) applied to
    :func:`tiny_config`; without it, :func:`tiny_config` alone."""
    variants = getattr(model_cls, "tiny_test_config", None) or {}
    variants = [variants] if isinstance(variants, dict) else list(variants)
    return [tiny_config(arch, **dict(v)) for v in variants]


def _as_config(hf_config):
    from transformers import AutoConfig
    if isinstance(hf_config, dict):
        hf_config = dict(hf_config)
        return AutoConfig.for_model(hf_config.pop("model_type"), **hf_config)
    return hf_config


# -- the tiny checkpoint ---------------------------------------------------------------------
def build_checkpoint(arch: str, hf_config, path, seed: int = 0):
    """Save a random transformers model for ``hf_config`` at ``path`` with ``architectures =
    [arch]``; return the (float32, eager-attention) transformers model as the reference.

    Weights are redrawn so that every tensor differs (norm weights included) and logits are
    well separated: matrices ~ N(0, 1/fan_in), 1-D tensors = init + N(0, 0.1)."""
    import torch
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging
    cfg = _as_config(hf_config)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(cfg, attn_implementation="eager").float().eval()
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            noise = torch.randn(p.shape, generator=gen)
            p.copy_(p + 0.1 * noise if p.dim() == 1 else noise / p.shape[-1] ** 0.5)
    path = Path(path)
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        model.save_pretrained(path)
    finally:
        if bars:
            hf_logging.enable_progress_bar()
    config = json.loads((path / "config.json").read_text())
    config["architectures"] = [arch]
    (path / "config.json").write_text(json.dumps(config, indent=2))
    return model


def _prompts(vocab: int, seed: int) -> list[list[int]]:
    """One-token, short, and two prompts sharing a 19-token prefix (over two 8-token blocks)."""
    import torch
    gen = torch.Generator().manual_seed(seed + 1)

    def rand(n):
        return torch.randint(0, vocab, (n,), generator=gen).tolist()
    shared = rand(19)
    return [rand(1), rand(11), shared + rand(4), shared + rand(8)]


# -- running LitevLLM ------------------------------------------------------------------------
class _Run:
    """An engine on the checkpoint that records the logits the sampler sees at each step."""

    def __init__(self, path, max_model_len, **kwargs):
        from litevllm import LLM
        opts = dict(dtype="float32", device="cpu", kernels="torch", max_model_len=max_model_len,
                    block_size=8, max_num_seqs=8, enforce_eager=True, enable_prefix_caching=False,
                    cpu_kv_cache_gib=0.25, seed=0)
        self.llm = LLM(str(path), **{**opts, **kwargs})
        self.seen = LogitsRecord()
        self.llm.engine.add_logits_observer(self.seen)

    def generate(self, prompts, max_tokens):
        from litevllm import SamplingParams
        params = SamplingParams(temperature=0, max_tokens=max_tokens, ignore_eos=True)
        return self.llm.generate([{"prompt_token_ids": p} for p in prompts], params)

    def one_at_a_time(self, prompts, max_tokens):
        """Tokens and per-position logits [max_tokens, V] of each prompt run alone."""
        tokens, logits = [], []
        for p in prompts:
            self.seen.clear()
            tokens.append(self.generate([p], max_tokens)[0].outputs[0].token_ids)
            logits.append(self.seen.rows())
        return tokens, logits


def _hf_logits(hf, prompt, tokens):
    """HF logits predicting each of ``tokens`` given ``prompt`` + the tokens before it."""
    import torch
    with torch.no_grad():
        ids = torch.tensor([prompt + tokens[:-1]])
        return hf(ids).logits[0, len(prompt) - 1:].float()


def _teacher_forced(tokens, ref, tol) -> str | None:
    """Why ``tokens`` are not HF's greedy choice at each position (near-ties allowed)."""
    for i, tok in enumerate(tokens):
        best = int(ref[i].argmax())
        gap = float(ref[i, best] - ref[i, tok])
        if tok != best and gap > tol:
            return f"position {i}: generated token {tok}, HF argmax {best} (logit gap {gap:.3g})"
    return None


def _logits_close(ours, ref, atol, rtol) -> str | None:
    if ours is None or ours.shape != ref.shape:
        got = None if ours is None else tuple(ours.shape)
        return f"logits shape {got}, HF {tuple(ref.shape)}"
    diff = (ours - ref).abs()
    bad = diff > atol + rtol * ref.abs()
    if bool(bad.any()):
        pos = int(bad.any(-1).nonzero()[0])
        return f"position {pos}: max |logit - HF| {float(diff[pos].max()):.3g} > atol {atol:g}"
    return None


def _same_tokens(got, want, want_logits, tol) -> str | None:
    """Why ``got`` differs from ``want`` (greedy runs of one prompt); a near-tie in the
    reference logits where they first differ is accepted."""
    for i, (a, b) in enumerate(zip(got, want)):
        if a != b:
            row = want_logits[i]
            if float(row[b] - row[a]) <= tol:
                return None  # a tie: later tokens may legitimately differ
            return f"position {i}: token {a}, one-at-a-time run gave {b}"
    if len(got) != len(want):
        return f"{len(got)} tokens, one-at-a-time run gave {len(want)}"
    return None


def _compare(report, name, results, ok_reason) -> None:
    """Add one check from ``(prompt index, failure reason or None)`` pairs."""
    failed = [(i, why) for i, why in results if why]
    if failed:
        i, why = failed[0]
        report.add(name, FAIL, f"prompt {i}: {why}")
    else:
        report.add(name, PASS, ok_reason)


# Environment that lets a kernel provider run on the CPU in a fresh process (read at import)
_CPU_ENV = {"triton": {"TRITON_INTERPRET": "1"}}


def _kernels_plan(name: str) -> tuple[str | None, str]:
    """Where ``kernels=name`` can run: ``"cuda"``, ``"cpu"`` (in this process), ``"subprocess"``
    (on the CPU in a fresh process with :data:`_CPU_ENV`), or None and why not."""
    import torch

    from litevllm.ops import Ops, kernel_providers
    from litevllm.plugins import PluginError, get_plugin_manager
    manager = get_plugin_manager()
    if name == "triton" and importlib.util.find_spec("triton") is None:
        return None, "triton is not installed"
    if name not in kernel_providers(manager):
        return None, f"no '{name}' kernel provider installed"
    if torch.cuda.is_available():
        return "cuda", ""
    try:
        Ops(name, "cpu", manager)
        return "cpu", ""
    except PluginError as e:
        if name in _CPU_ENV:
            return "subprocess", ""
        return None, _one_line(e)


def _default_kernels() -> list[str]:
    from litevllm.ops import kernel_providers
    from litevllm.plugins import get_plugin_manager
    return sorted(kernel_providers(get_plugin_manager()) - {"torch"})


def check_architecture(arch: str, hf_config, tmp_path=None, *, max_tokens: int = 6,
                       atol: float = 1e-3, rtol: float = 1e-3, kernel_atol: float = 1e-2,
                       seed: int = 0, kernels=None) -> Report:
    """Compare LitevLLM with transformers on a tiny random checkpoint of ``arch``.

    ``hf_config`` is a transformers config (see :func:`tiny_config`) or a dict with
    ``model_type``; ``architectures`` is set to ``[arch]``, so LitevLLM loads the class an
    installed plugin registers for ``arch`` while transformers builds the model of
    ``model_type``. Checks, all greedy over four prompts on the CPU in float32:

    - ``checkpoint``: transformers builds and saves the random model;
    - ``load``: LitevLLM loads it;
    - ``greedy``: each generated token is HF's argmax given prompt + our previous tokens;
    - ``logits``: our logits at each generated position are close to HF's;
    - ``batched``: all prompts in one batch (prefill chunked to 16 tokens) == one at a time;
    - ``prefix_caching``: with prefix caching on == off, and the cache must be hit;
    - ``kernels=NAME``: ``LLM(kernels=NAME)`` (on the GPU when there is one) vs HF, greedy and
      logits within ``kernel_atol``; the attention backend and every op NAME provides must be
      NAME's. Triton runs on a CPU through its interpreter (in a subprocess with
      ``TRITON_INTERPRET=1`` unless this process already has it).

    ``kernels``: the providers to check; None checks every installed one that can run here and
    reports the others as SKIP with the reason. A provider named explicitly that cannot run is
    a FAIL.
    """
    if tmp_path is None:
        with tempfile.TemporaryDirectory(prefix="litevllm-check-") as tmp:
            return check_architecture(arch, hf_config, tmp, max_tokens=max_tokens, atol=atol,
                                      rtol=rtol, kernel_atol=kernel_atol, seed=seed,
                                      kernels=kernels)
    report = Report(arch)
    required = kernels is not None
    kernels = list(kernels) if required else _default_kernels()
    later = ["greedy", "logits", "batched", "prefix_caching", *(f"kernels={k}" for k in kernels)]
    path = Path(tmp_path) / f"{arch}-{seed}"
    try:
        hf = build_checkpoint(arch, hf_config, path, seed)
    except Exception as e:
        report.add("checkpoint", FAIL, f"transformers could not build the model: {_error(e)}")
        return _skip_rest(report, ["load", *later], "no checkpoint")
    report.add("checkpoint", PASS, f"random {type(hf).__name__} ({hf.config.model_type})")
    vocab = hf.config.vocab_size
    prompts = _prompts(vocab, seed)
    max_len = min(128, getattr(hf.config, "max_position_embeddings", None) or 128)
    need = max(map(len, prompts)) + max_tokens
    if max_len < need:
        report.add("load", FAIL, f"max_position_embeddings must be >= {need} for the checks")
        return _skip_rest(report, later, "model did not load")
    try:
        single = _Run(path, max_len)
        tokens, ours = single.one_at_a_time(prompts, max_tokens)
    except Exception as e:
        report.add("load", FAIL, _error(e))
        return _skip_rest(report, later, "model did not load")
    model = type(single.llm.engine.model)
    report.add("load", PASS, f"{model.__module__}.{model.__qualname__}")
    refs = [_hf_logits(hf, p, t) for p, t in zip(prompts, tokens)]
    _compare(report, "greedy", [(i, _teacher_forced(t, r, atol))
                                for i, (t, r) in enumerate(zip(tokens, refs))],
             f"{len(prompts)} prompts x {max_tokens} tokens match HF argmax")
    _compare(report, "logits", [(i, _logits_close(o, r, atol, rtol))
                                for i, (o, r) in enumerate(zip(ours, refs))],
             f"within atol={atol:g}, rtol={rtol:g}")
    del single

    _guarded(report, "batched", lambda: _check_batched(report, path, max_len, prompts, tokens,
                                                       ours, max_tokens, atol))
    _guarded(report, "prefix_caching", lambda: _check_prefix(report, path, max_len, prompts,
                                                             tokens, ours, max_tokens, atol))
    for name in kernels:
        where, why = _kernels_plan(name)
        if where is None:
            report.add(f"kernels={name}", FAIL if required else SKIP,
                       f"requested but cannot run: {why}" if required else why)
        else:
            _guarded(report, f"kernels={name}", lambda: _check_kernels(
                report, name, where, path, max_len, prompts, refs, max_tokens, kernel_atol))
    return report


def _skip_rest(report, names, why) -> Report:
    for name in names:
        report.add(name, SKIP, why)
    return report


def _guarded(report, name, fn) -> None:
    try:
        fn()
    except Exception as e:
        report.add(name, FAIL, _error(e))


def _check_batched(report, path, max_len, prompts, tokens, ours, max_tokens, tol):
    run = _Run(path, max_len, max_num_batched_tokens=16)
    outs = run.generate(prompts, max_tokens)
    _compare(report, "batched", [(i, _same_tokens(o.outputs[0].token_ids, t, lg, tol))
                                 for i, (o, t, lg) in enumerate(zip(outs, tokens, ours))],
             "one batch with chunked prefill == one at a time")


def _check_prefix(report, path, max_len, prompts, tokens, ours, max_tokens, tol):
    run = _Run(path, max_len, enable_prefix_caching=True)
    order = [2, 3, 2]  # 3 shares a prefix with 2; then 2 again, fully cached
    cached, results = 0, []
    for i in order:
        out = run.generate([prompts[i]], max_tokens)[0]
        cached += out.num_cached_tokens
        results.append((i, _same_tokens(out.outputs[0].token_ids, tokens[i], ours[i], tol)))
    if cached == 0:
        results.append((3, "the prefix cache was never hit (num_cached_tokens == 0)"))
    _compare(report, "prefix_caching", results, f"{cached} cached prompt tokens, same tokens")


def _check_kernels(report, name, where, path, max_len, prompts, refs, max_tokens, atol):
    if where == "subprocess":
        tokens, logits, used = _kernels_in_subprocess(name, path, max_len, prompts, max_tokens)
    else:
        run = _Run(path, max_len, kernels=name, device=where)
        tokens, logits = run.one_at_a_time(prompts, max_tokens)
        used = run.llm.engine.kernels_in_use
    greedy = [(i, _teacher_forced(t, r, atol)) for i, (t, r) in enumerate(zip(tokens, refs))]
    close = [(i, _logits_close(o, r, atol, atol)) for i, (o, r) in enumerate(zip(logits, refs))]
    if why := _not_served_by(name, used):
        report.add(f"kernels={name}", FAIL, why)
        return
    mine = sorted(op for op, p in used.items() if op != "attention" and p == name)
    device = "cpu (interpreter subprocess)" if where == "subprocess" else where
    _compare(report, f"kernels={name}", greedy + close, f"{used['attention']} attention, "
             f"{name} {'/'.join(mine) or 'no ops'} on {device} match HF (atol={atol:g})")


def _not_served_by(name: str, used: dict) -> str | None:
    """Why the run did not use provider ``name`` for everything it provides (None if it did)."""
    from litevllm.ops import provider
    from litevllm.plugins import get_plugin_manager
    manager = get_plugin_manager()
    offered = {e.name for e in manager.entries["ops"] if provider(e) == name}
    wrong = [f"{op} from {p}" for op, p in used.items() if op in offered and p != name]
    if name in manager.names("attention_backends") and used.get("attention") != name:
        wrong.insert(0, f"attention backend {used.get('attention')}")
    if wrong:
        return f"kernels={name} ran {', '.join(wrong)} instead of '{name}'"
    if name not in used.values():
        return f"nothing ran on '{name}' kernels (in use: {used})"
    return None


def _kernels_in_subprocess(name, path, max_len, prompts, max_tokens):
    """Run ``kernels=name`` on the CPU in a fresh interpreter with ``_CPU_ENV[name]`` set
    before anything is imported; returns (tokens, logits, kernels in use)."""
    import torch
    job = Path(path).parent / f"{Path(path).name}-kernels-{name}"
    job.mkdir(exist_ok=True)
    spec = dict(path=str(path), max_len=max_len, prompts=prompts, max_tokens=max_tokens,
                kernels=name, out=str(job / "out.pt"))
    (job / "spec.json").write_text(json.dumps(spec))
    env = {**os.environ, **_CPU_ENV[name]}
    proc = subprocess.run([sys.executable, "-c", "import sys; from litevllm.testing import "
                           "_kernels_worker; _kernels_worker(sys.argv[1])", str(job / "spec.json")],
                          env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        lines = proc.stderr.strip().splitlines() or [f"exit status {proc.returncode}"]
        raise RuntimeError(f"the kernels={name} subprocess failed: {lines[-1]}")
    out = torch.load(job / "out.pt")
    return out["tokens"], out["logits"], out["used"]


def _kernels_worker(spec_file: str) -> None:
    """The subprocess side of :func:`_kernels_in_subprocess`."""
    import torch
    spec = json.loads(Path(spec_file).read_text())
    run = _Run(spec["path"], spec["max_len"], kernels=spec["kernels"], device="cpu")
    tokens, logits = run.one_at_a_time(spec["prompts"], spec["max_tokens"])
    torch.save(dict(tokens=tokens, logits=logits, used=run.llm.engine.kernels_in_use),
               spec["out"])


def assert_architecture(arch: str, hf_config, tmp_path=None, **kwargs) -> Report:
    """:func:`check_architecture`, raising ``AssertionError`` (one line per failure)."""
    return check_architecture(arch, hf_config, tmp_path, **kwargs).assert_ok()


# -- plugin registrations --------------------------------------------------------------------
def _find_entry_point(name: str):
    for ep in metadata.entry_points(group="litevllm"):
        if name in (ep.name, ep.dist.name if ep.dist else None):
            return ep
    return None


def check_plugin(name: str) -> Report:
    """Check an installed plugin (entry-point or distribution name): its entry point exists
    and imports, its ``PLUGIN_API_VERSION`` is compatible, a fresh plugin manager loads it, it
    registers something, and every ``"module:attr"`` target it registers imports and is the
    right kind of object (models are ``torch.nn.Module`` subclasses with ``compute_logits``,
    attention backends subclass ``AttentionBackend``, formats ``CheckpointFormat``, quant
    methods ``QuantConfig``, ops accept the torch reference's arguments, commands are click
    commands). Names resolved by priority must not conflict with another plugin's."""
    from litevllm.kinds import BY_NAME, KIND_TABLE
    from litevllm.plugins import PluginError, PluginManager, _api_compatible
    from litevllm.version import PLUGIN_API_VERSION
    report = Report(f"plugin {name}")
    ep = _find_entry_point(name)
    if ep is None:
        names = sorted(e.name for e in metadata.entry_points(group="litevllm"))
        report.add("installed", FAIL, f"no 'litevllm' entry point or distribution named '{name}' "
                                      f"(installed: {', '.join(names) or 'none'})")
        return report
    dist = f"{ep.dist.name} {ep.dist.version}" if ep.dist else "?"
    report.add("installed", PASS, f"{dist}: {ep.name} = {ep.value}")
    try:
        module = ep.load()
    except Exception as e:
        report.add("imports", FAIL, _error(e))
        return report
    report.add("imports", PASS, ep.value)
    required = getattr(module, "PLUGIN_API_VERSION", None)
    if required is None:
        report.add("api_version", SKIP, f"not declared; add PLUGIN_API_VERSION = "
                                        f"\"{PLUGIN_API_VERSION}\" to {ep.value}")
    elif not _api_compatible(required):
        report.add("api_version", FAIL, f"written for plugin API {required}, litevllm provides "
                                        f"{PLUGIN_API_VERSION}")
    else:
        report.add("api_version", PASS, f"{required} (litevllm provides {PLUGIN_API_VERSION})")
    manager = PluginManager()
    info = manager.info.get(ep.name)
    if info is None or info.status != "loaded":
        why = info.error if info and info.error else \
            "disabled by LITEVLLM_DISABLE_PLUGINS / LITEVLLM_PLUGINS" if info else "not loaded"
        report.add("registers", FAIL, why)
        return report
    entries = [e for k in KIND_TABLE for e in manager.entries[k] if e.plugin == ep.name]
    if not entries:
        report.add("registers", FAIL, "the plugin's hooks registered nothing")
        return report
    counts = {}
    for e in entries:
        counts[e.kind] = counts.get(e.kind, 0) + 1
    report.add("registers", PASS, ", ".join(f"{k}: {n}" for k, n in counts.items()))
    for entry in entries:
        kind = KIND_TABLE[entry.kind]
        label = f"{kind.singular} {entry.name}"
        try:
            why = kind.validate(entry.name, entry.load())
            if why is None and kind.selector == BY_NAME and entry.kind != "commands":
                winner = manager.select(entry.kind, entry.name)
                if winner.plugin != entry.plugin:
                    report.add(label, PASS, f"{entry.target} (shadowed by '{winner.plugin}')")
                    continue
        except PluginError as e:
            why = _one_line(e)
        except Exception as e:
            why = _error(e)
        report.add(label, FAIL if why else PASS, why or entry.target)
    return report


def assert_plugin(name: str) -> Report:
    """:func:`check_plugin`, raising ``AssertionError`` (one line per failure)."""
    return check_plugin(name).assert_ok()


# -- building blocks for unit tests ----------------------------------------------------------
def model_class(arch: str):
    """The model class the installed plugins provide for ``arch`` (raises PluginError)."""
    from litevllm.plugins import get_plugin_manager
    return get_plugin_manager().model_class(arch)


def model_context(device="cpu", dtype=None, kernels: str = "torch", max_model_len: int = 128,
                  block_size: int = 16, quant=None):
    """A ``ModelContext`` to build a model directly (``model_class(arch)(config, ctx)``), e.g.
    on the meta device: the ops and attention backend of ``kernels``, unquantized by default."""
    import torch

    from litevllm.model.context import ModelContext
    from litevllm.ops import Ops, pick_attention_backend
    from litevllm.plugins import get_plugin_manager
    from litevllm.quant.unquantized import UnquantizedConfig
    device, dtype = torch.device(device), dtype or torch.float32
    manager = get_plugin_manager()
    attn = pick_attention_backend(manager, kernels, device.type)(device, dtype, block_size)
    return ModelContext(Ops(kernels, device.type, manager), attn, quant or UnquantizedConfig(),
                        dtype, device, max_model_len)


# transformers' name for the activation of each gated-activation op
HF_ACTIVATIONS = {"silu_and_mul": "silu", "gelu_tanh_and_mul": "gelu_pytorch_tanh"}


def hf_rms_norm(x, weight, eps: float, residual=None, offset: float = 0.0):
    """transformers' own RMSNorm module (``LlamaRMSNorm``; ``GemmaRMSNorm`` for ``offset=1``)
    as an independent reference for the ``rms_norm`` op, with the op's calling convention."""
    import torch
    from transformers.models.gemma.modeling_gemma import GemmaRMSNorm
    from transformers.models.llama.modeling_llama import LlamaRMSNorm
    if offset not in (0.0, 1.0):
        raise ValueError(f"transformers has no RMSNorm with offset {offset}")
    cls = GemmaRMSNorm if offset else LlamaRMSNorm
    norm = cls(x.shape[-1], eps=eps).to(device=x.device, dtype=weight.dtype)
    with torch.no_grad():
        norm.weight.copy_(weight)
        if residual is None:
            return norm(x)
        x = residual + x  # the decoder layer's residual add, in the activation dtype
        return norm(x), x


def norm_test_inputs(hidden: int, dtype=None, device="cpu", seed: int = 0):
    """``(x, weight)`` to test an RMSNorm with: three rows at each rms in 1e-5, 1e-3, 3e-3, 1,
    30 (around sqrt(eps) for eps 1e-6 / 1e-5, where the placement of eps decides the result)
    and a zero row; weight ~ 1 + N(0, 0.5)."""
    import torch
    g = torch.Generator().manual_seed(seed)
    rows = [torch.randn(3, hidden, generator=g) * s for s in (1e-5, 1e-3, 3e-3, 1.0, 30.0)]
    x = torch.cat(rows + [torch.zeros(1, hidden)])
    w = 1 + 0.5 * torch.randn(hidden, generator=g)
    dtype = dtype or torch.float32
    return x.to(device=device, dtype=dtype), w.to(device=device, dtype=dtype)


def assert_rms_norm_matches_hf(rms_norm, hidden: int, eps: float, offset: float, residual: bool,
                               dtype=None, device="cpu", rtol: float = 1e-5) -> None:
    """An ``rms_norm`` op (``(x, w, eps, residual, offset)``) against :func:`hf_rms_norm` on
    :func:`norm_test_inputs`: the residual sum exactly, the normalized rows within ``rtol``."""
    import torch
    x, w = norm_test_inputs(hidden, dtype, device)
    w = w - offset  # gemma stores weight - 1
    res = torch.flip(x, (0,)) * 0.5 if residual else None
    got, want = rms_norm(x, w, eps, res, offset), hf_rms_norm(x, w, eps, res, offset)
    if residual:
        torch.testing.assert_close(got[1], want[1], rtol=0, atol=0)
        got, want = got[0], want[0]
    torch.testing.assert_close(got, want, rtol=rtol, atol=0)


def logprob_rows(entries, vocab: int):
    """Full-vocab ``{token: logprob}`` dicts (``logprobs=vocab``) -> an [N, vocab] float32
    tensor to compare with transformers' ``log_softmax`` (NaN where a token is missing)."""
    import torch
    out = torch.full((len(entries), vocab), float("nan"))
    for i, entry in enumerate(entries):
        for tok, lp in entry.items():
            out[i, tok] = lp
    return out


def hf_act_and_mul(op: str, x):
    """``ACT2FN[name](x[..., :I]) * x[..., I:]``: transformers' activation modules as an
    independent reference for the gated-activation ops in :data:`HF_ACTIVATIONS`."""
    from transformers.activations import ACT2FN
    a, b = x.chunk(2, dim=-1)
    return ACT2FN[HF_ACTIVATIONS[op]](a) * b


def expected_tensors(model) -> dict:
    """``{(parameter, shard): checkpoint tensor name}`` the loader will require for ``model``."""
    from litevllm.model.loader import expected_tensors as expected
    return expected(model)


CHAT_TEMPLATE = ("{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}\n{% endfor %}"
                 "{% if add_generation_prompt %}<|assistant|>{% endif %}")
TOKENIZER_CORPUS = (
    "The quick brown fox jumps over the lazy dog. " * 3,
    "Hello world! How are you today? I am fine, thank you.",
    "Café crème brûlée, naïve résumé, Zürich, São Paulo.",
    "日本語のテキスト、中文文本, 한국어 텍스트.",
    "emoji: 🙂🚀🎉 and math: ∑ ∫ ≈ ≠ ∞",
    "def main():\n    print('hi')\n    return 0\n",
    "stop STOP stopping. End of story. The end.",
)


def tiny_tokenizer(path=None, vocab_size: int = 384, corpus=TOKENIZER_CORPUS,
                   chat_template: str | None = CHAT_TEMPLATE):
    """A small byte-level BPE ``PreTrainedTokenizerFast`` (multi-byte text round-trips), with
    ``<pad>``/``<s>``/``</s>`` and a chat template; saved to ``path`` when given. Pair it with
    a checkpoint whose ``vocab_size`` is ``len(tokenizer)``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<pad>", "<s>", "</s>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(list(corpus) * 4, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", bos_token="<s>",
                                   eos_token="</s>")
    fast.chat_template = chat_template
    if path is not None:
        fast.save_pretrained(path)
    return fast
