"""Row rewrite on a real verl DataProto: every invariant of verl's rollout batch holds afterwards,
checked against batches built by hand the way verl's agent loop builds them."""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import pytest
import torch

pytest.importorskip("verl", reason="verl is installed by the test command (pip install -e .[verl])")

from verl import DataProto
from verl.utils.model import compute_position_id_with_mask
from verl.workers.utils.padding import left_right_2_no_padding, no_padding_2_padding

from scope_bench.core.steps import decode_with_offsets
from scope_bench.engines.verl.rewrite import onpolicy_mask, rewrite_rows, set_rewards

torch.set_num_threads(1)
PAD, P, R = 0, 5, 6


def _row(prompt: list[int], response: list[int]):
    """One row as verl's agent loop pads it: prompt left-padded to P, response right-padded to R."""
    prompt_ids = [PAD] * (P - len(prompt)) + prompt
    response_ids = response + [PAD] * (R - len(response))
    attention = [0] * (P - len(prompt)) + [1] * len(prompt) + [1] * len(response) + [0] * (R - len(response))
    return prompt_ids, response_ids, attention


def _batch(rows, rewards, rollout_logp=True) -> DataProto:
    prompts, responses, attention = (torch.tensor(x) for x in zip(*[_row(p, r) for p, r in rows]))
    input_ids = torch.cat([prompts, responses], dim=1)
    lengths = attention[:, P:].sum(-1)
    rm_scores = torch.zeros(len(rows), R)
    rm_scores[torch.arange(len(rows)), lengths - 1] = torch.tensor(rewards, dtype=torch.float32)
    tensors = {"prompts": prompts, "responses": responses, "input_ids": input_ids, "attention_mask": attention,
               "position_ids": compute_position_id_with_mask(attention), "response_mask": attention[:, P:].clone(),
               "rm_scores": rm_scores}
    if rollout_logp:
        tensors["rollout_log_probs"] = -torch.rand(len(rows), R) * attention[:, P:]
    batch = DataProto.from_dict(tensors=tensors, non_tensors={"uid": np.array(["a", "a", "b"], dtype=object)},
                                meta_info={"global_token_num": attention.sum(-1).tolist()})
    return batch


ROWS = [([11, 12, 13], [21, 22, 23, 2]), ([14, 15, 16, 17, 18], [24, 25, 26, 27, 28, 2]), ([19, 20], [2])]


def test_rewritten_rows_equal_batches_built_by_hand():
    batch = _batch(ROWS, [0.0, 1.0, 0.0])
    rm_scores = batch.batch["rm_scores"]  # the trainer holds this very tensor as its reward tensor
    sampled_logp = batch.batch["rollout_log_probs"].clone()
    new0, mask0 = [21, 22, 31, 32, 33, 2], [0, 0, 1, 1, 1, 1]  # fills the whole response width
    new2, mask2 = [41, 42, 2], [1, 1, 1]  # replace-entire-rollout: all off-policy
    rewrite_rows(batch, {0: (new0, mask0, 1.0), 2: (new2, mask2, 1.0)}, pad_token_id=PAD)

    expected = _batch([(ROWS[0][0], new0), ROWS[1], (ROWS[2][0], new2)], [1.0, 1.0, 1.0], rollout_logp=False)
    for key in ("prompts", "responses", "input_ids", "attention_mask", "position_ids", "response_mask", "rm_scores"):
        assert torch.equal(batch.batch[key], expected.batch[key]), key
    assert batch.batch["rm_scores"] is rm_scores  # edited in place
    assert rm_scores[0].tolist() == [0, 0, 0, 0, 0, 1.0] and rm_scores[2].tolist() == [0, 0, 1.0, 0, 0, 0]
    # rollout log-probs stay on the tokens the policy sampled (row 0's prefix, all of row 1), zero elsewhere
    kept = batch.batch["rollout_log_probs"]
    assert torch.equal(kept[0, :2], sampled_logp[0, :2]) and not kept[0, 2:].any()
    assert torch.equal(kept[1], sampled_logp[1]) and not kept[2].any()
    assert onpolicy_mask(batch).tolist() == [[1, 1, 0, 0, 0, 0], [1] * 6, [0] * 6]
    assert batch.meta_info["global_token_num"] == [9, 11, 5]
    assert batch.batch["offpolicy_mask"].tolist() == [mask0, [0] * 6, mask2 + [0] * 3]
    # invariants: left-padded prompts, right-padded responses, masks agree, positions count valid tokens
    attention = batch.batch["attention_mask"]
    assert torch.equal(batch.batch["response_mask"], attention[:, P:])
    assert torch.equal(batch.batch["input_ids"][:, P:], batch.batch["responses"])
    assert ((batch.batch["offpolicy_mask"] == 1) <= (batch.batch["response_mask"] == 1)).all()
    for row in attention.tolist():
        prompt, response = row[:P], row[P:]
        assert prompt == sorted(prompt) and response == sorted(response, reverse=True)


def test_verl_padding_round_trip_reads_the_new_responses():
    """verl's own no-padding conversion (used by the workers) must see the rewritten rows: a fake
    model output that predicts each next input token comes back as exactly the new responses."""
    batch = _batch(ROWS, [0.0, 1.0, 0.0])
    rewrite_rows(batch, {0: ([21, 22, 31, 32, 33, 2], [0, 0, 1, 1, 1, 1], 1.0), 2: ([41, 2], [1, 1], 1.0)},
                 pad_token_id=PAD)
    data = left_right_2_no_padding(batch.to_tensordict())
    ids = data["input_ids"]
    lengths = ids.offsets().diff().tolist()
    assert lengths == batch.meta_info["global_token_num"]
    next_token = torch.cat([torch.cat([seq[1:], seq[:1]]) for seq in ids.unbind()]).float()
    predicted = no_padding_2_padding(next_token, data)
    expected = batch.batch["responses"].float() * batch.batch["response_mask"]
    assert torch.equal(predicted, expected)


def test_untouched_batch_gets_a_zero_mask_and_keeps_its_rollout_logprobs():
    batch = _batch(ROWS, [0.0, 1.0, 0.0])
    before = {k: v.clone() for k, v in batch.batch.items()}
    rewrite_rows(batch, {}, pad_token_id=PAD)
    assert all(torch.equal(batch.batch[k], v) for k, v in before.items())  # rollout_log_probs included
    assert batch.batch["offpolicy_mask"].sum() == 0


def test_bad_rewrites_are_rejected():
    batch = _batch(ROWS, [0.0, 1.0, 0.0])
    with pytest.raises(ValueError, match=r"row 0: a rewritten response must have 1\.\.6 tokens, got 7"):
        rewrite_rows(batch, {0: ([1] * 7, [1] * 7, 1.0)}, pad_token_id=PAD)
    with pytest.raises(ValueError, match="row 1: 2 off-policy flags for 3 tokens"):
        rewrite_rows(batch, {1: ([1, 2, 3], [0, 1], 1.0)}, pad_token_id=PAD)


def test_set_rewards_moves_the_score_to_the_last_token_in_place():
    batch = _batch(ROWS, [0.0, 1.0, 0.0])
    scores = batch.batch["rm_scores"]
    set_rewards(batch, {0: 0.25, 1: 1.5})
    assert batch.batch["rm_scores"] is scores
    assert scores[0].tolist() == [0, 0, 0, 0.25, 0, 0] and scores[1, 5].item() == 1.5
    assert scores.sum(-1).tolist() == [0.25, 1.5, 0.0]


class _CharTokenizer:
    """A tokenizer whose canonical encoding differs from the sampled ids (pairs vs single chars)."""

    vocab: ClassVar[dict] = {"a": 1, "b": 2, "ab": 3, "\n": 4}

    def decode(self, ids, **kwargs):
        inv = {v: k for k, v in self.vocab.items()}
        return "".join(inv[i] for i in ids)

    def batch_decode(self, sequences, **kwargs):
        return [self.decode(ids) for ids in sequences]

    def __call__(self, text, **kwargs):
        ids, offsets, i = [], [], 0
        while i < len(text):
            piece = text[i : i + 2] if text[i : i + 2] == "ab" else text[i]
            ids.append(self.vocab[piece])
            offsets.append((i, i + len(piece)))
            i += len(piece)
        return {"input_ids": ids, "offset_mapping": offsets}


def decode(tok, ids):
    return decode_with_offsets(tok, ids, skip_special_tokens=False)


def test_decode_with_offsets_of_a_non_canonical_sample():
    tok = _CharTokenizer()
    assert decode(tok, [3, 4, 3]) == ("ab\nab", [(0, 2), (2, 3), (3, 5)])  # canonical: fast path
    assert decode(tok, [1, 2, 4, 3]) == ("ab\nab", [(0, 1), (1, 2), (2, 3), (3, 5)])  # sampled a, b
