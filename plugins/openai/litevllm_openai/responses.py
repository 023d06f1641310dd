"""Response bodies and stream chunks built from RequestOutputs (completions and chat)."""
from __future__ import annotations


def finish_reason(reason: str | None) -> str | None:
    return None if reason is None else reason if reason in ("length", "abort", "error") else "stop"


def _lp(x) -> float | None:
    return None if x is None else max(float(x), -9999.0)  # -inf is not valid JSON


class Formatter:
    """Bodies for one request of one or more prompts: choice ``i * n + j`` is sample ``j`` of
    prompt ``i``. ``texts`` maps token ids to their text (for logprobs), filled by the server
    off the event loop before each call (``needed_ids``)."""

    def __init__(self, kind: str, request_id: str, created: int, model: str, n: int,
                 logprobs: int | None = None, echo: bool = False, echo_only: bool = False):
        self.chat = kind == "chat"
        self.head = {"id": request_id, "created": created, "model": model}
        self.n, self.logprobs, self.echo, self.echo_only = n, logprobs, echo, echo_only
        self.texts: dict[int, str] = {}
        self.done: set[int] = set()        # choices whose final chunk was sent
        self.started: set[int] = set()     # choices that sent their first chunk
        self.offsets: dict[int, int] = {}  # completion logprobs: text offset per choice

    # which token texts are needed ------------------------------------------------------------
    def needed_ids(self, out, delta_only: bool) -> set[int]:
        ids: set[int] = set()
        if self.logprobs is not None:
            for o in out.outputs:
                entries = o.logprobs or []
                if delta_only:
                    entries = entries[len(entries) - len(o.delta_token_ids):]
                ids.update(t for e in entries if e for t in e)
        if self.echo and self.logprobs is not None:
            ids.update(out.prompt_token_ids)
            ids.update(t for e in out.prompt_logprobs or [] if e for t in e)
        return ids - self.texts.keys()

    # pieces ----------------------------------------------------------------------------------
    def _object(self, chunk: bool) -> str:
        if self.chat:
            return "chat.completion.chunk" if chunk else "chat.completion"
        return "text_completion"

    def _outputs(self, out):
        """(choice index, text, token ids, logprob entries, finish reason) per sample; echo
        with max_tokens 0 drops the one token sampled."""
        for o in out.outputs:
            if self.echo_only:
                yield o, "", [], [], "length" if o.finish_reason else None
            else:
                yield o, o.text, o.token_ids, o.logprobs or [], finish_reason(o.finish_reason)

    def _chat_logprobs(self, ids, entries) -> dict:
        def item(t, lp):
            s = self.texts.get(t, "")
            return {"token": s, "logprob": _lp(lp), "bytes": list(s.encode())}
        k = self.logprobs or 0
        return {"content": [{**item(t, (e or {}).get(t, float("-inf"))), "top_logprobs": [
            item(a, b) for a, b in sorted((e or {}).items(), key=lambda kv: -kv[1])[:k]]}
            for t, e in zip(ids, entries)]}

    def _completion_logprobs(self, index, ids, entries, first_none: bool = False) -> dict:
        tokens = [self.texts.get(t, "") for t in ids]
        offsets, pos = [], self.offsets.get(index, 0)
        for s in tokens:
            offsets.append(pos)
            pos += len(s)
        self.offsets[index] = pos
        token_lps = [_lp((e or {}).get(t, float("-inf"))) for t, e in zip(ids, entries)]
        tops = [{self.texts.get(a, ""): _lp(b) for a, b in (e or {}).items()} for e in entries]
        if first_none and ids:  # the first prompt token has no logprob
            token_lps[0], tops[0] = None, None
        return {"tokens": tokens, "token_logprobs": token_lps, "top_logprobs": tops,
                "text_offset": offsets}

    def _echo_prefix(self, index, out) -> tuple[str, dict | None]:
        """Prompt text and (with logprobs) its logprobs, for the first piece of a choice."""
        text = out.prompt if out.prompt is not None else "".join(
            self.texts.get(t, "") for t in out.prompt_token_ids)
        if self.logprobs is None:
            return text, None
        ids = out.prompt_token_ids
        entries = list(out.prompt_logprobs or [None] * len(ids))
        return text, self._completion_logprobs(index, ids, entries, first_none=True)

    def _choice_logprobs(self, index, ids, entries, prefix_lp) -> dict | None:
        if self.logprobs is None:
            return None
        if self.chat:
            return self._chat_logprobs(ids, entries)
        lp = self._completion_logprobs(index, ids, entries)
        if prefix_lp is not None:
            lp = {k: prefix_lp[k] + lp[k] for k in lp}
        return lp

    # streaming -------------------------------------------------------------------------------
    def first_chunks(self, prompt_index: int) -> list[dict]:
        """Chat streams open each choice with the assistant role."""
        if not self.chat:
            return []
        return [self._chunk(prompt_index * self.n + j, None, None, None, role=True)
                for j in range(self.n)]

    def chunks(self, prompt_index: int, out) -> list[dict]:
        """Chunks for what one engine step added to ``out``."""
        result = []
        for o, _, _, _, reason in self._outputs(out):
            index = prompt_index * self.n + o.index
            if index in self.done:
                continue
            ids = [] if self.echo_only else o.delta_token_ids
            text = "" if self.echo_only else o.delta_text
            prefix, prefix_lp = "", None
            if self.echo and index not in self.started:
                prefix, prefix_lp = self._echo_prefix(index, out)
            # completions send every step's tokens, even without text (no tokenizer, held-back
            # bytes), so clients can time them; chat sends no empty deltas
            timed = ids and (not self.chat or self.logprobs is not None)
            if not (text or prefix or reason or timed):
                continue
            self.started.add(index)
            entries = (o.logprobs or [])[len(o.logprobs or []) - len(ids):] if ids else []
            lp = self._choice_logprobs(index, ids, entries, prefix_lp)
            if reason:
                self.done.add(index)
            result.append(self._chunk(index, prefix + text, lp, reason))
        return result

    def _chunk(self, index, text, lp, reason, role=False) -> dict:
        if self.chat:
            delta = {"role": "assistant", "content": ""} if role else \
                ({"content": text} if text else {})
            choice = {"index": index, "delta": delta, "logprobs": lp, "finish_reason": reason}
        else:
            choice = {"index": index, "text": text or "", "logprobs": lp, "finish_reason": reason}
        return {**self.head, "object": self._object(True), "choices": [choice]}

    def error_chunk(self, message: str) -> dict:
        return {"error": {"message": message, "type": "server_error", "param": None, "code": None}}

    def usage_chunk(self, outs) -> dict:
        return {**self.head, "object": self._object(True), "choices": [], "usage": self.usage(outs)}

    # one JSON response -------------------------------------------------------------------------
    def usage(self, outs) -> dict:
        prompt = sum(len(o.prompt_token_ids) for o in outs)
        completion = 0 if self.echo_only else \
            sum(len(c.token_ids) for o in outs for c in o.outputs)
        return {"prompt_tokens": prompt, "completion_tokens": completion,
                "total_tokens": prompt + completion}

    def response(self, outs) -> dict:
        """The whole body for the final outputs of every prompt, in prompt order."""
        choices = []
        for i, out in enumerate(outs):
            for o, text, ids, entries, reason in self._outputs(out):
                index = i * self.n + o.index
                prefix, prefix_lp = self._echo_prefix(index, out) if self.echo else ("", None)
                lp = self._choice_logprobs(index, ids, entries, prefix_lp)
                if self.chat:
                    choices.append({"index": index, "logprobs": lp, "finish_reason": reason,
                                    "message": {"role": "assistant", "content": text}})
                else:
                    choices.append({"index": index, "text": prefix + text, "logprobs": lp,
                                    "finish_reason": reason})
        return {**self.head, "object": self._object(False), "choices": choices,
                "usage": self.usage(outs)}
