"""Hook implementations. Kept tiny: registration names ``"module:attr"`` strings, so listing
plugins (``lite plugins``) never imports torch or the model code."""
from litevllm.plugin_api import hookimpl

# The plugin API this plugin was written for: litevllm refuses to load it, with a clear
# message, if its own API has a different major version (or an older minor one).
PLUGIN_API_VERSION = "1.0"


@hookimpl
def register_models(register):
    register("Phi3ForCausalLM", "litevllm_phi3.model:Phi3ForCausalLM")
