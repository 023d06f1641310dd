"""``StructuredOutputsParams``: constrain a request's output, shaped like vLLM's."""
from __future__ import annotations

import json
from dataclasses import dataclass

KINDS = ("json", "regex", "choice", "grammar")


@dataclass(frozen=True)
class StructuredOutputsParams:
    """Exactly one of: ``json`` (a JSON schema, as a dict or a JSON string), ``regex``,
    ``choice`` (a list of strings; the output is one of them) or ``grammar`` (EBNF, GBNF
    style with a ``root`` rule)."""
    json: dict | str | bool | None = None
    regex: str | None = None
    choice: tuple[str, ...] | list[str] | None = None
    grammar: str | None = None

    def __post_init__(self):
        given = [k for k in KINDS if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(f"StructuredOutputsParams needs exactly one of {', '.join(KINDS)}; "
                             f"got {', '.join(given) or 'none'}")
        if self.choice is not None:
            if not isinstance(self.choice, (list, tuple)) or not self.choice or \
                    not all(isinstance(c, str) and c for c in self.choice):
                raise ValueError("StructuredOutputsParams.choice must be a non-empty list of "
                                 "non-empty strings")
            object.__setattr__(self, "choice", tuple(self.choice))
        for name in ("regex", "grammar"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, str) or not value):
                raise ValueError(f"StructuredOutputsParams.{name} must be a non-empty string")
        if self.json is not None:
            schema = self.json
            if isinstance(schema, str):
                try:
                    schema = json.loads(schema)
                except json.JSONDecodeError as e:
                    raise ValueError(f"StructuredOutputsParams.json is not valid JSON: {e}") from None
            if not isinstance(schema, (dict, bool)):
                raise ValueError("StructuredOutputsParams.json must be a JSON schema (an object)")

    @property
    def kind(self) -> str:
        return next(k for k in KINDS if getattr(self, k) is not None)

    @property
    def spec(self):
        """The constraint itself; a JSON schema as a canonical string."""
        value = getattr(self, self.kind)
        if self.kind == "json" and not isinstance(value, str):
            return json.dumps(value, sort_keys=True)
        return value

    def key(self) -> tuple:
        """Cache key of the compiled grammar."""
        return self.kind, self.spec
