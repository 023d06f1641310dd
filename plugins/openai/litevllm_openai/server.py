"""The OpenAI-compatible app (FastAPI) over the public engine API (``AsyncLLMEngine``)."""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.exceptions import HTTPException

from litevllm.plugin_api import EngineDeadError, EngineOverloadedError
from litevllm_openai.guard import Guard, TooLarge
from litevllm_openai.metrics import Metrics
from litevllm_openai.protocol import (ApiError, ChatRequest, CompletionRequest, DetokenizeRequest,
                                      Limits, TokenizeRequest, new_id, now, param_of)
from litevllm_openai.responses import Formatter
from litevllm_openai.streams import ClientGone, iterate_until_disconnect, merge, until_disconnect

log = logging.getLogger("litevllm.openai")


@dataclass
class ServerConfig:
    model_name: str
    api_key: str | None = None
    allowed_origins: list[str] = field(default_factory=list)
    max_request_bytes: int = 4 * 2**20
    limits: Limits = field(default_factory=Limits)


def build_app(engine, config: ServerConfig) -> FastAPI:
    """The ASGI app. ``engine`` is an ``AsyncLLMEngine``; the app never touches anything else."""
    app = FastAPI(title="LitevLLM OpenAI-compatible API", version="1", docs_url=None,
                  redoc_url=None)
    app.state.engine = engine  # for apps that mount or wrap this one
    metrics = Metrics(engine, config.model_name)
    texts: dict[int, str] = {}  # token id -> text, for logprobs (filled off the event loop)
    _handlers(app)

    def check_model(name: str | None) -> None:
        if name is not None and name != config.model_name:
            raise ApiError(f"the model '{name}' does not exist; this server serves "
                           f"'{config.model_name}'", "model", status=404)

    def card() -> dict:
        return {"id": config.model_name, "object": "model", "created": 0,
                "owned_by": "litevllm", "max_model_len": engine.max_model_len}

    def fill_texts(ids: set[int]) -> None:  # runs in the tokenizer pool
        for t in ids:
            if t not in texts:
                texts[t] = engine.decode([t]) if engine.tokenizer is not None else str(t)

    async def token_texts(fmt: Formatter, out, delta_only: bool) -> None:
        ids = fmt.needed_ids(out, delta_only)
        if ids - texts.keys():
            await engine.run_in_pool(fill_texts, ids)
        fmt.texts.update({t: texts[t] for t in ids})

    def encode(prompt, want_text: bool) -> tuple[str | None, list[int]]:
        """(text, token ids) of a string or token-id prompt (text only if ``want_text``)."""
        if isinstance(prompt, list):
            if any(not 0 <= t < engine.vocab_size for t in prompt):
                raise ApiError(f"prompt token ids must be in [0, {engine.vocab_size})", "prompt")
            if want_text and engine.tokenizer is not None:
                return engine.decode(prompt), prompt
            return None, prompt
        if engine.tokenizer is None:
            raise ApiError("this model has no tokenizer; send token ids", "prompt")
        return prompt, engine.encode(prompt)

    async def tokenize(prompts: list, want_text: bool) -> list[tuple[str | None, list[int]]]:
        try:
            return await engine.run_in_pool(lambda: [encode(p, want_text) for p in prompts])
        except ValueError as e:
            raise ApiError(str(e), "prompt") from None

    def check(ids: list[int], params, param: str) -> None:
        try:
            engine.check_request(ids, params)
        except ValueError as e:
            raise ApiError(str(e), param_of(str(e), param)) from None

    # routes ----------------------------------------------------------------------------------
    @app.get("/health")
    async def health():
        ok = engine.healthy()
        return JSONResponse({"status": "ok" if ok else "unavailable"}, 200 if ok else 503)

    @app.get("/metrics")
    async def prometheus():
        return Response(metrics.exposition(), media_type=CONTENT_TYPE_LATEST)

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": [card()]}

    @app.get("/v1/models/{model_id:path}")
    async def model(model_id: str):
        check_model(model_id)
        return card()

    @app.post("/tokenize")
    async def tokenize_route(body: TokenizeRequest):
        check_model(body.model)
        if (body.prompt is None) == (body.messages is None):
            raise ApiError("send either 'prompt' or 'messages'", "prompt")
        if body.messages is not None:
            ids = await _chat_ids(engine, body.messages)
        else:
            def run():
                return engine.tokenizer(body.prompt, add_special_tokens=body.add_special_tokens
                                        )["input_ids"]
            if engine.tokenizer is None:
                raise ApiError("this model has no tokenizer", "prompt")
            ids = await engine.run_in_pool(run)
        return {"tokens": list(ids), "count": len(ids), "max_model_len": engine.max_model_len}

    @app.post("/detokenize")
    async def detokenize_route(body: DetokenizeRequest):
        check_model(body.model)
        if any(not 0 <= t < engine.vocab_size for t in body.tokens):
            raise ApiError(f"token ids must be in [0, {engine.vocab_size})", "tokens")
        if engine.tokenizer is None:
            raise ApiError("this model has no tokenizer", "tokens")
        return {"prompt": await engine.run_in_pool(engine.decode, body.tokens)}

    @app.post("/v1/completions")
    async def completions(body: CompletionRequest, request: Request):
        check_model(body.model)
        body.check(config.limits)
        encoded = await tokenize(body.prompts(), want_text=body.echo)
        params = []
        for _, ids in encoded:
            p = body.params(engine.max_model_len - len(ids))
            check(ids, p, "prompt")
            params.append(p)
        rid = new_id("cmpl")
        fmt = Formatter("completion", rid, now(), config.model_name, body.n, body.logprobs,
                        echo=body.echo, echo_only=body.echo and body.max_tokens == 0)
        items = [({"prompt": text, "prompt_token_ids": ids}, sp)
                 for (text, ids), sp in zip(encoded, params)]
        return await _run(request, rid, items, fmt, body.stream, body.include_usage)

    @app.post("/v1/chat/completions")
    async def chat(body: ChatRequest, request: Request):
        check_model(body.model)
        body.check(config.limits)
        ids = await _chat_ids(engine, body.messages)
        params = body.params(engine.max_model_len - len(ids))
        check(ids, params, "messages")
        rid = new_id("chatcmpl")
        fmt = Formatter("chat", rid, now(), config.model_name, body.n,
                        (body.top_logprobs or 0) if body.logprobs else None)
        return await _run(request, rid, [({"prompt_token_ids": ids}, params)], fmt, body.stream,
                          body.include_usage)

    async def _run(request, rid, items, fmt: Formatter, stream: bool, include_usage: bool):
        gens = [engine.generate(prompt, params, f"{rid}-{i}", stream=stream)
                for i, (prompt, params) in enumerate(items)]
        if stream:
            return StreamingResponse(_sse(request, gens, fmt, include_usage),
                                     media_type="text/event-stream",
                                     headers={"Cache-Control": "no-cache"})
        final = [None] * len(gens)

        async def collect():
            async for i, out in merge(gens):
                if out.finished:
                    final[i] = out
        try:
            await until_disconnect(request, collect())
        except ClientGone:
            log.info("client went away: aborted %s", rid)
            return Response(status_code=499)
        errors = [o.error for o in final if o.error]
        if errors:
            raise ApiError(errors[0], status=500, type="server_error")
        for out in final:
            metrics.observe(out)
            await token_texts(fmt, out, delta_only=False)
        return fmt.response(final)

    async def _sse(request, gens, fmt: Formatter, include_usage: bool):
        final = [None] * len(gens)
        try:
            for i in range(len(gens)):
                for chunk in fmt.first_chunks(i):
                    yield _event(chunk)
            async for i, out in iterate_until_disconnect(request, merge(gens)):
                await token_texts(fmt, out, delta_only=True)
                for chunk in fmt.chunks(i, out):
                    yield _event(chunk)
                if out.error:
                    yield _event(fmt.error_chunk(out.error))
                if out.finished:
                    final[i] = out
                    metrics.observe(out)
            if include_usage and all(final):
                yield _event(fmt.usage_chunk(final))
        except ClientGone:
            log.info("client went away: aborted %s", fmt.head["id"])
            return
        except (EngineDeadError, EngineOverloadedError, ValueError) as e:  # headers are out
            yield _event(fmt.error_chunk(str(e)))
        except Exception:
            log.exception("stream failed")
            yield _event(fmt.error_chunk("internal error"))
        yield "data: [DONE]\n\n"

    return _wrap(app, config)


async def _chat_ids(engine, messages) -> list[int]:
    conversation = [m.as_dict() for m in messages]
    try:
        return await engine.run_in_pool(engine.apply_chat_template, conversation)
    except Exception as e:  # no template, or the template rejects these messages
        raise ApiError(f"chat template: {str(e).splitlines()[0] if str(e) else type(e).__name__}",
                       "messages") from None


def _event(body: dict) -> str:
    return f"data: {json.dumps(body)}\n\n"


def _handlers(app: FastAPI) -> None:
    """Every error as OpenAI-shaped JSON, with no paths, versions or tracebacks."""
    @app.exception_handler(ApiError)
    async def api_error(request, e: ApiError):
        return JSONResponse(e.body(), e.status, headers=e.headers)

    @app.exception_handler(EngineOverloadedError)
    async def overloaded(request, e: EngineOverloadedError):
        return _busy(str(e), retry=True)

    @app.exception_handler(EngineDeadError)
    async def dead(request, e: EngineDeadError):
        return _busy(str(e), retry=False)

    @app.exception_handler(ValueError)  # bad input the engine found after check_request
    async def bad_input(request, e: ValueError):
        return JSONResponse(ApiError(str(e).splitlines()[0] if str(e) else "invalid request").body(),
                            400)

    @app.exception_handler(RequestValidationError)
    async def invalid(request, e: RequestValidationError):
        errors = e.errors()
        first = errors[0] if errors else {}
        loc = [str(x) for x in first.get("loc", ()) if x != "body"]
        if first.get("type") == "json_invalid":
            return JSONResponse(ApiError("the body is not valid JSON").body(), 400)
        if not loc:
            message = "the body must be a JSON object"
        else:
            message = f"{'.'.join(loc)}: {first.get('msg', 'invalid value')}"
        return JSONResponse(ApiError(message, loc[0] if loc else None).body(), 400)

    @app.exception_handler(HTTPException)
    async def http_error(request, e: HTTPException):
        if isinstance(e.__cause__, TooLarge):
            return JSONResponse(ApiError("the request body is too large", status=413).body(), 413)
        if isinstance(e.__cause__, RecursionError) or e.status_code == 400:
            return JSONResponse(ApiError("the body is not valid JSON (or nested too deeply)").body(),
                                400)
        message = {404: "no such route", 405: "method not allowed"}.get(e.status_code, "error")
        return JSONResponse(ApiError(message, status=e.status_code).body(), e.status_code,
                            headers=getattr(e, "headers", None))

    @app.exception_handler(Exception)
    async def crash(request, e: Exception):
        log.exception("unhandled error")
        return JSONResponse(ApiError("internal error", status=500, type="server_error").body(), 500)


def _busy(message: str, retry: bool) -> JSONResponse:
    error = ApiError(message, status=503, type="server_error")
    return JSONResponse(error.body(), 503, headers={"Retry-After": "1"} if retry else None)


def _wrap(app: FastAPI, config: ServerConfig):
    """Middlewares outside FastAPI: CORS (only with --allowed-origins), then the guard."""
    app.add_middleware(Guard, api_key=config.api_key, max_request_bytes=config.max_request_bytes)
    if config.allowed_origins:
        from fastapi.middleware.cors import CORSMiddleware
        app.add_middleware(CORSMiddleware, allow_origins=config.allowed_origins,
                           allow_methods=["GET", "POST"], allow_headers=["*"])
    return app
