"""The OpenAI wire format: request bodies parsed into SamplingParams, and response bodies and
stream chunks built from RequestOutputs. No HTTP and no engine here."""
from __future__ import annotations

import re
import time
import uuid
from dataclasses import dataclass, field

from litevllm import SamplingParams

# body field -> SamplingParams field, shared by both endpoints (vLLM extensions included)
_SAMPLING_FIELDS = ("n", "temperature", "top_p", "top_k", "min_p", "seed", "presence_penalty",
                    "frequency_penalty", "repetition_penalty", "stop", "stop_token_ids",
                    "ignore_eos", "min_tokens", "skip_special_tokens", "include_stop_str_in_output")
_BOOL_FIELDS = ("stream", "ignore_eos", "skip_special_tokens", "include_stop_str_in_output", "echo")


class ApiError(Exception):
    """An error sent to the client as OpenAI-style JSON."""

    def __init__(self, message: str, param: str | None = None, status: int = 400,
                 type: str = "invalid_request_error"):
        super().__init__(message)
        self.message, self.param, self.status, self.type = message, param, status, type

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param,
                          "code": None}}


@dataclass
class ApiRequest:
    kind: str                          # "completion" | "chat"
    prompt: object                     # str | {"prompt_token_ids": [...]} | chat messages
    params: SamplingParams
    stream: bool = False
    include_usage: bool = False        # stream_options.include_usage
    top_logprobs: int | None = None    # chat: alternatives reported per token
    id: str = ""
    created: int = field(default_factory=lambda: int(time.time()))

    def __post_init__(self):
        prefix = "chatcmpl" if self.kind == "chat" else "cmpl"
        self.id = self.id or f"{prefix}-{uuid.uuid4().hex}"

    @property
    def prompt_param(self) -> str:
        return "messages" if self.kind == "chat" else "prompt"


def param_of(message: str, default: str | None = None) -> str | None:
    """The request field a SamplingParams / engine error message names."""
    m = re.search(r"SamplingParams\.(\w+)", message)
    return m.group(1) if m else default


def _sampling_params(body: dict, **extra) -> SamplingParams:
    kwargs = {k: body[k] for k in _SAMPLING_FIELDS if body.get(k) is not None}
    kwargs.update(extra)  # endpoint-specific fields, None included
    try:
        return SamplingParams(**kwargs)
    except (ValueError, TypeError) as e:
        raise ApiError(str(e), param_of(str(e))) from None


def _common(body, model_name: str) -> dict:
    if not isinstance(body, dict):
        raise ApiError("the request body must be a JSON object")
    model = body.get("model")
    if model is not None and model != model_name:
        raise ApiError(f"the model '{model}' does not exist; this server serves '{model_name}'",
                       "model")
    for name in _BOOL_FIELDS:
        if body.get(name) is not None and not isinstance(body[name], bool):
            raise ApiError(f"'{name}' must be a boolean", name)
    if body.get("echo"):
        raise ApiError("'echo' is not supported", "echo")
    options = body.get("stream_options") or {}
    if not isinstance(options, dict):
        raise ApiError("'stream_options' must be an object", "stream_options")
    return {"stream": bool(body.get("stream")), "include_usage": bool(options.get("include_usage"))}


def parse_completion(body, model_name: str) -> ApiRequest:
    """POST /v1/completions: one prompt, a string or a list of token ids."""
    common = _common(body, model_name)
    prompt = body.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], (str, list)):
        prompt = prompt[0]  # a batch of one
    if isinstance(prompt, list) and prompt and all(
            isinstance(t, int) and not isinstance(t, bool) for t in prompt):
        prompt = {"prompt_token_ids": prompt}
    elif not isinstance(prompt, str):
        raise ApiError("'prompt' must be a string or a list of token ids (one prompt per request)",
                       "prompt")
    max_tokens = 16 if body.get("max_tokens") is None else body["max_tokens"]  # OpenAI default
    params = _sampling_params(body, max_tokens=max_tokens, logprobs=body.get("logprobs"))
    return ApiRequest("completion", prompt, params, **common)


def parse_messages(messages) -> list[dict]:
    if not isinstance(messages, list) or not messages:
        raise ApiError("'messages' must be a non-empty list of messages", "messages")
    out = []
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or not isinstance(m.get("role"), str):
            raise ApiError(f"messages[{i}] must be an object with a string 'role'", "messages")
        content = m.get("content")
        if isinstance(content, list):  # content parts: text only
            if not all(isinstance(p, dict) and p.get("type") == "text"
                       and isinstance(p.get("text"), str) for p in content):
                raise ApiError(f"messages[{i}]: only text content parts are supported", "messages")
            content = "".join(p["text"] for p in content)
        elif content is None:
            content = ""
        elif not isinstance(content, str):
            raise ApiError(f"messages[{i}].content must be a string or a list of parts", "messages")
        out.append({**m, "content": content})
    return out


def parse_chat(body, model_name: str) -> ApiRequest:
    """POST /v1/chat/completions: messages go through the model's chat template."""
    common = _common(body, model_name)
    messages = parse_messages(body.get("messages"))
    if body.get("logprobs") is not None and not isinstance(body["logprobs"], bool):
        raise ApiError("'logprobs' must be a boolean", "logprobs")
    top = body.get("top_logprobs")
    if top is not None and (isinstance(top, bool) or not isinstance(top, int) or not 0 <= top <= 20):
        raise ApiError("'top_logprobs' must be an integer in [0, 20]", "top_logprobs")
    if top is not None and not body.get("logprobs"):
        raise ApiError("'top_logprobs' needs 'logprobs': true", "top_logprobs")
    want = (top or 0) if body.get("logprobs") else None
    max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
    params = _sampling_params(body, max_tokens=max_tokens, logprobs=want)  # None: to the context end
    return ApiRequest("chat", messages, params, top_logprobs=want, **common)


# responses -------------------------------------------------------------------------------------
def finish_reason(reason: str | None) -> str | None:
    return None if reason is None else reason if reason in ("length", "abort") else "stop"


def usage(out) -> dict:
    prompt = len(out.prompt_token_ids)
    completion = sum(len(o.token_ids) for o in out.outputs)
    return {"prompt_tokens": prompt, "completion_tokens": completion,
            "total_tokens": prompt + completion}


def _lp(x: float) -> float:
    return max(float(x), -9999.0)  # -inf is not valid JSON


class Formatter:
    """Response bodies and stream chunks for one request. ``texts`` maps token ids to their
    text for logprobs (filled from the engine thread's messages)."""

    def __init__(self, req: ApiRequest, model_name: str):
        self.req, self.model = req, model_name
        self.chat = req.kind == "chat"
        self.want_logprobs = req.params.logprobs is not None
        self.texts: dict[int, str] = {}
        self.done: set[int] = set()      # choices whose final chunk was sent
        self.offsets: dict[int, int] = {}  # completion logprobs: text offset per choice

    def _head(self, obj: str) -> dict:
        return {"id": self.req.id, "object": obj, "created": self.req.created, "model": self.model}

    def _logprobs(self, index: int, ids: list[int], entries: list) -> dict:
        entries = [e or {} for e in entries]
        if self.chat:
            def item(t, lp):
                s = self.texts.get(t, "")
                return {"token": s, "logprob": _lp(lp), "bytes": list(s.encode())}
            k = self.req.top_logprobs or 0
            return {"content": [{**item(t, e.get(t, float("-inf"))), "top_logprobs": [
                item(a, b) for a, b in sorted(e.items(), key=lambda kv: -kv[1])[:k]]}
                for t, e in zip(ids, entries)]}
        tokens = [self.texts.get(t, "") for t in ids]
        offsets, pos = [], self.offsets.get(index, 0)
        for s in tokens:
            offsets.append(pos)
            pos += len(s)
        self.offsets[index] = pos
        return {"tokens": tokens, "token_logprobs": [_lp(e.get(t, float("-inf")))
                                                     for t, e in zip(ids, entries)],
                "top_logprobs": [{self.texts.get(a, ""): _lp(b) for a, b in e.items()}
                                 for e in entries],
                "text_offset": offsets}

    # streaming
    def first_chunks(self) -> list[dict]:
        """Chat streams open each choice with the assistant role."""
        if not self.chat:
            return []
        return [self._chunk(i, None, None, None, role=True) for i in range(self.req.params.n)]

    def chunks(self, out) -> list[dict]:
        """Chunks for what one engine step added to ``out``."""
        result = []
        for o in out.outputs:
            if o.index in self.done:
                continue
            ids, reason = o.delta_token_ids, finish_reason(o.finish_reason)
            if not (o.delta_text or reason or (self.want_logprobs and ids)):
                continue
            lp = None
            if self.want_logprobs and o.logprobs is not None:
                lp = self._logprobs(o.index, ids, o.logprobs[len(o.logprobs) - len(ids):])
            if reason:
                self.done.add(o.index)
            result.append(self._chunk(o.index, o.delta_text, lp, reason))
        return result

    def _chunk(self, index, text, lp, reason, role=False) -> dict:
        if self.chat:
            delta = {"role": "assistant", "content": ""} if role else \
                ({"content": text} if text else {})
            choice = {"index": index, "delta": delta, "logprobs": lp, "finish_reason": reason}
            return {**self._head("chat.completion.chunk"), "choices": [choice]}
        choice = {"index": index, "text": text, "logprobs": lp, "finish_reason": reason}
        return {**self._head("text_completion"), "choices": [choice]}

    def usage_chunk(self, out) -> dict:
        obj = "chat.completion.chunk" if self.chat else "text_completion"
        return {**self._head(obj), "choices": [], "usage": usage(out)}

    # one JSON response
    def response(self, out) -> dict:
        choices = []
        for o in out.outputs:
            lp = None
            if self.want_logprobs and o.logprobs is not None:
                lp = self._logprobs(o.index, o.token_ids, o.logprobs)
            reason = finish_reason(o.finish_reason)
            if self.chat:
                choices.append({"index": o.index, "logprobs": lp, "finish_reason": reason,
                                "message": {"role": "assistant", "content": o.text}})
            else:
                choices.append({"index": o.index, "text": o.text, "logprobs": lp,
                                "finish_reason": reason})
        obj = "chat.completion" if self.chat else "text_completion"
        return {**self._head(obj), "choices": choices, "usage": usage(out)}
