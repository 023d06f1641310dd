"""The attention-backend contract.

A backend owns the KV-cache layout and runs attention for a flattened batch over the paged cache.
One batch may mix prefill chunks and decodes: sequence ``b`` owns query rows
``query_start_loc[b]:query_start_loc[b+1]``; its last query row sits at absolute position
``seq_lens[b] - 1``. A query at position p sees cached keys at positions ``k <= p`` and, with a
sliding window ``w``, ``p - k < w``.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass, field

import torch


@dataclass(frozen=True)
class AttentionSpec:
    """Static per-layer attention settings."""
    num_heads: int
    num_kv_heads: int
    head_dim: int
    scale: float
    sliding_window: int | None = None   # keys with p - k >= window are masked
    logit_softcap: float | None = None  # scores = cap * tanh(scores / cap)
    # float8 KV caches store k / k_scale and v / v_scale (per-tensor, from the checkpoint)
    k_scale: float = 1.0
    v_scale: float = 1.0
    # the layer's rotary op already stored this step's k/v in the cache (API 1.5; only for a
    # backend with ``rotary_stores_kv``): forward() must not store them again
    kv_stored: bool = False


@dataclass
class AttentionMetadata:
    """Per-step batch description; all tensors live on the model's device."""
    slot_mapping: torch.Tensor      # [T] int64: flat cache slot per new token, -1 = skip
    query_start_loc: torch.Tensor   # [B+1] int32
    seq_lens: torch.Tensor          # [B] int32: context length including this step's tokens
    block_tables: torch.Tensor      # [B, max_blocks] int32
    max_query_len: int
    max_seq_len: int
    num_seqs: int
    is_decode: bool                 # every sequence has exactly one query token
    query_lens_cpu: list[int] = field(default_factory=list)
    seq_lens_cpu: list[int] = field(default_factory=list)
    extra: dict = field(default_factory=dict)  # backend-private buffers


def cannot_store(backend_name: str, kv_cache_dtype: torch.dtype, device) -> ValueError:
    name = str(kv_cache_dtype).replace("torch.", "")
    return ValueError(f"attention backend '{backend_name}' cannot store a {name} KV cache "
                      f"on {device.type}; use kv_cache_dtype 'auto'")


def build_backend(cls, device: torch.device, dtype: torch.dtype, block_size: int,
                  kv_cache_dtype: torch.dtype):
    """``cls(device, dtype, block_size[, kv_cache_dtype])``: the cache dtype only when it is not
    the model's, so backends with plugin API 1.0's three-argument constructor still start with
    'auto' and are refused in one line for another cache dtype."""
    if kv_cache_dtype == dtype:
        return cls(device, dtype, block_size)
    params = inspect.signature(cls).parameters.values()
    if not any(p.name == "kv_cache_dtype" or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
               for p in params):
        raise cannot_store(getattr(cls, "name", cls.__name__), kv_cache_dtype, device)
    return cls(device, dtype, block_size, kv_cache_dtype)


def rotary_store_allowed(backend) -> bool:
    """Whether a layer's rotary op may store k/v for ``backend``: the class that defines its
    ``forward`` sets ``rotary_stores_kv`` itself (a subclass that replaces ``forward`` opts in
    anew) and the cache has that class's layout (a subclass that changes ``kv_cache_shape`` is
    out); an instance attribute False turns it off."""
    mro = type(backend).__mro__
    fwd = next((c for c in mro if "forward" in vars(c)), None)
    shape = next((c for c in mro if "kv_cache_shape" in vars(c)), None)
    return (fwd is not None and vars(fwd).get("rotary_stores_kv") is True
            and shape in fwd.__mro__ and getattr(backend, "rotary_stores_kv", False) is True)


class AttentionBackend:
    """Base class for attention backends. Subclasses set ``name`` and implement ``forward``."""

    name = "base"
    # cache dtypes the backend can store besides the model's (e.g. torch.float8_e4m3fn)
    kv_cache_dtypes: tuple = ()
    # True: the decode CUDA graphs capture prepare() with the forward, so its device work
    # replays every step (API 1.2); False: it runs once, before the capture
    prepare_in_graph: bool = False
    # True: forward() and prepare() of any step read per-step values from the metadata's
    # tensors only, so prefill and mixed steps run as one CUDA graph per token bucket with
    # attention and prepare() inside, whatever ``prepare_in_graph`` says (API 1.3). Such a
    # graph is fed padded metadata: ``num_seqs`` and ``max_query_len`` are the bucket's upper
    # bounds, padding sequences own no query rows (``query_start_loc`` repeats the step's
    # token count; their ``seq_lens`` and block-table rows are stale) and padding tokens have
    # slot -1. False: those steps replay piecewise graphs with attention run eagerly between
    # them
    varlen_in_graph: bool = False
    # True (API 1.5): the cache has the default layout and forward() honours
    # ``spec.kv_stored``, so a layer may store its k/v through the ``rotary_embedding`` op's
    # cache arguments (one kernel for the rotation and the store) when that op takes them.
    # Read from the class that defines forward (``rotary_store_allowed``)
    rotary_stores_kv: bool = False

    def __init__(self, device: torch.device, dtype: torch.dtype, block_size: int,
                 kv_cache_dtype: torch.dtype | None = None):
        self.device, self.dtype, self.block_size = device, dtype, block_size
        self.kv_cache_dtype = kv_cache_dtype or dtype
        if self.kv_cache_dtype not in (dtype, *self.kv_cache_dtypes):
            raise cannot_store(self.name, self.kv_cache_dtype, device)

    def kv_cache_shape(self, num_blocks: int, num_kv_heads: int, head_dim: int) -> tuple:
        """Shape of one layer's cache. Default: [2, num_blocks, block_size, Hkv, D]."""
        return (2, num_blocks, self.block_size, num_kv_heads, head_dim)

    def allocate_kv_cache(self, num_blocks: int, num_kv_heads: int, head_dim: int) -> torch.Tensor:
        return torch.zeros(self.kv_cache_shape(num_blocks, num_kv_heads, head_dim),
                           dtype=self.kv_cache_dtype, device=self.device)

    def prepare(self, meta: AttentionMetadata) -> AttentionMetadata:
        """Hook to add backend-private buffers to ``meta.extra`` once per step. With
        ``prepare_in_graph`` the decode graphs capture it, so its device work replays with each
        step; it must then not read per-step values on the host."""
        return meta

    def forward(self, spec: AttentionSpec, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                kv_cache: torch.Tensor, meta: AttentionMetadata,
                out: torch.Tensor | None = None) -> torch.Tensor:
        """Store k/v [T, Hkv, D] in ``kv_cache`` (unless ``spec.kv_stored``: the layer's
        rotary op stored them), attend q [T, H, D]; return [T, H*D]. ``out``
        [T, H*D] (optional; contiguous rows): write there and return it. Piecewise graphs pass
        their static buffer to a backend whose ``forward`` takes ``out``, saving a copy."""
        raise NotImplementedError
