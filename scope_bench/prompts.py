"""The prompt templates (`tasks/_prompts.yaml`), read here and nowhere else, below every layer that
uses them: the evaluation tasks name a template, and training (the paper's B.1) uses the `math` one,
so training and evaluation never drift apart. System "You are a helpful assistant.", user = the
question and the instruction to reason step by step and box the answer; every model gets it through
its chat template."""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

import yaml

from scope_bench.paths import TASKS_DIR

PROMPTS_FILE = "_prompts.yaml"
TRAINING_TEMPLATE = "math"


def load_prompts(tasks_dir: Path = TASKS_DIR) -> dict[str, Any]:
    """`{name: {system, user, raw}}` of `tasks_dir/_prompts.yaml` ({} when the folder has none)."""
    path = Path(tasks_dir) / PROMPTS_FILE
    return yaml.safe_load(path.read_text()) if path.exists() else {}


@cache
def _training_template() -> dict:
    templates = load_prompts(TASKS_DIR)
    if TRAINING_TEMPLATE not in templates:
        raise ValueError(f"{TASKS_DIR / PROMPTS_FILE}: no '{TRAINING_TEMPLATE}' prompt (the training prompt)")
    return templates[TRAINING_TEMPLATE]


def chat_messages(question: str) -> list[dict]:
    template = _training_template()
    return [
        {"role": "system", "content": template["system"]},
        {"role": "user", "content": template["user"].format(problem=question)},
    ]


def prompt_text(tokenizer, question: str) -> str:
    """The prompt string the policy continues (chat template with the generation prompt)."""
    return tokenizer.apply_chat_template(chat_messages(question), tokenize=False, add_generation_prompt=True)
