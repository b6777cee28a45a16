"""Rewriting rows of verl's rollout batch after the SCOPE stage, and reading rollouts out of it.

verl's agent loop hands the trainer a `DataProto` whose rows are `[left-padded prompt | right-padded
response]` of fixed widths `P` and `R`: `prompts (B,P)`, `responses (B,R)`, `input_ids`,
`attention_mask`, `position_ids (B,P+R)`, `response_mask (B,R)`, `rm_scores (B,R)` (the outcome reward
on the last response token) and, when the rollout logged them, `rollout_log_probs (B,R)`.

A rectified row keeps its prompt and gets the mixed trajectory as its response. Everything derived
from the response is rebuilt the way verl builds it (attention mask, `position_ids =
clip(cumsum(attention_mask) - 1, 0)`), `rm_scores` is edited in place (the trainer already holds a
reference to it as the reward tensor), an `offpolicy_mask (B,R)` marks refiner tokens, and
`rollout_log_probs` is dropped: the suffix was not sampled by the policy, so nothing may treat the
rollout's log-probs as the behaviour policy (old log-probs are recomputed after the rewrite).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

from scope_bench.core.steps import decode_with_offsets

MASK_KEY = "offpolicy_mask"  # (B, R): 1 on the response tokens the policy did not sample


def response_lengths(batch) -> torch.Tensor:
    """Valid response tokens per row (the right-padded part of the attention mask)."""
    width = batch.batch["responses"].shape[1]
    return batch.batch["attention_mask"][:, -width:].sum(dim=-1)


def rewrite_rows(batch, rows: Mapping[int, tuple[Sequence[int], Sequence[int], float]], pad_token_id: int) -> None:
    """Give row `i` the response `token_ids` with off-policy mask `mask` and reward `reward`, for
    every `i: (token_ids, mask, reward)` in `rows`; in place. Always adds `offpolicy_mask` (all zero
    for untouched rows) and drops `rollout_log_probs`, so every step's batch has the same keys."""
    tensors = batch.batch
    responses = tensors["responses"]
    width = responses.shape[1]
    prompt_width = tensors["input_ids"].shape[1] - width
    if tensors["position_ids"].dim() != 2:
        raise ValueError("rewriting rows supports text-only batches (2-D position_ids), "
                         f"got position_ids of shape {tuple(tensors['position_ids'].shape)}")
    if MASK_KEY not in tensors.keys():  # noqa: SIM118 - TensorDict has no `in`
        tensors[MASK_KEY] = torch.zeros_like(tensors["response_mask"])
    for i, (token_ids, mask, reward) in rows.items():
        n = len(token_ids)
        if not 0 < n <= width:
            raise ValueError(f"row {i}: a rewritten response must have 1..{width} tokens, got {n}")
        if len(mask) != n:
            raise ValueError(f"row {i}: {len(mask)} off-policy flags for {n} tokens")
        ids = torch.as_tensor(list(token_ids), dtype=responses.dtype, device=responses.device)
        responses[i] = pad_token_id
        responses[i, :n] = ids
        tensors["input_ids"][i, prompt_width:] = responses[i]
        attention = tensors["attention_mask"][i]
        attention[prompt_width:] = 0
        attention[prompt_width : prompt_width + n] = 1
        tensors["position_ids"][i] = torch.clip(torch.cumsum(attention, dim=-1) - 1, min=0)
        tensors["response_mask"][i] = attention[prompt_width:]
        tensors[MASK_KEY][i] = 0
        tensors[MASK_KEY][i, :n] = torch.as_tensor(list(mask), dtype=tensors[MASK_KEY].dtype)
        if "rm_scores" in tensors.keys():  # noqa: SIM118
            tensors["rm_scores"][i] = 0.0
            tensors["rm_scores"][i, n - 1] = float(reward)
    if "rollout_log_probs" in tensors.keys():  # noqa: SIM118
        tensors.pop("rollout_log_probs")
    batch.meta_info["global_token_num"] = torch.sum(tensors["attention_mask"], dim=-1).tolist()


def set_rewards(batch, rewards: Mapping[int, float]) -> None:
    """Replace the outcome reward of rows (prm-reward baseline), in place on `rm_scores`."""
    scores = batch.batch["rm_scores"]
    last = response_lengths(batch) - 1
    for i, reward in rewards.items():
        scores[i] = 0.0
        scores[i, int(last[i])] = float(reward)


def decoded_responses(tokenizer, batch) -> list[tuple[list[int], str, list[tuple[int, int]]]]:
    """Per row: response ids (trailing end-of-sequence removed), their text, and each token's
    character span in that text (what `core.steps.step_token_spans` needs)."""
    lengths = response_lengths(batch).tolist()
    responses = batch.batch["responses"]
    stop = {tokenizer.eos_token_id, tokenizer.pad_token_id} - {None}
    out = []
    for i, n in enumerate(lengths):
        ids = responses[i, : int(n)].tolist()
        while ids and ids[-1] in stop:
            ids.pop()
        out.append((ids, *decode_with_offsets(tokenizer, ids, skip_special_tokens=False)))
    return out
