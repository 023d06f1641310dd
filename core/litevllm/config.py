"""Engine configuration: attrs classes validated at construction, defaults from ``lite.toml``."""
from __future__ import annotations

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


def _positive(inst, att, value):
    if value is not None and value <= 0:
        raise ValueError(f"{att.name} must be > 0, got {value!r}")


def _fraction(inst, att, value):
    if not 0 < value <= 1:
        raise ValueError(f"{att.name} must be in (0, 1], got {value!r}")


def _one_of(*choices):
    def check(inst, att, value):
        if value not in choices:
            raise ValueError(f"{att.name} must be one of {', '.join(map(str, choices))}; got {value!r}")
    return check


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


@attrs.define
class CacheConfig:
    block_size: int = attrs.field(default=16, validator=_one_of(8, 16, 32, 64, 128))
    gpu_memory_utilization: float = attrs.field(default=0.9, validator=_fraction)
    # None: room for max(max_model_len, max_num_batched_tokens) tokens (LLMEngine._num_blocks)
    cpu_kv_cache_gib: float | None = attrs.field(default=None, validator=_positive)
    enable_prefix_caching: bool = True
    num_gpu_blocks_override: int | None = attrs.field(default=None, validator=_positive)


# decode steps per host sync by default when decode replays CUDA graphs. H100, TinyLlama, same
# run (benchmarks/RESULTS.md): 1 / 8 / 16 steps gave batch-1 decode 1.56 / 1.47 / 1.40 ms per
# token and throughput 26.0k / 26.2k (cold) / 35.0k output tok/s
DEFAULT_GRAPH_STEPS = 16


@attrs.define
class SchedulerConfig:
    max_num_seqs: int = attrs.field(default=256, validator=_positive)
    max_num_batched_tokens: int = attrs.field(default=8192, validator=_positive)
    enable_chunked_prefill: bool = True
    # decode steps run back to back on the device between host syncs (vLLM's
    # num_scheduler_steps); only for batches of plain decodes, see Scheduler._lookahead.
    # None: DEFAULT_GRAPH_STEPS when decode replays CUDA graphs, else 1 (nothing to amortise)
    num_scheduler_steps: int | None = attrs.field(default=None, validator=_positive)


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
    model: str
    dtype: object = attrs.field(default="auto", validator=_dtype_name)
    kernels: str = "auto"
    device: str | None = None
    max_model_len: int | None = attrs.field(default=None, validator=_positive)
    enforce_eager: bool = False
    load_format: str = attrs.field(default="auto", validator=_one_of("auto", "dummy"))
    seed: int = 0
    tokenizer: str | None = None
    quantization: str | None = None
    cache: CacheConfig = attrs.field(factory=CacheConfig)
    scheduler: SchedulerConfig = attrs.field(factory=SchedulerConfig)
    speculative: SpeculativeConfig | None = attrs.field(
        default=None, converter=lambda d: None if d is None else SpeculativeConfig.from_dict(d))

    def torch_device(self):
        import torch
        if self.device:
            return torch.device(self.device)
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")


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
