"""The paper's training prompt (B.1): system "You are a helpful assistant.", user = question plus an
instruction to reason step by step and box the answer. Every model gets it through its chat template."""

from __future__ import annotations

SYSTEM_PROMPT = "You are a helpful assistant."
INSTRUCTION = "Please reason step by step, and put your final answer within \\boxed{}."


def chat_messages(question: str) -> list[dict]:
    return [
        {"role": "system", "content": SYSTEM_PROMPT},
        {"role": "user", "content": f"{question}\n{INSTRUCTION}"},
    ]


def prompt_text(tokenizer, question: str) -> str:
    """The prompt string the policy continues (chat template with the generation prompt)."""
    return tokenizer.apply_chat_template(chat_messages(question), tokenize=False, add_generation_prompt=True)
