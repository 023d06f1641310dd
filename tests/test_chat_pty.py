"""`lite run` chat in a pseudo-terminal: Ctrl-C stops a reply and keeps the conversation."""
import json
import sys

import pytest

pexpect = pytest.importorskip("pexpect")

# the real CLI, with apply_chat_template wrapped to print the conversation each reply sees
SPY = """
import json, sys
from litevllm.llm import LLM
template = LLM.apply_chat_template
def spy(self, conversation, chat_template=None):
    print("[sees]", json.dumps([m["content"] for m in conversation]), file=sys.stderr, flush=True)
    return template(self, conversation, chat_template)
LLM.apply_chat_template = spy
from litevllm.cli import main
sys.argv = ["lite"] + sys.argv[1:]
main()
"""


@pytest.fixture(scope="module")
def long_context_dir(make_model, tokenizer):
    """A tiny model with a long context and no EOS token, so a reply runs until interrupted
    (with one, a reply could end by itself before a loaded machine delivers the Ctrl-C)."""
    path = make_model("llama-long", max_position_embeddings=16384, eos_token_id=None)
    tokenizer.save_pretrained(path)
    for name in ("tokenizer_config.json", "special_tokens_map.json"):
        file = path / name
        if file.is_file():
            config = json.loads(file.read_text())
            config.pop("eos_token", None)
            file.write_text(json.dumps(config))
    return path


def spawn(model):
    child = pexpect.spawn(sys.executable, ["-c", SPY, "run", "--model", str(model),
                                           "--temperature", "0", "--max-tokens", "16000"],
                          encoding="utf-8", timeout=120)
    child.expect("Interactive chat")
    child.expect("> ")
    return child


def interrupt_reply(child, question):
    child.sendline(question)
    child.expect(r"\[sees\] (.*)\r\n")
    seen = child.match.group(1)
    child.expect(r"\S{20}")  # the reply is streaming
    child.sendintr()
    child.expect(r"\[reply stopped\]")
    child.expect("> ")
    return json.loads(seen)


def test_ctrl_c_stops_the_reply_and_keeps_history(long_context_dir):
    child = spawn(long_context_dir)
    assert interrupt_reply(child, "first question") == ["first question"]
    child.sendline("   ")  # whitespace only: ignored, no request
    child.expect("> ")
    seen = interrupt_reply(child, "second question")
    # the first question and its partial reply are part of the conversation
    assert seen[0] == "first question" and seen[1] and seen[2:] == ["second question"]
    assert "[sees]" not in child.before
    child.sendintr()  # at the prompt: a hint, still running
    child.expect(r"Ctrl-C again or Ctrl-D to quit")
    child.sendintr()
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0


def test_ctrl_d_exits(long_context_dir):
    child = spawn(long_context_dir)
    child.sendeof()
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0 and "Aborted" not in child.before
