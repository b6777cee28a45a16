"""Where a dataset keeps a training row's question and answer: the field names tried, in order, when
none is named (`data.question_key` / `data.answer_key`, `--question-field` / `--answer-field`)."""

from __future__ import annotations

QUESTION_FIELDS = ("question", "problem", "prompt")
# gt_answer: SimpleRL-Zoo's MATH levels 3-5; reward_model: verl's parquet ({ground_truth: ...})
ANSWER_FIELDS = ("answer", "ground_truth", "final_answer", "gt_answer", "reward_model")


def answer_value(value):
    """The answer held in a field (verl's `reward_model` column nests it under `ground_truth`)."""
    return value["ground_truth"] if isinstance(value, dict) and "ground_truth" in value else value
