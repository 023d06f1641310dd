"""The OpenAI wire format as pydantic models (so /openapi.json is generated), and their
translation to SamplingParams. No HTTP and no engine here."""
from __future__ import annotations

import time
import uuid
from typing import Annotated, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr

from litevllm import SamplingParams

Number = Annotated[float, Field(strict=True, allow_inf_nan=False)]  # ints too; no bools, no inf
TokenIds = Annotated[list[StrictInt], Field(min_length=1)]


class ApiError(Exception):
    """An error sent to the client as OpenAI-shaped JSON."""

    def __init__(self, message: str, param: str | None = None, status: int = 400,
                 type: str = "invalid_request_error", headers: dict | None = None):
        super().__init__(message)
        self.message, self.param, self.status, self.type = message, param, status, type
        self.headers = headers

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param,
                          "code": None}}


class Limits(BaseModel):
    """Server-side caps on one request (``lite serve`` options)."""
    max_logprobs: int = 20
    max_n: int = 16
    max_stop: int = 64
    max_prompts: int = 256


class _Model(BaseModel):
    model_config = ConfigDict(extra="ignore")


class StreamOptions(_Model):
    include_usage: StrictBool = False


class _Sampling(_Model):
    """Fields both endpoints share, vLLM's extensions included."""
    model: Optional[StrictStr] = None
    n: StrictInt = Field(1, ge=1)
    temperature: Optional[Number] = Field(None, ge=0)
    top_p: Optional[Number] = Field(None, gt=0, le=1)
    top_k: Optional[StrictInt] = None
    min_p: Optional[Number] = Field(None, ge=0, le=1)
    seed: Optional[StrictInt] = None
    presence_penalty: Optional[Number] = Field(None, ge=-2, le=2)
    frequency_penalty: Optional[Number] = Field(None, ge=-2, le=2)
    repetition_penalty: Optional[Number] = Field(None, gt=0)
    stop: Union[StrictStr, list[StrictStr], None] = None
    stop_token_ids: Optional[list[StrictInt]] = None
    ignore_eos: StrictBool = False
    min_tokens: StrictInt = Field(0, ge=0)
    skip_special_tokens: StrictBool = True
    include_stop_str_in_output: StrictBool = False
    stream: StrictBool = False
    stream_options: Optional[StreamOptions] = None
    user: Optional[StrictStr] = None
    # accepted so clients that always send them work; any real use is refused (unsupported())
    logit_bias: Optional[dict[str, Number]] = None

    _copied = ("n", "temperature", "top_p", "top_k", "min_p", "seed", "presence_penalty",
               "frequency_penalty", "repetition_penalty", "stop", "stop_token_ids", "ignore_eos",
               "min_tokens", "skip_special_tokens", "include_stop_str_in_output")

    def unsupported(self) -> list[str]:
        return ["logit_bias"] if self.logit_bias else []

    def check(self, limits: Limits) -> None:
        """Server caps and the fields this server does not implement: 400 naming them."""
        names = self.unsupported()
        if names:
            raise ApiError(f"unsupported field(s): {', '.join(names)}", names[0])
        if self.n > limits.max_n:
            raise ApiError(f"'n' must be at most {limits.max_n}", "n")
        stops = [self.stop] if isinstance(self.stop, str) else self.stop or []
        if len(stops) + len(self.stop_token_ids or []) > limits.max_stop:
            raise ApiError(f"at most {limits.max_stop} stop strings and stop token ids", "stop")

    def sampling_params(self, **extra) -> SamplingParams:
        kwargs = {k: getattr(self, k) for k in self._copied if getattr(self, k) is not None}
        try:
            return SamplingParams(**kwargs, **extra)
        except (ValueError, TypeError) as e:
            raise ApiError(str(e), param_of(str(e))) from None

    @property
    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)


class CompletionRequest(_Sampling):
    prompt: Union[StrictStr, TokenIds, Annotated[list[StrictStr], Field(min_length=1)],
                  Annotated[list[TokenIds], Field(min_length=1)]]
    max_tokens: Optional[StrictInt] = Field(16, ge=0)
    logprobs: Optional[StrictInt] = Field(None, ge=0)
    echo: StrictBool = False
    best_of: Optional[StrictInt] = None
    suffix: Optional[StrictStr] = None

    def unsupported(self) -> list[str]:
        names = super().unsupported()
        if self.best_of not in (None, 1, self.n):
            names.append("best_of")
        return names + (["suffix"] if self.suffix else [])

    def check(self, limits: Limits) -> None:
        super().check(limits)
        if (self.logprobs or 0) > limits.max_logprobs:
            raise ApiError(f"'logprobs' must be at most {limits.max_logprobs}", "logprobs")
        if self.max_tokens == 0 and not self.echo:
            raise ApiError("'max_tokens' must be at least 1 (0 only with 'echo')", "max_tokens")
        if len(self.prompts()) > limits.max_prompts:
            raise ApiError(f"at most {limits.max_prompts} prompts per request", "prompt")

    def prompts(self) -> list:
        """Each prompt: a string or a list of token ids."""
        p = self.prompt
        if isinstance(p, str) or (p and isinstance(p[0], int)):
            return [p]
        return list(p)

    def params(self) -> SamplingParams:
        echo_logprobs = self.logprobs if self.echo and self.logprobs is not None else None
        return self.sampling_params(max_tokens=max(1, self.max_tokens or 0) if self.max_tokens is not None
                                    else None, logprobs=self.logprobs,
                                    prompt_logprobs=echo_logprobs)


class TextPart(_Model):
    type: Literal["text"]
    text: StrictStr


class ChatMessage(_Model):
    role: StrictStr
    content: Union[StrictStr, list[TextPart], None] = None
    name: Optional[StrictStr] = None

    def as_dict(self) -> dict:
        content = self.content
        if isinstance(content, list):
            content = "".join(p.text for p in content)
        out = {"role": self.role, "content": content or ""}
        return {**out, "name": self.name} if self.name else out


class ChatRequest(_Sampling):
    messages: Annotated[list[ChatMessage], Field(min_length=1)]
    max_tokens: Optional[StrictInt] = Field(None, ge=1)
    max_completion_tokens: Optional[StrictInt] = Field(None, ge=1)
    logprobs: StrictBool = False
    top_logprobs: Optional[StrictInt] = Field(None, ge=0)
    tools: Optional[list[dict]] = None
    tool_choice: Union[StrictStr, dict, None] = None
    parallel_tool_calls: Optional[StrictBool] = None
    response_format: Optional[dict] = None
    functions: Optional[list[dict]] = None
    function_call: Union[StrictStr, dict, None] = None

    def unsupported(self) -> list[str]:
        names = super().unsupported()
        names += [n for n in ("tools", "functions") if getattr(self, n)]
        names += [n for n in ("tool_choice", "function_call")
                  if getattr(self, n) not in (None, "none", "auto")]
        if self.response_format and self.response_format.get("type") != "text":
            names.append("response_format")
        return names

    def check(self, limits: Limits) -> None:
        super().check(limits)
        if (self.top_logprobs or 0) > limits.max_logprobs:
            raise ApiError(f"'top_logprobs' must be at most {limits.max_logprobs}", "top_logprobs")
        if self.top_logprobs is not None and not self.logprobs:
            raise ApiError("'top_logprobs' needs 'logprobs': true", "top_logprobs")

    def params(self, room: int) -> SamplingParams:
        """``room``: context tokens left after the prompt (the default max_tokens)."""
        max_tokens = self.max_completion_tokens or self.max_tokens or max(1, room)
        return self.sampling_params(max_tokens=max_tokens,
                                    logprobs=(self.top_logprobs or 0) if self.logprobs else None)


class TokenizeRequest(_Model):
    model: Optional[StrictStr] = None
    prompt: Optional[StrictStr] = None
    messages: Optional[Annotated[list[ChatMessage], Field(min_length=1)]] = None
    add_special_tokens: StrictBool = True


class DetokenizeRequest(_Model):
    model: Optional[StrictStr] = None
    tokens: list[StrictInt]


def param_of(message: str, default: str | None = None) -> str | None:
    """The request field a SamplingParams / engine error message names."""
    import re
    m = re.search(r"SamplingParams\.(\w+)", message)
    return m.group(1) if m else default


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex}"


def now() -> int:
    return int(time.time())
