from litevllm.plugin_api import hookimpl  # noqa: F401  (the plugin adds options to `lite serve`)

PLUGIN_API_VERSION = "1.0"  # the contract this plugin was written against
