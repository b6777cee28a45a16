"""The training prompt (the paper's B.1): the `math` template of `tasks/_prompts.yaml`, the one the
evaluation tasks use, so training and evaluation never drift apart. System "You are a helpful
assistant.", user = the question and the instruction to reason step by step and box the answer;
every model gets it through its chat template."""

from __future__ import annotations

from functools import cache

import yaml

from scope_bench.paths import TASKS_DIR

TEMPLATE = "math"


@cache
def _template() -> dict:
    path = TASKS_DIR / "_prompts.yaml"
    templates = yaml.safe_load(path.read_text())
    if TEMPLATE not in templates:
        raise ValueError(f"{path}: no '{TEMPLATE}' prompt (the training prompt)")
    return templates[TEMPLATE]


def chat_messages(question: str) -> list[dict]:
    template = _template()
    return [
        {"role": "system", "content": template["system"]},
        {"role": "user", "content": template["user"].format(problem=question)},
    ]


def prompt_text(tokenizer, question: str) -> str:
    """The prompt string the policy continues (chat template with the generation prompt)."""
    return tokenizer.apply_chat_template(chat_messages(question), tokenize=False, add_generation_prompt=True)
