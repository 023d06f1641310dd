"""transformers' config and tokenizer classes, imported without its modelling stack.

A transformers configuration module (``configuration_llama``, ...) pulls in, through shared
utilities, modules that only modelling needs: its type validators import ``activations`` and so
hub kernels, weight conversion, accelerate, ``torch.distributed.tensor`` and FSDP (transformers
5.2x); its docstring decorator imports the auto model classes, generation and ``torch._dynamo``
(5.1x). That is seconds of every start. Inside ``config_imports()`` those two modules are
stand-ins: ``ACT2FN`` is a mapping that imports the real module on first use (only configs that
validate an activation name touch it); the docstring decorator's model-class lookup raises
ImportError, which transformers skips; any other name imports the real module. The stand-ins
leave ``sys.modules`` on exit, so later imports (transformers' models, in tests) get the real
modules. Config semantics stay transformers': same classes, defaults, validation, loading.

transformers 5.1x's validators also import ``video_utils`` and so ``image_utils``, which imports
torchvision where it is installed, and torchvision ``torch._dynamo`` and sympy (~1-2 s on the
H200 host). Inside ``config_imports()`` transformers sees no torchvision; the vision modules
first imported there leave ``sys.modules`` on exit, so later imports get them with torchvision.
"""
from __future__ import annotations

import importlib
import sys
import types
from collections.abc import Mapping
from contextlib import contextmanager


def _real_module(name: str):
    if isinstance(sys.modules.get(name), _StandIn):
        del sys.modules[name]
    return importlib.import_module(name)


class _DeferredMapping(Mapping):
    """A module-level mapping that imports its module on first use."""

    def __init__(self, module: str, attr: str):
        self._where = (module, attr)

    def _real(self):
        module, attr = self._where
        return getattr(_real_module(module), attr)

    def __getitem__(self, key):
        return self._real()[key]

    def __iter__(self):
        return iter(self._real())

    def __len__(self):
        return len(self._real())


class _StandIn(types.ModuleType):
    """Names in ``absent`` raise ImportError (which transformers skips); any other name not
    set on the stand-in imports the real module."""

    def __init__(self, name: str, attrs: dict, absent: frozenset = frozenset()):
        super().__init__(name)
        self.__dict__.update(attrs)
        self._absent = absent

    def __getattr__(self, attr):
        if attr.startswith("__"):
            raise AttributeError(attr)
        if attr in self._absent:
            raise ImportError(f"{self.__name__}.{attr} is not loaded while a config loads")
        return getattr(_real_module(self.__name__), attr)


_STAND_INS = {  # name: (attributes, absent names)
    "transformers.activations": (
        {"ACT2FN": _DeferredMapping("transformers.activations", "ACT2FN")}, frozenset()),
    "transformers.models.auto.modeling_auto": ({}, frozenset({"MODEL_MAPPING_NAMES"})),
}


_VISION = ("transformers.image_utils", "transformers.image_transforms", "transformers.video_utils")


def _forget(name: str, module) -> None:
    """Drop ``module`` from ``sys.modules`` and from its (lazy) parent package's attributes."""
    if sys.modules.get(name) is module:
        del sys.modules[name]
    parent, _, child = name.rpartition(".")
    cached = vars(sys.modules[parent]) if parent in sys.modules else {}
    if cached.get(child) is module:  # a lazy package keeps what it imported
        delattr(sys.modules[parent], child)


def _hide_torchvision() -> list:
    """Make transformers' ``is_torchvision_available`` false; returns what to restore."""
    hidden = []
    if any(name in sys.modules for name in _VISION):
        return hidden
    for name in ("transformers.utils", "transformers.utils.import_utils"):
        module = sys.modules.get(name)
        real = vars(module).get("is_torchvision_available") if module else None
        if real is not None:
            hidden.append((module, real))
            module.is_torchvision_available = lambda: False
    return hidden


@contextmanager
def config_imports():
    """Wrap loading a config or tokenizer with transformers (``AutoConfig``, ``AutoTokenizer``)."""
    added = {}
    for name, (attrs, absent) in _STAND_INS.items():
        if name not in sys.modules:
            added[name] = sys.modules[name] = _StandIn(name, attrs, absent)
    hidden = _hide_torchvision()
    try:
        yield
    finally:
        for name, stand_in in added.items():
            _forget(name, stand_in)
        for module, real in hidden:
            module.is_torchvision_available = real
        for name in _VISION if hidden else ():
            if name in sys.modules:
                _forget(name, sys.modules[name])
