"""The plugin contract: pluggy hooks under the project name ``litevllm``.

Every hook receives a ``register`` callable; the core owns naming, priorities and conflicts.
Targets are ``"module:attr"`` strings, imported only when used, so listing plugins and
``lite --help`` import no model or kernel code.
"""
import pluggy

hookspec = pluggy.HookspecMarker("litevllm")
hookimpl = pluggy.HookimplMarker("litevllm")


@hookspec
def register_models(register):
    """Register model architectures.

    ``register(architecture, "module:Class", priority=0, override=False)``: ``architecture`` is the
    name in a checkpoint's ``config.json`` ``architectures`` list (e.g. ``"LlamaForCausalLM"``).
    Two plugins claiming one name is an error unless their priorities differ or one says
    ``override=True``; the higher priority wins.
    """


@hookspec
def register_attention_backends(register):
    """Register attention backends.

    ``register(name, "module:Class", devices=("cuda",), priority=0)``: the class subclasses
    ``litevllm.plugin_api.AttentionBackend``. ``kernels="auto"`` picks the highest-priority
    backend whose ``devices`` include the model's device type. ``explicit_devices=("cpu",)``
    lists devices it also runs on, but only when chosen by name (e.g. an interpreter).
    """


@hookspec
def register_ops(register):
    """Register op implementations.

    ``register(op_name, "module:function", provider="name", devices=("cuda",), priority=0)``: the
    function has the same signature as the torch reference in ``litevllm.ops.torch_ops``
    (``rms_norm``, ``rotary_embedding``, ``silu_and_mul``, ``gelu_tanh_and_mul``,
    ``reshape_and_cache``, ``fused_moe``, ``sample``, ...). ``kernels=provider`` selects it by name;
    naming a provider that serves neither ``devices`` nor ``explicit_devices`` of the model's
    device is an error.
    """


@hookspec
def register_quant_methods(register):
    """Register quantization methods.

    ``register(name, "module:Class")``: the class subclasses ``litevllm.plugin_api.QuantConfig``;
    ``name`` matches ``quantization_config.quant_method`` in a checkpoint or ``--quantization``.
    """


@hookspec
def register_checkpoint_formats(register):
    """Register checkpoint formats.

    ``register(name, "module:Class", priority=0)``: the class subclasses
    ``litevllm.plugin_api.CheckpointFormat``. Formats are tried by priority; the first whose
    ``detect(path)`` is true reads the checkpoint.
    """


@hookspec
def register_model_aliases(register):
    """Register short model names.

    ``register(alias, "module:function")``: ``function()`` returns the local path of the model,
    fetching it if needed. ``lite run --model ALIAS`` resolves through it.
    """


@hookspec
def register_structured_output_backends(register):
    """Register structured-output (guided decoding) backends.

    ``register(name, "module:Class", priority=0)``: the class subclasses
    ``litevllm.plugin_api.StructuredOutputBackend``. Requests with ``structured_outputs`` use
    the highest-priority backend.
    """


@hookspec
def register_commands(register):
    """Register CLI commands.

    ``register("module:attr")``: ``attr`` is a ``click.Command`` (or group) added to ``lite``.
    """
