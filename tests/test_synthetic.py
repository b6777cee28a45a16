"""The synthetic step-verifiable task: generator, rule-based PRM, programmatic refiner, and how they
plug into the core's SCOPE stage."""

from __future__ import annotations

import pytest

from scope_bench.core import ProcessRewardModel, Refiner, RefineRequest, Rollout, ScopeConfig, rectify_group
from scope_bench.core.steps import split_steps
from scope_bench.synthetic import (
    ProgrammaticRefiner,
    RuleBasedPRM,
    check_steps,
    generate_problems,
    parse_question,
)
from scope_bench.synthetic.task import DIFFICULTIES, generate_split, solution


def test_generator_is_seeded_and_covers_difficulties():
    a, b, c = generate_problems(30, seed=1), generate_problems(30, seed=1), generate_problems(30, seed=2)
    assert a == b and a != c
    assert {p.difficulty for p in a} == set(DIFFICULTIES)
    for p in a:
        assert len(p.ops) == DIFFICULTIES[p.difficulty]
        assert all(v >= 0 for v in p.values)  # subtraction never goes below zero
        assert parse_question(p.question) == (p.start, list(p.ops))


def test_solution_steps_are_blank_line_separated_and_end_boxed():
    p = generate_problems(3, seed=0)[2]
    steps = split_steps(solution(p))
    assert len(steps) == len(p.ops) + 1
    assert steps[-1] == f"The answer is \\boxed{{{p.answer}}}."
    assert all("\n" not in s for s in steps)


def test_splits_differ_and_rows_have_question_and_answer():
    train, val = generate_split("train", 50, seed=0), generate_split("val", 50, seed=0)
    assert {r["question"] for r in train} != {r["question"] for r in val}
    assert set(train[0]) == {"question", "answer", "difficulty"}
    with pytest.raises(ValueError, match="split"):
        generate_split("dev", 5)


def test_bad_question_is_named():
    with pytest.raises(ValueError, match="not a synthetic"):
        parse_question("What is 2 + 2?")


@pytest.fixture
def problem():
    # Start with 7, +5, *3, -4: 12, 36, 32
    return "Start with 7. Add 5, then multiply by 3, then subtract 4."


def test_prm_accepts_the_reference_solution(problem):
    prm = RuleBasedPRM()
    assert isinstance(prm, ProcessRewardModel)
    steps = ["7 + 5 = 12", "12 * 3 = 36", "36 - 4 = 32", "The answer is \\boxed{32}."]
    assert prm.score([problem], [steps]) == [[0.9, 0.9, 0.9, 0.9]]


@pytest.mark.parametrize("steps, expected", [
    (["7 + 5 = 13", "13 * 3 = 39", "39 - 4 = 35", "\\boxed{35}"], [False, False, False, False]),  # error carried
    (["7 + 5 = 12", "12 * 4 = 48", "48 - 4 = 44", "\\boxed{44}"], [True, False, False, False]),  # wrong operand
    (["7 + 5 = 12", "12 + 3 = 15"], [True, False]),  # wrong operation, truncated
    (["7 + 5 = 12", "12 * 3 = 36", "36 - 4 = 32", "\\boxed{31}"], [True, True, True, False]),  # wrong box
    (["7 + 5 = 12", "12 * 3 = 36", "36 - 4 = 32", "\\boxed{32}", "extra"], [True, True, True, True, False]),
    (["7 plus 5 is 12"], [False]),
])
def test_prm_finds_the_first_wrong_step(problem, steps, expected):
    assert check_steps(problem, steps) == expected
    assert RuleBasedPRM(0.8, 0.3).score([problem], [steps])[0] == [0.8 if ok else 0.3 for ok in expected]


def test_refiner_continues_any_prefix_correctly(problem):
    refiner = ProgrammaticRefiner()
    assert isinstance(refiner, Refiner)
    prefixes = ["", "7 + 5 = 12", "7 + 5 = 12\n\n", "7 + 5 = 12\n\n12 * 3 = 36\n\n"]
    results = refiner.refine([RefineRequest(problem, p, "32") for p in prefixes])
    for prefix, result in zip(prefixes, results):
        assert result.ok
        full = split_steps(prefix + result.suffix)
        assert all(check_steps(problem, full)) and len(full) == 4, (prefix, result.suffix)
    assert not results[1].suffix.startswith("7 + 5")  # a continuation, not a restart


@pytest.mark.parametrize("failure", ["error", "timeout"])
def test_refiner_can_fail(problem, failure):
    (result,) = ProgrammaticRefiner(failure=failure).refine([RefineRequest(problem, "7 + 5 = 12\n\n", "32")])
    assert not result.ok and result.error == failure


def test_refiner_wrong_answer_and_rewrite(problem):
    (wrong,) = ProgrammaticRefiner(failure="wrong").refine([RefineRequest(problem, "7 + 5 = 12\n\n", "32")])
    assert "\\boxed{33}" in wrong.suffix
    (rewrite,) = ProgrammaticRefiner(failure="rewrite").refine([RefineRequest(problem, "7 + 5 = 12\n\n", "32")])
    assert rewrite.suffix.startswith("7 + 5 = 12")
    with pytest.raises(RuntimeError):
        ProgrammaticRefiner(failure="raise").refine([RefineRequest(problem, "", "32")])
    with pytest.raises(ValueError, match="failure"):
        ProgrammaticRefiner(failure="explode")


def test_refiner_failure_rate_is_deterministic_per_request():
    requests = [RefineRequest(p.question, "", p.answer) for p in generate_problems(40, seed=5)]
    first = ProgrammaticRefiner(failure="error", failure_rate=0.5, seed=3).refine(requests)
    second = ProgrammaticRefiner(failure="error", failure_rate=0.5, seed=3)
    second.refine(requests[:7])  # history must not matter (a resumed run makes fewer calls)
    again = second.refine(requests)
    assert [r.ok for r in first] == [r.ok for r in again]
    assert 0 < sum(r.ok for r in first) < 40


def _rollout(question: str, text: str, answer: str, reward: float) -> Rollout:
    # a character-level "tokenizer" is enough for the core: one token per character
    return Rollout(question, answer, text, list(range(len(text))), [(i, i + 1) for i in range(len(text))], reward)


def _verify(text: str, answer: str) -> float:
    boxed = [s for s in split_steps(text) if "\\boxed{" in s]
    return float(bool(boxed) and boxed[-1].split("\\boxed{")[1].split("}")[0] == answer)


@pytest.mark.parametrize("failure, reason", [(None, None), ("error", "refiner_error:error"),
                                             ("timeout", "refiner_error:timeout"), ("wrong", "suffix_wrong"),
                                             ("rewrite", "prefix_rewritten")])
def test_scope_stage_salvages_a_near_miss(problem, failure, reason):
    """The core's stage with the rule-based PRM and programmatic refiner keeps the verified prefix
    (the first two steps) of the near miss and has the rest rewritten; refiner failures are skipped."""
    near_miss = "7 + 5 = 12\n\n12 * 3 = 36\n\n36 - 4 = 31\n\nThe answer is \\boxed{31}."
    group = [
        _rollout(problem, near_miss, "32", 0.0),
        _rollout(problem, "7 + 5 = 13\n\nThe answer is \\boxed{13}.", "32", 0.0),
        _rollout(problem, solution_text := "7 + 5 = 12\n\n12 * 3 = 36\n\n36 - 4 = 32\n\n\\boxed{32}", "32", 1.0),
    ]
    assert _verify(solution_text, "32") == 1.0
    out = rectify_group(group, prm=RuleBasedPRM(), refiner=ProgrammaticRefiner(failure=failure),
                        tokenize=lambda s: list(range(len(s))), verify=_verify, config=ScopeConfig())
    assert out.record.selected == 0 and out.record.prefix_steps == 2
    if failure is None:
        assert out.record.status == "rectified"
        rect = out.rectification
        assert rect.text.startswith("7 + 5 = 12\n\n12 * 3 = 36\n\n")
        assert all(check_steps(problem, split_steps(rect.text)))
        assert rect.offpolicy_mask.count(0) == rect.prefix_tokens == len("7 + 5 = 12\n\n12 * 3 = 36\n\n")
    else:
        assert out.record.status == "skipped" and out.record.reason == reason and out.rectification is None


def test_tiny_model_loads_like_a_checkpoint(tmp_path):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from scope_bench.prompts import prompt_text
    from scope_bench.synthetic import build_tiny_model

    torch.set_num_threads(1)
    path = build_tiny_model(tmp_path / "tiny")
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path)
    assert 0.5e6 < sum(p.numel() for p in model.parameters()) < 2e6
    assert 256 < len(tok) <= 512
    text = prompt_text(tok, "Start with 12. Add 7.")
    assert text.startswith("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n")
    assert text.endswith("<|im_start|>assistant\n") and "\\boxed{}" in text
    pieces = tok.convert_ids_to_tokens(tok("123 + 45", add_special_tokens=False)["input_ids"])
    assert [p for p in pieces if p.isdigit()] == list("12345")  # digits are single tokens
    ids = tok("7 + 5 = 12\n\nThe answer is \\boxed{12}.", add_special_tokens=False)["input_ids"]
    assert tok.decode(ids) == "7 + 5 = 12\n\nThe answer is \\boxed{12}."
    assert model.config.eos_token_id == tok.eos_token_id == tok.convert_tokens_to_ids("<|im_end|>")


def test_splits_are_disjoint_by_construction():
    """No validation or test problem is ever trained on, the SFT warm start's problems included."""
    from scope_bench.synthetic import generate_split, split_of, split_problems

    train = {r["question"] for r in generate_split("train", 3000, seed=0)}
    warm = {p.question for p in split_problems("train", 3000, seed=7)}  # as the warm start draws them
    val = [r["question"] for r in generate_split("val", 300, seed=0)]
    test = [r["question"] for r in generate_split("test", 300, seed=0)]
    assert not (train | warm) & (set(val) | set(test)) and not set(val) & set(test)
    assert len(set(val)) == len(val) and len(set(test)) == len(test)  # held-out splits never repeat
    assert {split_of(q) for q in val} == {"val"}
    assert [r["difficulty"] for r in generate_split("val", 6)] == ["easy", "medium", "hard"] * 2
    with pytest.raises(ValueError, match="unknown split"):
        generate_split("dev", 3)
