"""The conformance file (tests/data/grading_conformance.yaml): answer formats of the major harnesses
and prompts, and the answer kinds, each with the verdict the grader must give and plain Math-Verify's.
Every row where the two differ must say why (`reason`), and no row may carry a stale reason."""

from pathlib import Path

import pytest
import yaml

from scope_bench.grading import choice_reward, grade_math_batch
from scope_bench.grading.policy import GradingPolicy

ROWS = yaml.safe_load((Path(__file__).parent / "data" / "grading_conformance.yaml").read_text())
CATEGORIES = {"minerva", "qwen-math", "deepseek-r1", "lm-eval-boxed", "numbers", "units", "percents", "sets",
              "intervals", "matrices", "mixed-numbers", "multiple-boxes", "free-text", "choice-letters"}


def _label(row) -> str:
    return f"[{row['category']}] {row['response'][:70]!r} vs gold {row['gold']!r}"


def _ours(rows) -> list[bool]:
    """The project's verdicts: one batch per policy (as eval grades), choice rows by choice_reward."""
    verdicts: dict[int, bool] = {}
    by_policy: dict[tuple, list[int]] = {}
    for i, row in enumerate(rows):
        if row.get("kind") == "choice":
            verdicts[i] = choice_reward(row["response"], row["gold"]) == 1.0
        else:
            by_policy.setdefault(tuple(sorted((row.get("policy") or {}).items())), []).append(i)
    for policy, idx in by_policy.items():
        grades = grade_math_batch([rows[i]["response"] for i in idx], [rows[i]["gold"] for i in idx],
                                  policy=GradingPolicy.from_dict(dict(policy)), workers=1)
        verdicts.update((i, g.correct) for i, g in zip(idx, grades))
    return [verdicts[i] for i in range(len(rows))]


def _plain_math_verify(row) -> bool:
    from math_verify import parse, verify

    return bool(verify(parse("\\boxed{" + row["gold"] + "}"), parse(row["response"])))


def test_the_file_covers_every_category_and_is_well_formed():
    assert {row["category"] for row in ROWS} == CATEGORIES
    for row in ROWS:
        assert set(row) <= {"category", "response", "gold", "expected", "math_verify", "reason", "policy", "kind"}
        assert isinstance(row["expected"], bool) and isinstance(row["math_verify"], bool), _label(row)
    assert len(ROWS) >= 60


def test_the_grader_gives_every_expected_verdict():
    wrong = [_label(row) for row, ours in zip(ROWS, _ours(ROWS)) if ours != row["expected"]]
    assert wrong == []


def test_every_disagreement_with_math_verify_is_named_with_its_reason(capsys):
    """The recorded Math-Verify verdict is Math-Verify's (so the file stays true as it updates); every
    row where the project's expected verdict differs from it has a reason, and only those rows."""
    stale = [_label(row) for row in ROWS if row.get("kind") != "choice" and _plain_math_verify(row) != row["math_verify"]]
    assert stale == []
    on_purpose = [row for row in ROWS if row["expected"] != row["math_verify"] and not row.get("policy")]
    unexplained = [_label(row) for row in on_purpose if not row.get("reason")]
    needless = [_label(row) for row in ROWS if row.get("reason") and row["expected"] == row["math_verify"]]
    assert unexplained == [] and needless == []
    with capsys.disabled():
        print(f"\n{len(on_purpose)} rows where the grader and Math-Verify disagree on purpose:")
        for row in on_purpose:
            print(f"  {_label(row)}: {row['reason']}")
    assert len(on_purpose) >= 8


@pytest.mark.parametrize("bad, message", [({"unboxed": "loose"}, "grading.unboxed"),
                                          ({"percent": 1}, "grading.percent"),
                                          ({"decimal_comma": "yes"}, "grading.decimal_comma"),
                                          ({"boxes": 2}, "unknown key")])
def test_a_bad_policy_names_the_field(bad, message):
    with pytest.raises(ValueError, match=message):
        GradingPolicy.from_dict(bad)
