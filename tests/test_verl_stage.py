"""The method stage on a real verl DataProto: rows grouped by uid, the selected failure rewritten as
prefix ++ refiner suffix, rewards and metrics as the local trainer names them."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

pytest.importorskip("verl", reason="verl is installed by the test command (pip install -e .[verl])")

from verl import DataProto
from verl.utils.model import compute_position_id_with_mask

from scope_bench.core.interfaces import RefineResult
from scope_bench.engines.verl.stage import MethodStage

torch.set_num_threads(1)
P, R = 6, 96
GT = {"a": "5", "b": "9"}


@pytest.fixture(scope="module")
def tokenizer():
    return byte_tokenizer()


def byte_tokenizer():
    """Byte-level tokenizer, one token per byte (no training), with end-of-sequence and padding."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = pre_tokenizers.ByteLevel.alphabet()
    tok = Tokenizer(models.BPE(vocab={ch: i for i, ch in enumerate(sorted(alphabet))}, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>")


class StepPRM:
    """0.1 for a step that says "wrong", else 0.9."""

    def __init__(self):
        self.calls = []

    def score(self, questions, steps):
        self.calls.append(list(questions))
        return [[0.1 if "wrong" in s else 0.9 for s in solution] for solution in steps]


class AnswerRefiner:
    """Continues with the ground truth boxed, or fails with `error`."""

    def __init__(self, error=None, suffix="Step 3: fixed it.\n\n\\boxed{{{gt}}}"):
        self.error, self.suffix, self.requests = error, suffix, []

    def refine(self, requests):
        self.requests += list(requests)
        return [RefineResult(None, self.error) if self.error else RefineResult(self.suffix.format(gt=r.ground_truth))
                for r in requests]


def verify(text: str, gt: str) -> float:
    found = re.findall(r"\\boxed\{([^}]*)\}", text)
    return float(bool(found) and found[-1] == gt)


# (uid, response text, outcome reward): group a has 3 failures (gated), group b 1 failure (not gated)
ROLLOUTS = [
    ("a", "Step 1: 2+3.\n\nStep 2: so 5.\n\n\\boxed{5}", 1.0),
    ("b", "Step 1: 4+5 is 9.\n\n\\boxed{9}", 1.0),
    ("a", "Step 1: 2+3.\n\nStep 2: wrong, 6.\n\n\\boxed{6}", 0.0),
    ("b", "Step 1: 4+5 is wrong, \\boxed{8}", 0.0),
    ("a", "Step 1: wrong start.\n\n\\boxed{1}", 0.0),
    ("b", "Step 1: nine.\n\n\\boxed{9}", 1.0),
    ("a", "Step 1: 2+3.\n\nStep 2: 5.\n\nStep 3: wrong, 7.\n\n\\boxed{7}", 0.0),
    ("b", "\\boxed{9}", 1.0),
]


def make_batch(tokenizer, rollouts=ROLLOUTS) -> DataProto:
    n = len(rollouts)
    responses = torch.full((n, R), tokenizer.pad_token_id)
    attention = torch.zeros(n, P + R, dtype=torch.long)
    attention[:, 2:P] = 1  # every prompt: 4 tokens, left-padded
    rm_scores = torch.zeros(n, R)
    for i, (_, text, reward) in enumerate(rollouts):
        ids = tokenizer(text, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        responses[i, : len(ids)] = torch.tensor(ids)
        attention[i, P : P + len(ids)] = 1
        rm_scores[i, len(ids) - 1] = reward
    prompts = torch.full((n, P), tokenizer.pad_token_id)
    prompts[:, 2:] = 7
    return DataProto.from_dict(
        tensors={"prompts": prompts, "responses": responses, "input_ids": torch.cat([prompts, responses], 1),
                 "attention_mask": attention, "position_ids": compute_position_id_with_mask(attention),
                 "response_mask": attention[:, P:].clone(), "rm_scores": rm_scores,
                 "rollout_log_probs": torch.zeros(n, R)},
        non_tensors={"uid": np.array([u for u, _, _ in rollouts], dtype=object),
                     "extra_info": np.array([{"question": f"Question {u}?"} for u, _, _ in rollouts], dtype=object),
                     "reward_model": np.array([{"ground_truth": GT[u]} for u, _, _ in rollouts], dtype=object)},
        meta_info={"global_token_num": attention.sum(-1).tolist()})


def response_text(tokenizer, batch, row: int) -> str:
    n = int(batch.batch["response_mask"][row].sum())
    return tokenizer.decode(batch.batch["responses"][row, :n].tolist())


def test_scope_stage_rewrites_the_selected_failure(tokenizer):
    batch = make_batch(tokenizer)
    prm, refiner = StepPRM(), AnswerRefiner()
    stage = MethodStage(stage="scope", tokenizer=tokenizer, verify=verify, prm=prm, refiner=refiner)
    metrics = stage(batch)

    # group a (rows 0, 2, 4, 6) is gated; its failures are rows 2, 4, 6. By hand (eqs. 2-4, batch
    # statistics; byte tokens): steps [3,2,3,1,2,2,4,1] have mean 2.25, variance .9375; tokens
    # [38,28,42,31,31,24,54,9] mean 32.125, variance 153.86. Row 2 keeps 1 of 3 steps, 14 of 42
    # tokens: S = e^-.300 * e^-.317 * (1/3 + 1/3) = .36. Row 4 keeps nothing: S = 0. Row 6 keeps 2 of
    # 4 steps, 26 of 54 tokens, but is long: S = e^-1.633 * e^-1.555 * (.5 + .48) = .04. Row 2 it is.
    assert [r.question for r in refiner.requests] == ["Question a?"]
    (row,) = [i for i in range(8) if batch.batch["offpolicy_mask"][i].any()]
    assert row == 2
    original = ROLLOUTS[row][1]
    prefix = "Step 1: 2+3.\n\n"  # the step before "wrong"
    assert refiner.requests[0].prefix == prefix
    text = response_text(tokenizer, batch, row)
    assert text == prefix + "Step 3: fixed it.\n\n\\boxed{5}<|im_end|>"
    mask = batch.batch["offpolicy_mask"][row]
    n_prefix = len(tokenizer(prefix, add_special_tokens=False)["input_ids"])
    n_total = int(batch.batch["response_mask"][row].sum())
    assert mask[:n_prefix].sum() == 0 and mask[n_prefix:n_total].sum() == n_total - n_prefix
    assert batch.batch["offpolicy_mask"].sum() == n_total - n_prefix  # no other row touched
    expected_rewards = [r for _, _, r in ROLLOUTS]
    expected_rewards[row] = 1.0
    assert batch.batch["rm_scores"].sum(-1).tolist() == expected_rewards
    assert not batch.batch["rollout_log_probs"][row, n_prefix:].any()  # none for the refiner's tokens
    assert metrics["groups_total"] == 2 and metrics["groups_gated"] == 1 and metrics["groups_rectified"] == 1
    full = len(tokenizer(original, add_special_tokens=False)["input_ids"])
    assert metrics["keep_ratio"] == pytest.approx(n_prefix / full)
    assert metrics["accuracy"] == 0.5 and metrics["reward_mean"] == 0.625
    # near-miss over the 4 sampled failures (K steps - verified steps): row 2: 3-1, row 3 (ungated group,
    # scored for the metric only): 1-0, row 4: 2-0, row 6: 4-2
    assert (metrics["near_miss@1"], metrics["near_miss@2"], metrics["near_miss@3"]) == (0.25, 1.0, 1.0)
    assert len(prm.calls) == 1 and "Question b?" in prm.calls[0]  # one PRM round per step
    assert {"time/stage", "time/stage/prm", "time/stage/refiner", "time/near_miss"} <= set(metrics)


def test_refiner_failure_leaves_the_batch_as_sampled(tokenizer):
    batch = make_batch(tokenizer)
    before = batch.batch["responses"].clone()
    with pytest.warns(RuntimeWarning, match="every refiner call of this step failed"):
        metrics = MethodStage(stage="scope", tokenizer=tokenizer, verify=verify, prm=StepPRM(),
                              refiner=AnswerRefiner(error="timeout"))(batch)
    assert torch.equal(batch.batch["responses"], before) and batch.batch["offpolicy_mask"].sum() == 0
    assert metrics["groups_skipped"] == 1 and metrics["skip/refiner_error:timeout"] == 1
    assert metrics["refiner_failures"] == 1 and metrics["keep_ratio"] is None


def test_a_mixed_trajectory_longer_than_the_response_width_is_skipped(tokenizer):
    batch = make_batch(tokenizer)
    long = AnswerRefiner(suffix="Step 3: " + "very " * 40 + "long.\n\n\\boxed{{{gt}}}")
    metrics = MethodStage(stage="scope", tokenizer=tokenizer, verify=verify, prm=StepPRM(), refiner=long)(batch)
    assert metrics["skip/too_long"] == 1 and metrics["groups_rectified"] == 0


def test_replace_rewrites_the_whole_response_off_policy(tokenizer):
    batch = make_batch(tokenizer)
    stage = MethodStage(stage="scope", tokenizer=tokenizer, verify=verify, prm=None,
                        refiner=AnswerRefiner(suffix="Full solution.\n\n\\boxed{{{gt}}}"),
                        scope={"prefix_source": "none"})
    metrics = stage(batch)
    (row,) = [i for i in range(8) if batch.batch["offpolicy_mask"][i].any()]
    n = int(batch.batch["response_mask"][row].sum())
    assert batch.batch["offpolicy_mask"][row, :n].all() and batch.batch["offpolicy_mask"][row, n:].sum() == 0
    assert response_text(tokenizer, batch, row) == "Full solution.\n\n\\boxed{5}<|im_end|>"
    assert metrics["keep_ratio"] == 0.0 and metrics["near_miss@1"] is None  # no PRM, no near-miss


def test_prm_reward_stage_shapes_every_reward_in_place(tokenizer):
    batch = make_batch(tokenizer)
    scores = batch.batch["rm_scores"]
    metrics = MethodStage(stage="prm_reward", tokenizer=tokenizer, verify=verify, prm=StepPRM(),
                          prm_reward={"weight": 0.5, "aggregate": "min"})(batch)
    expected = [r + 0.5 * (0.1 if "wrong" in t else 0.9) for _, t, r in ROLLOUTS]  # min over steps
    assert batch.batch["rm_scores"] is scores
    assert scores.sum(-1).tolist() == pytest.approx(expected)
    last = batch.batch["response_mask"].sum(-1) - 1
    assert all(scores[i, int(last[i])] == pytest.approx(expected[i]) for i in range(8))
    assert metrics["reward_mean"] == pytest.approx(sum(expected) / 8) and metrics["accuracy"] == 0.5


def test_grpo_stage_only_measures(tokenizer):
    batch = make_batch(tokenizer)
    before = {k: v.clone() for k, v in batch.batch.items()}
    metrics = MethodStage(stage="none", tokenizer=tokenizer, verify=verify)(batch)
    assert all(torch.equal(batch.batch[k], v) for k, v in before.items())
    assert metrics["groups_gated"] == 0 and metrics["near_miss@1"] is None and metrics["accuracy"] == 0.5


def test_missing_pieces_are_named():
    with pytest.raises(ValueError, match="needs a PRM"):
        MethodStage(stage="prm_reward", tokenizer=None, verify=verify)
    with pytest.raises(ValueError, match="needs a refiner"):
        MethodStage(stage="scope", tokenizer=None, verify=verify, prm=StepPRM())
    with pytest.raises(ValueError, match="unknown key"):
        MethodStage(stage="none", tokenizer=None, verify=verify, scope={"tau_typo": 1})


def test_steps_where_every_refiner_call_fails_warn_then_stop(tokenizer):
    """A refiner that fails every call turns SCOPE into GRPO: each such step warns, and the run stops
    after `refiner.stop_after_failed_steps` of them in a row; one success resets the count."""
    failing, working = AnswerRefiner(error="http_4xx"), AnswerRefiner()
    stage = MethodStage(stage="scope", tokenizer=tokenizer, verify=verify, prm=StepPRM(), refiner=failing,
                        stop_after_failed_steps=2)
    with pytest.warns(RuntimeWarning, match="every refiner call of this step failed"):
        stage(make_batch(tokenizer))
    stage.refiner = working
    assert stage(make_batch(tokenizer))["groups_rectified"] == 1 and stage.failed_steps == 0
    stage.refiner = failing
    with pytest.warns(RuntimeWarning):
        stage(make_batch(tokenizer))
    with pytest.raises(RuntimeError, match="stopping after 2"):
        stage(make_batch(tokenizer))


def test_a_stalled_refiner_is_cut_at_the_step_deadline(tokenizer):
    """`scope-bench serve` answering after 60 s; with `refiner.step_deadline_s=1` the step goes on
    after about a second, the unfinished rectification skipped and counted as `deadline`."""
    import subprocess
    import sys
    import time
    from pathlib import Path
    from types import SimpleNamespace

    from scope_bench.engines.components import build_refiner
    from scope_bench.synthetic.task import generate_split

    script = Path(sys.executable).with_name("scope-bench")
    cmd = [str(script)] if script.exists() else [sys.executable, "-m", "scope_bench.cli"]
    proc = subprocess.Popen([*cmd, "serve", "--port", "0", "--refiner-failure", "timeout", "--refiner-delay", "60"],
                            stdout=subprocess.PIPE, text=True)
    try:
        url = re.search(r"http://\S+", proc.stdout.readline()).group().rstrip("/")
        block = SimpleNamespace(kind="openai", url=f"{url}/v1", model="synthetic-refiner", api_key_env=None,
                                concurrency=4, timeout_s=600, retries=3, max_tokens=256, step_deadline_s=1.0)
        stage = MethodStage(stage="scope", tokenizer=tokenizer, verify=verify, prm=StepPRM(),
                            refiner=build_refiner(block))
        batch = make_batch(tokenizer)
        question = generate_split("train", 1, 0)[0]["question"]  # one the server can answer
        batch.non_tensor_batch["extra_info"] = np.array([{"question": question}] * 8, dtype=object)
        start = time.monotonic()
        with pytest.warns(RuntimeWarning):  # the step's only call failed
            metrics = stage(batch)
        assert time.monotonic() - start < 30  # not the server's 60 s, nor 600 s x 4 tries
        assert metrics["skip/refiner_error:deadline"] == 1 and metrics["refiner_failures"] == 1
    finally:
        proc.terminate()
        proc.wait(timeout=30)


# Qwen2.5-Math-7B (base) and Qwen2.5-Math-PRM-7B share Qwen2.5's special tokens: <|endoftext|> 151643,
# <|im_start|> 151644, <|im_end|> 151645. The base model's tokenizer eos is <|endoftext|> and its
# generation config stops there only, while its chat template closes each turn with <|im_end|>; the
# instruct and PRM models (PRM base_model: Qwen2.5-Math-7B-Instruct, per its model card) end a turn
# with <|im_end|>. See the report of issue 20 for where these fields were read.
BASE_TOKENIZER = {"eos_token": "<|endoftext|>", "pad_token": "<|endoftext|>"}
BASE_GENERATION = {"eos_token_id": "<|endoftext|>"}


def test_rewritten_rows_end_the_way_sampled_rows_do(tokenizer):
    """A base-model tokenizer (eos `<|endoftext|>`) whose rollouts close the chat turn first:
    `...<|im_end|><|endoftext|>`. The rewritten row ends with the same two tokens (not the tokenizer's
    eos alone), and no `<|im_end|>` reaches the PRM's last step or the refiner's prefix."""
    from transformers import GenerationConfig, PreTrainedTokenizerFast

    base = PreTrainedTokenizerFast(tokenizer_object=byte_tokenizer().backend_tokenizer, **BASE_TOKENIZER,
                                   additional_special_tokens=["<|im_end|>"])
    end = [base.convert_tokens_to_ids("<|im_end|>"), base.eos_token_id]
    sampled = [(u, text + "<|im_end|>", r) for u, text, r in ROLLOUTS]  # make_batch appends the eos
    batch = make_batch(base, sampled)
    prm, refiner = StepPRM(), AnswerRefiner()
    steps_seen = []
    prm.score = lambda questions, steps: steps_seen.extend(steps) or StepPRM.score(prm, questions, steps)
    generation = GenerationConfig(eos_token_id=base.convert_tokens_to_ids(BASE_GENERATION["eos_token_id"]))
    MethodStage(stage="scope", tokenizer=base, verify=verify, prm=prm, refiner=refiner,
                generation_config=generation)(batch)
    (row,) = [i for i in range(8) if batch.batch["offpolicy_mask"][i].any()]
    n = int(batch.batch["response_mask"][row].sum())
    assert batch.batch["responses"][row, n - 2 : n].tolist() == end
    assert all("<|im_end|>" not in step for steps in steps_seen for step in steps)
    assert all("<|im_end|>" not in r.prefix for r in refiner.requests)


def test_a_rollout_that_stopped_at_once_is_a_failure_with_no_steps(tokenizer):
    """A response of only the end token (an untrained policy does this) is an empty rollout, not a crash."""
    rollouts = [*ROLLOUTS[:7], ("b", "", 0.0)]
    metrics = MethodStage(stage="scope", tokenizer=tokenizer, verify=verify, prm=StepPRM(),
                          refiner=AnswerRefiner())(make_batch(tokenizer, rollouts))
    assert metrics["groups_total"] == 2 and metrics["accuracy"] == 3 / 8
