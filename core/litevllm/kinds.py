"""The registry kinds: one table of what each kind registers, how a name resolves, and what a
valid registration is. Used by ``litevllm.plugins`` (collection, ``PluginManager.select``,
messages), ``litevllm.ops`` (ops and attention backends, through ``select``) and
``litevllm.testing`` (``check_plugin``)."""
from __future__ import annotations

import functools
import importlib
import inspect
from dataclasses import dataclass
from typing import Callable

_MODEL_METHODS = ("forward", "compute_logits", "kv_shape", "num_kv_layers", "map_checkpoint_name")


@dataclass(frozen=True)
class Kind:
    singular: str            # for messages: "attention backend"
    base: str | None         # "module:Class" a registration must subclass (None: see validator)
    # how a name resolves: "module:function", called as fn(manager, kind, name, **context) ->
    # Entry (or None: not found) by PluginManager.select, the only caller
    selector: str
    extra: Callable[[str, object], str | None] | None = None  # checks beyond the base class

    def select(self, manager, kind: str, name, **context):
        module, _, attr = self.selector.partition(":")
        return getattr(importlib.import_module(module), attr)(manager, kind, name, **context)

    def base_class(self):
        module, _, attr = self.base.partition(":")
        return getattr(importlib.import_module(module), attr)

    def validate(self, name: str, obj) -> str | None:
        """Why ``obj`` is not a valid registration of this kind (None when it is)."""
        if self.base is not None:
            base = self.base_class()
            if not (isinstance(obj, type) and issubclass(obj, base)):
                module, _, attr = self.base.partition(":")
                shown = attr if module.startswith("litevllm") else f"{module}.{attr}"
                return f"{obj!r} is not a subclass of {shown}"
        return self.extra(name, obj) if self.extra else None


def _model(name, obj):
    missing = [m for m in _MODEL_METHODS if not callable(getattr(obj, m, None))]
    return f"missing methods: {', '.join(missing)}" if missing else None


def _overrides(method: str, base: str):
    def check(name, obj):
        module, _, attr = base.partition(":")
        default = getattr(getattr(importlib.import_module(module), attr), method)
        mine = getattr(obj, method)
        same = getattr(mine, "__func__", mine) is getattr(default, "__func__", default)
        return f"does not implement {method}()" if same else None
    return check


def _callable(name, obj):
    return None if callable(obj) else f"{obj!r} is not callable"


def op_takes(fn, param: str) -> bool:
    """Whether ``fn`` (an op, a method) accepts the keyword ``param``: arguments added to a
    plugin-facing signature after API 1.0 are passed only to code that takes them."""
    try:
        return _op_takes(fn, param)
    except TypeError:  # an unhashable callable
        return _op_takes.__wrapped__(fn, param)


@functools.lru_cache(maxsize=None)
def _op_takes(fn, param: str) -> bool:
    try:
        return param in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False


def _op(name, obj):
    if not callable(obj):
        return f"{obj!r} is not callable"
    from litevllm.ops import torch_ops
    ref = getattr(torch_ops, name, None)
    if ref is not None:  # optional reference arguments (added in minor versions) may be absent
        params = [p for p, v in inspect.signature(ref).parameters.items()
                  if v.default is inspect.Parameter.empty]
        try:
            inspect.signature(obj).bind(*params)
        except TypeError:
            return f"does not accept the reference signature ({', '.join(params)})"
        except ValueError:
            pass  # builtins without a signature
    return None


def _command(name, obj):
    import click
    return None if isinstance(obj, click.Command) else f"{obj!r} is not a click.Command"


_API = "litevllm.plugin_api"
# selectors: the name itself (highest priority, then override=True); "auto" or a name
# (highest priority); the first format by priority whose detect() accepts a path; the
# kernels= provider serving the device (attention backends, ops)
BY_NAME = "litevllm.plugins:by_name"
BY_PRIORITY = "litevllm.plugins:by_priority"
BY_DETECTION = "litevllm.plugins:by_detection"
KIND_TABLE: dict[str, Kind] = {
    "models": Kind("model", "torch.nn:Module", BY_NAME, _model),
    "attention_backends": Kind("attention backend", f"{_API}:AttentionBackend",
                               "litevllm.ops:select_attention_backend",
                               _overrides("forward", f"{_API}:AttentionBackend")),
    "ops": Kind("op", None, "litevllm.ops:select_op", _op),
    "quant_methods": Kind("quant method", f"{_API}:QuantConfig", BY_NAME),
    "checkpoint_formats": Kind("checkpoint format", f"{_API}:CheckpointFormat", BY_DETECTION,
                               _overrides("detect", f"{_API}:CheckpointFormat")),
    "model_aliases": Kind("model alias", None, BY_NAME, _callable),
    "structured_output_backends": Kind("structured-output backend",
                                       f"{_API}:StructuredOutputBackend", BY_PRIORITY),
    "commands": Kind("command", None, BY_NAME, _command),
}
KINDS = tuple(KIND_TABLE)
