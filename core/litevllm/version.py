__version__ = "0.1.0"
# The contract plugins are written against. Minor: additions only. Major: breaking changes.
PLUGIN_API_VERSION = "1.0"
