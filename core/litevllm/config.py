"""Engine configuration: attrs classes validated at construction, defaults from ``lite.toml``."""
from __future__ import annotations

import difflib
import sys
from pathlib import Path

import attrs

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

_DTYPES = {"auto": None, "float32": "float32", "float": "float32", "fp32": "float32",
           "float16": "float16", "half": "float16", "fp16": "float16",
           "bfloat16": "bfloat16", "bf16": "bfloat16"}


SCHEDULING_POLICIES = ("fcfs", "shortest-first")
# shortest-first ages: a second of waiting counts as this many prompt tokens, so a prompt of L
# tokens lets later, shorter prompts go first for at most L / AGING_TOKENS_PER_S seconds
AGING_TOKENS_PER_S = 1000
_KV_CACHE_DTYPES = {"auto": None, "fp8": "float8_e4m3fn", "fp8_e4m3": "float8_e4m3fn"}


def _positive(inst, att, value):
    if value is not None and value <= 0:
        raise ValueError(f"{att.name} must be > 0, got {value!r}")


def _non_negative(inst, att, value):
    if value < 0:
        raise ValueError(f"{att.name} must be >= 0, got {value!r}")


def _fraction(inst, att, value):
    if not 0 < value <= 1:
        raise ValueError(f"{att.name} must be in (0, 1], got {value!r}")


def _one_of(*choices):
    def check(inst, att, value):
        if value not in choices:
            raise ValueError(f"{att.name} must be one of {', '.join(map(str, choices))}; got {value!r}")
    return check


def opt(default=attrs.NOTHING, help: str = "", *, validator=None, choices=None, flags=None,
        cli: bool = True, **field):
    """An engine option: the attrs field plus what generates its CLI option (``cli.engine_options``)
    and its ``LLM`` keyword. ``choices`` also validates; ``flags`` overrides the derived
    ``--field-name``; metadata keys ``param``/``invert`` (a negative flag), ``min``, ``json``,
    ``keyword`` (the LLM keyword, default the field name)."""
    validators = [v for v in (validator, _one_of(*choices) if choices else None) if v]
    meta = {"help": help, "choices": choices, "flags": flags, "cli": cli,
            **{k: field.pop(k) for k in ("param", "invert", "min", "json", "keyword") if k in field}}
    return attrs.field(default=default, validator=validators or None, metadata=meta, **field)


def _dtype_name(inst, att, value):
    if not isinstance(value, str):
        return  # a torch.dtype
    if value not in _DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(_DTYPES)}; got {value!r}")


def resolve_dtype(dtype, config_dtype, device):
    """float32 on CPU; the checkpoint's 16-bit dtype on GPU unless asked otherwise."""
    import torch
    if isinstance(dtype, torch.dtype):
        return dtype
    if _DTYPES[dtype] is not None:
        return getattr(torch, _DTYPES[dtype])
    if device.type == "cpu":
        return torch.float32
    if isinstance(config_dtype, str):
        name = _DTYPES.get(config_dtype.replace("torch.", ""))
        config_dtype = getattr(torch, name) if name else None
    return config_dtype if config_dtype in (torch.float16, torch.bfloat16) else torch.bfloat16


def resolve_kv_cache_dtype(kv_cache_dtype: str, dtype):
    """The KV cache's torch dtype: the model's for "auto", float8_e4m3fn for "fp8"."""
    import torch
    name = _KV_CACHE_DTYPES[kv_cache_dtype]
    return getattr(torch, name) if name else dtype


@attrs.define
class CacheConfig:
    block_size: int = opt(16, "Tokens per KV-cache block.", choices=(8, 16, 32, 64, 128))
    gpu_memory_utilization: float = opt(0.9, "Share of GPU memory the engine may use.",
                                        validator=_fraction)
    # None: room for max(max_model_len, max_num_batched_tokens) tokens (LLMEngine._num_blocks)
    cpu_kv_cache_gib: float | None = opt(None, "KV cache on the CPU; default: room for "
                                         "max(max-model-len, max-num-batched-tokens) tokens.",
                                         validator=_positive)
    enable_prefix_caching: bool = opt(True, "Disable prefix caching.", flags=("--no-prefix-caching",),
                                      param="no_prefix_caching", invert=True)
    num_gpu_blocks_override: int | None = opt(None, validator=_positive, cli=False)
    # vLLM's --kv-cache-dtype: fp8 stores K/V as float8 e4m3 (x / scale, scales per layer from
    # the checkpoint's self_attn.k_scale/v_scale, else 1.0): half the bytes, twice the blocks
    kv_cache_dtype: str = opt("auto", "KV-cache dtype: auto (the model's) | fp8 (float8 e4m3, "
                              "per-layer scales from the checkpoint, else 1.0).",
                              choices=tuple(_KV_CACHE_DTYPES))


# decode steps per host sync by default when decode replays CUDA graphs. H100, TinyLlama, same
# run (benchmarks/RESULTS.md): 1 / 8 / 16 steps gave batch-1 decode 1.56 / 1.47 / 1.40 ms per
# token and throughput 26.0k / 26.2k (cold) / 35.0k output tok/s
DEFAULT_GRAPH_STEPS = 16


@attrs.define
class SchedulerConfig:
    max_num_seqs: int = opt(256, "Most sequences in one batch.", validator=_positive)
    max_num_batched_tokens: int = opt(8192, "Most tokens in one step.", validator=_positive)
    enable_chunked_prefill: bool = opt(
        True, "Split long prompts over several steps.",
        flags=("--enable-chunked-prefill/--no-enable-chunked-prefill",))
    # decode steps run back to back on the device between host syncs (vLLM's
    # num_scheduler_steps); only for batches of plain decodes, see Scheduler._lookahead.
    # None: DEFAULT_GRAPH_STEPS when decode replays CUDA graphs, else 1 (nothing to amortise)
    num_scheduler_steps: int | None = opt(
        None, f"Decode steps per host sync (plain decodes only); default {DEFAULT_GRAPH_STEPS} "
              f"with CUDA graphs, else 1.", validator=_positive, min=1)
    # schedule and launch step n+1 while the device runs step n, then read step n's tokens
    # (LLMEngine._step_async); multi-step and speculative-verify batches stay synchronous.
    # None: on with CUDA (on the CPU nothing runs meanwhile)
    async_scheduling: bool | None = opt(
        None, "Schedule the next step while the device runs this one; default: on with CUDA.",
        flags=("--async-scheduling/--no-async-scheduling",))
    # shortest-first lowers the median time to first token of a burst (the prompt work ahead of
    # a request shrinks); aging bounds how long later, shorter prompts can overtake a long one
    scheduling_policy: str = opt(
        "fcfs", "Order of waiting requests: fcfs (arrival), or shortest-first (shortest prompt "
                f"first; a prompt lets later, shorter ones overtake it for at most "
                f"{1000 / AGING_TOKENS_PER_S:g} ms per token; preempted requests still resume "
                f"first).", choices=SCHEDULING_POLICIES)


@attrs.define
class SpeculativeConfig:
    """Speculative decoding, shaped like vLLM's ``speculative_config`` dict."""
    method: str = attrs.field(validator=_one_of("ngram"))
    num_speculative_tokens: int = attrs.field(validator=_positive)
    prompt_lookup_max: int = attrs.field(default=4, validator=_positive)
    prompt_lookup_min: int = attrs.field(default=1, validator=_positive)
    # no drafts while more sequences than this decode (verification costs more than it saves)
    disable_by_batch_size: int | None = attrs.field(default=16, validator=_positive)
    # drafting pauses while the recent share of accepted draft tokens is below this
    min_acceptance_rate: float = attrs.field(default=0.3, validator=_fraction)

    def __attrs_post_init__(self):
        if self.prompt_lookup_min > self.prompt_lookup_max:
            raise ValueError(f"prompt_lookup_min ({self.prompt_lookup_min}) must not exceed "
                             f"prompt_lookup_max ({self.prompt_lookup_max})")

    @classmethod
    def from_dict(cls, d) -> "SpeculativeConfig":
        if isinstance(d, cls):
            return d
        if not isinstance(d, dict):
            raise ValueError(f"speculative_config must be a dict, got {type(d).__name__}")
        names = {f.name for f in attrs.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"speculative_config has unknown keys: {', '.join(unknown)} "
                             f"(known: {', '.join(sorted(names))})")
        missing = [k for k in ("method", "num_speculative_tokens") if k not in d]
        if missing:
            raise ValueError(f"speculative_config needs {' and '.join(missing)}")
        return cls(**d)


@attrs.define
class EngineConfig:
    model: str = opt(help="Checkpoint dir, .gguf file or alias.", flags=("--model", "-m"))
    dtype: object = opt("auto", "auto | float32 | float16 | bfloat16 (or a torch.dtype in LLM()).",
                        validator=_dtype_name)
    kernels: str = opt("auto", "auto | torch | a kernel provider (e.g. triton).")
    max_model_len: int | None = opt(None, "Longest prompt + output; default: the checkpoint's.",
                                    validator=_positive)
    cache: CacheConfig = attrs.field(factory=CacheConfig)
    scheduler: SchedulerConfig = attrs.field(factory=SchedulerConfig)
    enforce_eager: bool = opt(False, "Disable CUDA graphs.")
    # on by default: +5.6% throughput and -30% TTFT with async scheduling on the H200 (RESULTS.md)
    max_piecewise_graph_tokens: int = opt(
        2048, "Largest prefill or mixed step (tokens) run as piecewise CUDA graphs (attention "
           "eager between them); 0: such steps run eagerly.",
        validator=_non_negative, min=0)
    load_format: str = opt("auto", "dummy: random weights (no checkpoint read).",
                           choices=("auto", "dummy"))
    device: str | None = opt(None, "cpu | cuda | cuda:N; default: cuda when available.")
    quantization: str | None = opt(
        None, "none | gptq | awq | int8 | fp8 | ... (`lite plugins` lists the installed "
              "schemes); default: the checkpoint's quantization_config.", flags=("--quantization", "-q"))
    seed: int = opt(0, "Random seed.")
    tokenizer: str | None = opt(None, "Tokenizer dir or hub name; default: the model's.")
    speculative: SpeculativeConfig | None = opt(
        None, 'Speculative decoding as JSON, e.g. \'{"method": "ngram", "num_speculative_tokens": '
              '4, "prompt_lookup_max": 4}\'.', keyword="speculative_config", json=True,
        converter=lambda d: None if d is None else SpeculativeConfig.from_dict(d))

    def torch_device(self):
        import torch
        if self.device:
            return torch.device(self.device)
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def option_fields() -> list[tuple[str, attrs.Attribute, str | None]]:
    """(LLM keyword, field, section) for every engine option, in EngineConfig order, with the
    ``cache``/``scheduler`` sections flattened: the one source for the CLI and ``LLM()``."""
    out = []
    for f in attrs.fields(EngineConfig):
        if f.metadata:
            out.append((f.metadata.get("keyword", f.name), f, None))
        else:  # a section: its class is the factory
            out += [(g.metadata.get("keyword", g.name), g, f.name)
                    for g in attrs.fields(f.default.factory)]
    return out


def engine_config(model, **kwargs) -> EngineConfig:
    """The EngineConfig for ``LLM(model, **kwargs)``; an unknown keyword is a one-line ValueError
    naming the closest valid one."""
    fields = {kw: (f, section) for kw, f, section in option_fields()}
    for key in sorted(kwargs):
        if key not in fields or key == "model":
            close = difflib.get_close_matches(key, [k for k in fields if k != "model"], n=1)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            raise ValueError(f"LLM() got an unknown option '{key}'{hint}")
    top, sections = {}, {}
    for key, value in kwargs.items():
        f, section = fields[key]
        (sections.setdefault(section, {}) if section else top)[f.name] = value
    for f in attrs.fields(EngineConfig):
        if f.name in sections:
            top[f.name] = f.default.factory(**sections[f.name])
    return EngineConfig(model=str(model), **top)


def load_toml_defaults(path: str | Path | None = None) -> dict:
    """Options from ``lite.toml`` (cwd, or ``path``): top-level keys, plus per-command tables."""
    path = Path(path) if path else Path("lite.toml")
    if not path.is_file():
        return {}
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except tomllib.TOMLDecodeError as e:
        raise ValueError(f"{path}: invalid TOML: {e}") from e
