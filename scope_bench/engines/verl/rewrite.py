"""Rewriting rows of verl's rollout batch after the SCOPE stage, and reading rollouts out of it.

verl's agent loop hands the trainer a `DataProto` whose rows are `[left-padded prompt | right-padded
response]` of fixed widths `P` and `R`: `prompts (B,P)`, `responses (B,R)`, `input_ids`,
`attention_mask`, `position_ids (B,P+R)`, `response_mask (B,R)`, `rm_scores (B,R)` (the outcome reward
on the last response token) and, when the rollout logged them, `rollout_log_probs (B,R)`.

A rectified row keeps its prompt and gets the mixed trajectory as its response. Everything derived
from the response is rebuilt the way verl builds it (attention mask, `position_ids =
clip(cumsum(attention_mask) - 1, 0)`), `rm_scores` is edited in place (the trainer already holds a
reference to it as the reward tensor), an `offpolicy_mask (B,R)` marks refiner tokens, and
`rollout_log_probs` are kept for the policy's own tokens (a rewritten row's prefix is the sampled
tokens at their sampled positions) and zeroed on the refiner's: the suffix was not sampled by the
policy, so nothing may treat them as the behaviour policy (old log-probs are recomputed after the
rewrite; the trainer reads rollout log-probs only over `onpolicy_mask`, for verl's rollout-vs-trainer
diagnostics).
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
    for untouched rows), so every step's batch has the same keys; `token_ids[:k]` where `mask` is 0
    must be the row's sampled tokens (the kept prefix)."""
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
        if "rollout_log_probs" in tensors.keys():  # noqa: SIM118 - kept on the policy's prefix (same tokens,
            # same positions), zero elsewhere; read only over on-policy tokens (`onpolicy_mask`)
            kept = torch.as_tensor([m == 0 for m in mask] + [False] * (width - n), device=responses.device)
            tensors["rollout_log_probs"][i] = torch.where(kept, tensors["rollout_log_probs"][i], 0.0)
        if "rm_scores" in tensors.keys():  # noqa: SIM118
            tensors["rm_scores"][i] = 0.0
            tensors["rm_scores"][i, n - 1] = float(reward)
    batch.meta_info["global_token_num"] = torch.sum(tensors["attention_mask"], dim=-1).tolist()


def onpolicy_mask(batch) -> torch.Tensor:
    """(B, R): 1 on the response tokens the policy sampled (valid and not off-policy)."""
    valid = batch.batch["response_mask"]
    if MASK_KEY not in batch.batch.keys():  # noqa: SIM118
        return valid
    return valid * (1 - batch.batch[MASK_KEY].to(valid.dtype))


def set_rewards(batch, rewards: Mapping[int, float]) -> None:
    """Replace the outcome reward of rows (prm-reward baseline), in place on `rm_scores`."""
    scores = batch.batch["rm_scores"]
    last = response_lengths(batch) - 1
    for i, reward in rewards.items():
        scores[i] = 0.0
        scores[i, int(last[i])] = float(reward)


def decoded_responses(tokenizer, batch, stop_ids=()) -> list[tuple[list[int], str, list[tuple[int, int]]]]:
    """Per row: response ids without their trailing special tokens (end of turn, end of text,
    padding, the rollout's `stop_ids`: no `<|im_end|>` may reach the PRM's last step or a kept
    prefix), their text, and each token's character span in that text (what
    `core.steps.step_token_spans` needs)."""
    lengths = response_lengths(batch).tolist()
    responses = batch.batch["responses"]
    stop = trailing_ids(tokenizer, stop_ids)
    out = []
    for i, n in enumerate(lengths):
        ids = responses[i, : int(n)].tolist()
        while ids and ids[-1] in stop:
            ids.pop()
        # a row that stopped at once has no text (decode_with_offsets gives one span for no tokens)
        out.append((ids, *decode_with_offsets(tokenizer, ids, skip_special_tokens=False)) if ids else ([], "", []))
    return out


def trailing_ids(tokenizer, stop_ids=()) -> set[int]:
    """Token ids that end a response rather than belong to it."""
    return ({tokenizer.eos_token_id, tokenizer.pad_token_id} | set(stop_ids)
            | set(getattr(tokenizer, "all_special_ids", ()))) - {None}


def ended_with(tokenizer, batch, stop_ids) -> tuple[int, ...] | None:
    """How most sampled rows that stopped (last token in `stop_ids`) end: their run of trailing
    special tokens (`<|im_end|>`, or `<|im_end|><|endoftext|>` for a base model that closes the chat
    turn before its eos); None if no row stopped. A rewritten row ends the same way, so the policy
    learns to stop as it samples."""
    special = trailing_ids(tokenizer, stop_ids)
    responses = batch.batch["responses"]
    ends: dict[tuple[int, ...], int] = {}
    for i, n in enumerate(response_lengths(batch).tolist()):
        ids = responses[i, : int(n)].tolist()
        if not ids or ids[-1] not in stop_ids:
            continue
        k = len(ids)
        while k > 0 and ids[k - 1] in special:
            k -= 1
        tail = tuple(ids[k:])
        ends[tail] = ends.get(tail, 0) + 1
    return max(ends, key=ends.get) if ends else None
