"""LitevLLM replicas on Ray Serve: ``lite serve --replicas N``."""
__version__ = "0.1.0"
