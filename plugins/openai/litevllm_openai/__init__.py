"""``lite serve``: an OpenAI-compatible HTTP server for LitevLLM."""
