"""The demo's synthetic world (longer chains, a style-shifted and a weaker teacher, a noisy PRM) and
the baselines it needs (LUFFY's mixing, the per-step PRM reward)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from scope_bench.core import RefineRequest, Rollout
from scope_bench.core.advantages import grpo_advantages, process_advantages
from scope_bench.core.steps import split_steps
from scope_bench.engines.stage import apply_stage
from scope_bench.grading import math_reward
from scope_bench.synthetic import ProgrammaticRefiner, RuleBasedPRM, check_steps, split_problems
from scope_bench.synthetic.task import LONGER_CHAINS, canonical_step

QUESTION = "Start with 7. Add 5, then multiply by 3, then subtract 4."  # 12, 36, 32
STUDENT = ["7 + 5 = 12", "12 * 3 = 36", "36 - 4 = 32", "The answer is \\boxed{32}."]


def test_longer_chains_are_their_own_difficulties():
    for name, n_ops in LONGER_CHAINS.items():
        problems = split_problems("test", 5, difficulties=(name,))
        assert all(len(p.ops) == n_ops and p.difficulty == name for p in problems)


def test_shifted_teacher_writes_other_words_that_the_prm_still_judges_by_content():
    teacher = ProgrammaticRefiner(style="shifted")
    (whole,) = teacher.refine([RefineRequest(QUESTION, "", "32")])
    steps = split_steps(whole.suffix)
    assert steps[0] == "First: 7+5=12" and steps[-1] == "Final answer: \\boxed{32}"
    assert not set(steps) & set(STUDENT)  # no step in the student's words
    assert check_steps(QUESTION, steps) == [True] * 4 and math_reward(whole.suffix, "32") == 1.0
    (cont,) = teacher.refine([RefineRequest(QUESTION, "7 + 5 = 12\n\n", "32")])
    assert split_steps(cont.suffix)[0] == "Next: 12*3=36"
    assert canonical_step("Then: 36-4=31") == "36-4=31"
    assert check_steps(QUESTION, ["7 + 5 = 12", "Next: 12*3=35"]) == [True, False]


def test_weaker_teacher_slips_at_its_rate_and_the_slip_fails_verification():
    problems = split_problems("train", 400, difficulties=("ops5",))
    weak = ProgrammaticRefiner(error_rate=0.3, seed=1)
    results = weak.refine([RefineRequest(p.question, "", p.answer) for p in problems])
    right = [math_reward(r.suffix, p.answer) for r, p in zip(results, problems)]
    assert 0.62 < np.mean(right) < 0.78  # 30% slips
    again = ProgrammaticRefiner(error_rate=0.3, seed=1).refine([RefineRequest(p.question, "", p.answer)
                                                                for p in problems])
    assert [r.suffix for r in again] == [r.suffix for r in results]  # the same requests, the same slips
    wrong = next(r.suffix for r, ok in zip(results, right) if not ok)
    assert not all(check_steps(problems[right.index(0.0)].question, split_steps(wrong)))


def test_noisy_prm_errs_at_its_rates_deterministically():
    problems = split_problems("train", 300, difficulties=("ops5",))
    good = [split_steps(ProgrammaticRefiner().refine([RefineRequest(p.question, "", p.answer)])[0].suffix)
            for p in problems]
    bad = [[s.replace("=", "= 1") for s in steps] for steps in good]  # every step's result wrong
    noisy = RuleBasedPRM(fp_rate=0.1, fn_rate=0.2, seed=3)
    qs = [p.question for p in problems]
    fn = 1 - np.mean([p == 0.9 for ss in noisy.score(qs, good) for p in ss[:5]])
    fp = np.mean([p == 0.9 for ss in noisy.score(qs, bad) for p in ss[:5]])
    assert 0.15 < fn < 0.25 and 0.06 < fp < 0.14
    assert noisy.score(qs, good) == RuleBasedPRM(fp_rate=0.1, fn_rate=0.2, seed=3).score(qs, good)
    assert RuleBasedPRM().score(qs[:3], good[:3]) == [[0.9] * 6] * 3  # exact by default


# --------------------------------------------------------------------------- LUFFY, per-step PRM


def rollout(text: str, reward: float) -> Rollout:
    return Rollout(QUESTION, "32", text, [ord(c) for c in text], [(i, i + 1) for i in range(len(text))], reward)


def chars(text: str) -> list[int]:
    return [ord(c) for c in text]


GROUPS = [[rollout("\n\n".join(STUDENT), 1.0), rollout("7 + 5 = 12\n\n\\boxed{12}", 0.0)],
          [rollout("7 + 5 = 13", 0.0), rollout("wrong", 0.0)]]


def verify(text, gt):
    return float(math_reward(text, gt))


def test_luffy_mixes_one_teacher_solution_into_every_group_without_a_gate():
    result = apply_stage("luffy", GROUPS, refiner=ProgrammaticRefiner(style="shifted"), tokenize=chars,
                         verify=verify)
    assert sorted(result.rectifications) == [1, 3]  # the last rollout of each group, solved group included
    fix = result.rectifications[1]
    assert set(fix.offpolicy_mask) == {1} and fix.prefix_tokens == 0 and fix.text.startswith("First: 7+5=12")
    assert result.rewards == [1.0, 1.0, 0.0, 1.0]
    assert result.metrics["groups_rectified"] == 2 and result.metrics["all_fail_groups"] == 0.5


def test_luffy_reads_traces_from_the_data_and_drops_wrong_ones():
    traces = ["\n\n".join(STUDENT), "The answer is \\boxed{31}."]
    result = apply_stage("luffy", GROUPS, tokenize=chars, verify=verify, traces=traces)
    assert list(result.rectifications) == [1] and result.metrics["refiner_failures"] == 1
    with pytest.raises(ValueError, match="luffy needs"):
        apply_stage("luffy", GROUPS, tokenize=chars, verify=verify)


def test_step_prm_reward_gives_a_reward_at_each_step_boundary():
    result = apply_stage("prm_reward", GROUPS, prm=RuleBasedPRM(), prm_reward={"weight": 0.5, "form": "step"})
    assert result.rewards == [1.0, 0.0, 0.0, 0.0]  # the outcome stays the rollout's reward
    ends = [len("7 + 5 = 12\n\n"), len("7 + 5 = 12\n\n\\boxed{12}")]  # a step's tokens include its separator
    assert result.step_rewards[1] == [(ends[0], 0.45), (ends[1], 0.05)]
    assert result.step_rewards[3] == [(len("wrong"), 0.05)]
    with pytest.raises(ValueError, match="form"):
        apply_stage("prm_reward", GROUPS, prm=RuleBasedPRM(), prm_reward={"form": "dense"})


def test_process_advantages_add_normalised_step_rewards_from_each_step_on():
    rewards, groups, lengths = [1.0, 0.0], [0, 0], [4, 3]
    steps = {0: [(2, 0.9), (4, 0.9)], 1: [(1, 0.9), (3, 0.1)]}
    adv = process_advantages(rewards, steps, groups, lengths)
    outcome = grpo_advantages(rewards, groups)
    pooled = np.array([0.9, 0.9, 0.9, 0.1])
    z = (pooled - pooled.mean()) / (pooled.std(ddof=1) + 1e-6)
    assert adv[0] == pytest.approx([outcome[0] + z[0] + z[1]] * 2 + [outcome[0] + z[1]] * 2)
    assert adv[1] == pytest.approx([outcome[1] + z[2] + z[3], outcome[1] + z[3], outcome[1] + z[3]])
    assert process_advantages(rewards, {}, groups, lengths) == [[outcome[0]] * 4, [outcome[1]] * 3]


# --- the careless style: RL's shared lever (issue 26)

def test_careless_step_covers_two_operations_and_is_judged_by_its_equation():
    careless = ["7 + 5 * 3 = 36", "36 - 4 = 32", "The answer is \\boxed{32}."]
    assert check_steps(QUESTION, careless) == [True, True, True]
    # a careless line with a wrong result is wrong, and what follows from it is judged against the truth
    assert check_steps(QUESTION, ["7 + 5 * 3 = 35", "35 - 4 = 31", "The answer is \\boxed{31}."]) == [
        False, False, False]
    # wrong operations, a second answer line, a wrong start value, three operations on a line
    assert check_steps(QUESTION, ["7 + 5 - 3 = 9", "9 - 4 = 5"]) == [False, False]
    assert check_steps(QUESTION, ["7 + 5 = 12", "12 * 3 - 4 = 32", "The answer is \\boxed{32}.",
                                  "The answer is \\boxed{32}."]) == [True, True, True, False]
    assert check_steps(QUESTION, ["7 + 5 = 12", "36 - 4 * 3 = 96"]) == [True, False]
    assert check_steps(QUESTION, ["7 + 5 * 3 - 4 = 32"]) == [False]  # at most two operations a line


def test_refiner_resumes_after_a_careless_prefix_step():
    teacher = ProgrammaticRefiner()
    (fix,) = teacher.refine([RefineRequest(QUESTION, "7 + 5 * 3 = 36\n\n", "32")])
    assert fix.suffix == "36 - 4 = 32\n\nThe answer is \\boxed{32}."
    assert all(check_steps(QUESTION, split_steps("7 + 5 * 3 = 36\n\n" + fix.suffix)))


def test_careless_rate_makes_lines_careless_at_its_rate_and_every_solution_stays_correct():
    import random

    from scope_bench.synthetic.task import parse_step, solution, solution_steps

    problems = split_problems("train", 300, difficulties=("ops6",))
    rng = random.Random(0)
    choices = careless = 0
    for p in problems:
        text = solution(p, careless_rate=0.3, rng=rng)
        steps = split_steps(text)
        assert all(check_steps(p.question, steps)) and math_reward(text, p.answer) == 1.0
        assert len(parse_step(steps[0])[1]) == 1  # careless_from=1: the first line is careful
        left = len(p.ops) - 1
        for s in steps[1:-1]:
            k = len(parse_step(s)[1])
            choices += left >= 2
            careless += k == 2
            left -= k
    assert 0.25 < careless / choices < 0.35  # careless with chance 0.3 wherever two operations are left
    assert solution(problems[0]) == solution(problems[0], careless_rate=0.0)
    with pytest.raises(ValueError, match="careless_rate"):
        solution_steps(7, [("+", 5), ("*", 3)], style="shifted", careless_rate=0.5, rng=rng)


def test_careless_world_has_its_own_warm_start_cache_key(tmp_path, monkeypatch):
    """A changed world must never reuse the careful warm start (and vice versa): the key holds the
    careless settings; the careless one continues from the careful one."""
    from scope_bench.synthetic import model as model_mod

    built = []

    def fake_sft(base, out, **kw):
        built.append((Path(base).name, kw.get("careless_rate", 0.0)))
        (Path(out) / "config.json").write_text("{}")
        return Path(out)

    monkeypatch.setattr(model_mod, "tiny_model", lambda seed, cache_dir: tmp_path / "tiny")
    monkeypatch.setattr(model_mod, "sft_warm_start", fake_sft)
    careful = model_mod.warm_start_model(steps=5, cache_dir=tmp_path)
    a = model_mod.warm_start_model(steps=5, cache_dir=tmp_path, careless_rate=0.3)
    b = model_mod.warm_start_model(steps=5, cache_dir=tmp_path, careless_rate=0.2)
    assert len({careful, a, b}) == 3
    assert built == [("tiny", 0.0), (careful.name, 0.3), (careful.name, 0.2)]
    assert model_mod.warm_start_model(steps=5, cache_dir=tmp_path, careless_rate=0.3) == a and len(built) == 3
