"""Structured outputs: request parameters, the backend contract, the engine-side manager."""
