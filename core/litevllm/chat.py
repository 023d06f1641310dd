"""Prompt token ids for a conversation, through the tokenizer's chat template."""
from __future__ import annotations


def chat_prompt_ids(tokenizer, conversation: list[dict], chat_template: str | None = None) -> list[int]:
    """The conversation formatted with the generation prompt; ValueError naming what is missing."""
    if tokenizer is None:
        raise ValueError("this model has no tokenizer, so chat messages cannot be formatted")
    if chat_template is None and not getattr(tokenizer, "chat_template", None):
        raise ValueError("this model's tokenizer has no chat template; pass chat_template=...")
    out = tokenizer.apply_chat_template(conversation, chat_template=chat_template,
                                        add_generation_prompt=True, tokenize=True)
    return list(out["input_ids"] if hasattr(out, "keys") else out)
