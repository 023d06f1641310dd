"""The HTTP server (standard library only). One engine thread owns the LLMEngine; HTTP handler
threads send it requests through an inbox and read the outputs from a queue of their own."""
from __future__ import annotations

import json
import logging
import queue
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from litevllm_openai.protocol import (ApiError, ApiRequest, Formatter, param_of, parse_chat,
                                      parse_completion)

log = logging.getLogger("litevllm.openai")


class EngineLoop:
    """The only thread that touches the engine (and its tokenizer).

    Inbox messages: ``("add", ApiRequest, queue)`` and ``("abort", request_id)``; ``None`` stops.
    A request's queue receives ``("accepted",)`` or ``("error", ApiError)``, then
    ``("output", RequestOutput, token_texts)``: per step while it streams, else once finished."""

    def __init__(self, llm):
        self.llm, self.engine = llm, llm.engine
        self.inbox: queue.Queue = queue.Queue()
        # id -> (queue, wants logprobs, streams)
        self.queues: dict[str, tuple[queue.Queue, bool, bool]] = {}
        self.aborted = 0                   # requests aborted because their client went away
        self._texts: dict[int, str] = {}   # token id -> text, for logprobs
        self.thread = threading.Thread(target=self._run, name="litevllm-engine", daemon=True)
        self.thread.start()

    @property
    def alive(self) -> bool:
        return self.thread.is_alive()

    def submit(self, req: ApiRequest) -> queue.Queue:
        q: queue.Queue = queue.Queue()
        self.inbox.put(("add", req, q))
        return q

    def abort(self, request_id: str) -> None:
        self.inbox.put(("abort", request_id))  # a no-op for a finished request

    def stop(self, timeout: float = 10.0) -> None:
        self.inbox.put(None)
        self.thread.join(timeout)

    # engine thread -------------------------------------------------------------------------
    def _run(self):
        while True:
            # sleep on the inbox while idle; otherwise take what is there and step
            msgs = [self.inbox.get()] if not self.engine.has_unfinished_requests() else []
            while True:
                try:
                    msgs.append(self.inbox.get_nowait())
                except queue.Empty:
                    break
            for msg in msgs:
                if msg is None:
                    return self._fail_all(ApiError("the server is shutting down", status=503,
                                                   type="server_error"))
                if msg[0] == "add":
                    self._add(*msg[1:])
                elif self.queues.pop(msg[1], None) is not None:  # abort a running request
                    self._abort(msg[1])
            if self.engine.has_unfinished_requests():
                self._step()

    def _abort(self, rid: str):
        try:
            self.engine.abort_request(rid)
            self.aborted += 1
        except ValueError:  # already gone
            pass

    def _add(self, req: ApiRequest, q: queue.Queue):
        prompt = req.prompt
        try:
            if req.kind == "chat":
                prompt = {"prompt_token_ids": self.llm.apply_chat_template(prompt)}
        except Exception as e:  # no template, or the template rejects these messages
            return q.put(("error", ApiError(f"chat template: {e}", "messages")))
        try:
            self.engine.add_request(req.id, prompt, req.params)
        except ValueError as e:  # bad for this model (too long, ids out of range, ...)
            return q.put(("error", ApiError(str(e), param_of(str(e), req.prompt_param))))
        except Exception as e:
            log.exception("add_request failed")
            return q.put(("error", ApiError(f"internal error: {e}", status=500, type="server_error")))
        self.queues[req.id] = (q, req.params.logprobs is not None, req.stream)
        q.put(("accepted",))

    def _step(self):
        try:
            # unfinished outputs only when someone streams them
            outputs = self.engine.step(unfinished_outputs=any(s for *_, s in self.queues.values()))
        except Exception as e:
            log.exception("engine step failed")
            return self._fail_all(ApiError(f"engine error: {e}", status=500, type="server_error"))
        for out in outputs:
            q, wants_logprobs, streams = self.queues.get(out.request_id, (None, False, False))
            if q is None or not (streams or out.finished):
                continue
            q.put(("output", out, self._token_texts(out, streams) if wants_logprobs else None))
            if out.finished:
                del self.queues[out.request_id]

    def _token_texts(self, out, delta_only: bool) -> dict[int, str]:
        """Text of every token in this step's logprobs (all of them unless ``delta_only``);
        the tokenizer stays on this thread."""
        ids = {t for o in out.outputs if o.logprobs
               for e in o.logprobs[len(o.logprobs) - len(o.delta_token_ids) if delta_only else 0:]
               if e for t in e}
        tok = self.engine.tokenizer
        for t in ids - self._texts.keys():
            self._texts[t] = tok.decode([t]) if tok is not None else str(t)
        return {t: self._texts[t] for t in ids}

    def _fail_all(self, error: ApiError):
        for rid, (q, *_) in list(self.queues.items()):
            try:
                self.engine.abort_request(rid)
            except Exception:
                pass
            q.put(("error", error))
        self.queues.clear()


class Handler(BaseHTTPRequestHandler):
    server: "OpenAIServer"
    server_version = "litevllm-openai"
    timeout = 300  # seconds a stalled client may hold a socket

    def log_message(self, fmt, *args):
        log.debug("%s " + fmt, self.address_string(), *args)

    def do_GET(self):
        path = self.path.split("?")[0]
        if path == "/v1/models":
            self._json(200, self.server.models())
        elif path == "/health":
            ok = self.server.loop.alive
            self._json(200 if ok else 503, {"status": "ok" if ok else "engine stopped"})
        else:
            self._json(404, ApiError(f"no route GET {path}", status=404).body())

    def do_POST(self):
        path = self.path.split("?")[0]
        parse = {"/v1/completions": parse_completion, "/v1/chat/completions": parse_chat}.get(path)
        try:
            if parse is None:
                raise ApiError(f"no route POST {path}", status=404)
            self._generate(parse(self._body(), self.server.model_name))
        except ApiError as e:  # raised before any response byte was sent
            try:
                self._json(e.status, e.body())
            except OSError:
                pass

    def _body(self):
        try:
            length = int(self.headers.get("Content-Length") or 0)
            return json.loads(self.rfile.read(length) if length > 0 else b"")
        except (ValueError, UnicodeDecodeError) as e:
            raise ApiError(f"the body is not valid JSON ({e})") from None

    def _generate(self, req: ApiRequest):
        fmt, q = Formatter(req, self.server.model_name), self.server.loop.submit(req)
        try:
            msg = self._wait(q)
            if msg[0] == "error":
                raise msg[1]
            if req.stream:
                self._stream(req, fmt, q)
            else:
                while msg[0] != "output" or not msg[1].finished:
                    msg = self._wait(q)
                    if msg[0] == "error":
                        raise msg[1]
                    fmt.texts.update(msg[2] or {})
                self._json(200, fmt.response(msg[1]))
        except OSError:  # the client went away
            log.info("client disconnected: aborting %s", req.id)
        finally:
            self.server.loop.abort(req.id)  # frees the engine's blocks if still running

    def _stream(self, req: ApiRequest, fmt: Formatter, q: queue.Queue):
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.end_headers()  # HTTP/1.0: the stream ends when the connection closes
        for chunk in fmt.first_chunks():
            self._event(chunk)
        while True:
            try:
                msg = self._wait(q)
            except ApiError as e:
                msg = ("error", e)
            if msg[0] == "error":  # headers are out: the error goes in the stream
                self._event(msg[1].body())
                break
            _, out, texts = msg
            fmt.texts.update(texts or {})
            for chunk in fmt.chunks(out):
                self._event(chunk)
            if out.finished:
                if req.include_usage:
                    self._event(fmt.usage_chunk(out))
                break
        self.wfile.write(b"data: [DONE]\n\n")

    def _wait(self, q: queue.Queue):
        while True:
            try:
                return q.get(timeout=1.0)
            except queue.Empty:
                if not self.server.loop.alive:
                    raise ApiError("the engine is not running", status=503,
                                   type="server_error") from None

    def _event(self, body: dict):
        self.wfile.write(b"data: " + json.dumps(body).encode() + b"\n\n")

    def _json(self, status: int, body: dict):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


class OpenAIServer(ThreadingHTTPServer):
    """``OpenAIServer(llm, name, host, port).serve_forever()``; port 0 picks a free port."""

    daemon_threads = True
    request_queue_size = 128

    def __init__(self, llm, model_name: str, host: str = "127.0.0.1", port: int = 8000):
        self.llm, self.model_name = llm, model_name
        super().__init__((host, port), Handler)  # bind first: a busy port fails here
        self.loop = EngineLoop(llm)

    @property
    def port(self) -> int:
        return self.server_address[1]

    def models(self) -> dict:
        return {"object": "list", "data": [{
            "id": self.model_name, "object": "model", "created": 0, "owned_by": "litevllm",
            "max_model_len": self.llm.engine.max_model_len}]}

    def close(self):
        """Stop the engine thread and close the socket (after ``shutdown()`` if serving)."""
        self.server_close()
        self.loop.stop()
