"""Weight loading: HF-named tensors from a checkpoint format into the model's parameters.

Tensors arrive one at a time (mmap-backed for safetensors) and are copied straight into the
already-allocated parameters, so the checkpoint is never held twice in memory.
"""
from __future__ import annotations

import logging
import time
from typing import Iterable

import torch
from torch import nn

from litevllm.formats.base import CheckpointError
from litevllm.model.layers import RMSNorm

log = logging.getLogger("litevllm")


# KV-cache scales some fp8 checkpoints keep on k_proj/v_proj (older AutoFP8 layouts), moved to
# the attention module's k_scale/v_scale as vLLM remaps them
KV_SCALE_ALIASES = {("k_proj", "output_scale"): "k_scale", ("k_proj", "k_scale"): "k_scale",
                    ("v_proj", "output_scale"): "v_scale", ("v_proj", "v_scale"): "v_scale"}


def _owner(model: nn.Module, param_name: str):
    module_name, _, attr = param_name.rpartition(".")
    return model.get_submodule(module_name) if module_name else model, attr


def expected_tensors(model: nn.Module) -> dict[tuple[str, object], str]:
    """Every (parameter, shard) the checkpoint must fill, with the checkpoint name it expects."""
    packed = getattr(model, "packed_modules", {})
    expected = {}
    for name, _ in model.named_parameters():  # ties are listed once
        owner, attr = _owner(model, name)
        module_name = name.rpartition(".")[0]
        leaf = module_name.rpartition(".")[2]
        if hasattr(owner, "expected_shards"):
            for shard, ckpt_name in owner.expected_shards(attr, module_name):
                expected[(name, shard)] = ckpt_name
        elif leaf in packed:
            parent = module_name.rpartition(".")[0]
            for i, sub in enumerate(packed[leaf]):
                expected[(name, i)] = f"{parent}.{sub}.{attr}"
        else:
            expected[(name, None)] = name
    return expected


def load_weights(model: nn.Module, tensors: Iterable[tuple[str, torch.Tensor]]) -> None:
    """Load every tensor; raise CheckpointError naming the first missing one."""
    params = dict(model.named_parameters())
    expected = expected_tensors(model)
    packed = getattr(model, "packed_modules", {})
    reverse = {sub: (fused, i) for fused, subs in packed.items() for i, sub in enumerate(subs)}
    route = getattr(model, "route_checkpoint_tensor", None)
    filled = set()
    for ckpt_name, tensor in tensors:
        name = model.map_checkpoint_name(ckpt_name)
        if name is None:
            continue
        module_name, _, attr = name.rpartition(".")
        parent, _, leaf = module_name.rpartition(".")
        if (leaf, attr) in KV_SCALE_ALIASES:
            module_name, attr = parent, KV_SCALE_ALIASES[leaf, attr]
            parent, _, leaf = module_name.rpartition(".")
        shard = None
        # the model may route a tensor itself (e.g. one expert's weight into a stacked param),
        # seeing the checkpoint's own module name, before gate/up or q/k/v packing applies
        routed = route(module_name, attr) if route is not None else None
        if routed is not None:
            module_name, attr, shard = routed
        elif leaf in reverse:
            fused, shard = reverse[leaf]
            module_name = f"{parent}.{fused}"
        target = f"{module_name}.{attr}"
        try:
            owner = model.get_submodule(module_name)
        except AttributeError:
            owner = None
        if owner is None or (target not in params and not hasattr(owner, "load_shard")):
            continue  # tensors the model does not use (e.g. extra heads) are ignored
        try:
            if hasattr(owner, "load_shard"):
                owner.load_shard(attr, tensor, shard)
            else:
                _copy(params[target], tensor, ckpt_name)
        except (ValueError, RuntimeError) as e:
            raise CheckpointError(f"cannot load '{ckpt_name}': {e}") from e
        filled.add((target, shard))
        if shard is None:  # a whole tensor: every shard of it (as far as the owner says)
            covers = getattr(owner, "whole_tensor_fills", lambda s: True)
            filled.update(k for k in expected if k[0] == target and covers(k[1]))
    missing = [ckpt for key, ckpt in expected.items() if key not in filled]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise CheckpointError(f"checkpoint is missing tensor '{missing[0]}'{more}")
    for module in model.modules():
        if hasattr(module, "process_after_loading"):
            module.process_after_loading()


def _copy(param: torch.Tensor, tensor: torch.Tensor, name: str):
    if param.shape != tensor.shape:
        raise ValueError(f"shape {tuple(tensor.shape)} does not match the model's "
                         f"{tuple(param.shape)}")
    param.data.copy_(tensor)


@torch.no_grad()
def init_dummy_weights(model: nn.Module, seed: int = 0) -> None:
    """Random weights of the right shapes, like vLLM's ``--load-format dummy``: drawn in place
    on the parameters' device by a generator seeded with ``seed`` (same seed, device and dtype,
    same weights)."""
    t0 = time.perf_counter()
    gens: dict[torch.device, torch.Generator] = {}

    def gen_for(device: torch.device) -> torch.Generator:
        if device not in gens:
            gens[device] = torch.Generator(device).manual_seed(seed)
        return gens[device]
    # norms scale by 1: weight 1, or 0 for a norm computing (offset + weight)
    offsets = {f"{n}.weight": m.offset for n, m in model.named_modules() if isinstance(m, RMSNorm)}
    for name, param in model.named_parameters():
        if "norm" in name and param.dim() == 1:
            param.fill_(1.0 - offsets.get(name, 0.0))
        elif param.is_floating_point():
            gen = gen_for(param.device)
            if param.element_size() >= 2:
                param.uniform_(-0.02, 0.02, generator=gen)
            else:  # float8 and other narrow dtypes have no uniform_: draw in float32, cast
                param.copy_(torch.empty(param.shape, device=param.device)
                            .uniform_(-0.02, 0.02, generator=gen))
        elif param.dtype == torch.bool:
            param.zero_()
        else:
            # integer params hold packed quantized codes: random bits, as a real checkpoint has
            info = torch.iinfo(param.dtype)
            param.copy_(torch.randint(info.min, info.max, param.shape, dtype=param.dtype,
                                      device=param.device, generator=gen_for(param.device)))
    for module in model.modules():
        if hasattr(module, "process_after_loading"):
            module.process_after_loading()
    log.debug("start-up: dummy weights in %.2f s", time.perf_counter() - t0)
