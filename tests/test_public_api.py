"""The public API resolves, and importing the package stays cheap (no torch until needed)."""

import subprocess
import sys

import scope_bench


def test_every_export_resolves():
    for name in scope_bench.__all__:
        assert getattr(scope_bench, name) is not None, name


def test_the_api_is_the_method_core_and_the_entry_points():
    """A narrow surface: the method's functions (eqs. 1-7) and train/evaluate/report; the rest is
    reached through its module, and a name outside the API says so."""
    import pytest

    assert sorted(scope_bench.__all__) == sorted([
        "split_steps", "step_token_spans", "verified_prefix_length", "selection_scores", "shaped_weight",
        "grpo_advantages", "hybrid_loss", "rectify_groups", "ScopeConfig", "math_reward", "choice_reward",
        "load_train_config", "train", "evaluate", "write_report"])
    with pytest.raises(AttributeError, match="no attribute 'Budget'"):
        scope_bench.Budget  # noqa: B018
    from scope_bench.demo import Budget
    from scope_bench.eval import load_task

    assert Budget and load_task


def test_import_does_not_load_torch_or_engines():
    code = "import sys, scope_bench, scope_bench.grading; print(sorted(m for m in ('torch', 'verl', 'vllm', 'httpx') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_cli_help_lists_every_command():
    from scope_bench.cli import COMMANDS

    out = subprocess.run([sys.executable, "-m", "scope_bench.cli", "--help"], capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stderr
    for command in COMMANDS:
        assert command in out.stdout
