"""The README stays a user's guide that works: under 300 lines, every command it shows is run by a
test (through the same entry point: `scope-bench` or the script it names) that this file names, its
example benchmark YAML loads, and every relative link in it and in docs/ resolves."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
PAGES = [README, *sorted((ROOT / "docs").glob("*.md")), ROOT / "scope_bench" / "eval" / "README.md"]

# each command the README shows -> the test that runs it (file::function). A README command with no
# entry here, or an entry the README no longer shows, fails `test_every_readme_command_is_run_by_a_test`.
COVERED = {
    "make demo": "tests/test_demo.py::test_report_opens_with_table1_then_the_verdicts",
    "make test": "tests/test_readme.py::test_every_readme_command_is_run_by_a_test",
    "scope-bench train --method scope --steps 20 rollout.n=8":
        "tests/test_train.py::test_cli_trains_with_overrides",
    "scope-bench train --backend verl --device cpu --method scope --steps 2":
        "tests/test_verl_cpu_e2e.py::test_scope_rewrites_rows_and_the_mask_reaches_the_worker",
    "bash examples/scope_qwen2.5_math_7b_8gpu.sh --print-config":
        "tests/test_verl_paperscale.py::test_the_paper_recipe_script_composes_on_8_gpus_with_an_importable_reward",
    "scope-bench eval --ckpt runs/train/scope-seed0/final --tasks math500,arc_c --data-dir data/benchmarks":
        "tests/test_eval_smollm2.py::test_smollm2_on_math500_and_arc",
    "scope-bench eval --ckpt CKPT --tasks all --backend vllm --dp 8":
        "tests/test_vllm_eval.py::test_dp2_one_engine_and_hf_agree_greedy",
    "scope-bench report runs/eval runs/train --format both --out reports/main":
        "tests/test_reports.py::test_cli_writes_both_formats_with_labels",
    "scope-bench view runs/train/scope-seed0 runs/eval/scope-seed0 --out view.html":
        "tests/test_view.py::test_view_of_training_and_eval_runs",
    "scope-bench train --method bonus-shortest": "tests/test_stage_registry.py::test_a_toy_stage_trains_on_the_local_engine",
    "scope-bench eval --ckpt CKPT --tasks mybench --data mybench=rows.jsonl":
        "tests/test_method_identity.py::test_the_eval_summary_records_the_runs_method_and_backbone",
}


def fenced(text: str, language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", text, flags=re.DOTALL)


def readme_commands() -> list[str]:
    """The commands of the README's bash blocks: comments dropped, continuation lines joined."""
    commands = []
    for block in fenced(README.read_text(), "bash"):
        for line in block.replace("\\\n", " ").splitlines():
            command = re.sub(r"\s+#.*$", "", line).strip()
            if command and not command.startswith("#"):
                commands.append(" ".join(command.split()))
    return commands


def test_the_readme_is_short():
    assert len(README.read_text().splitlines()) < 300


def test_every_readme_command_is_run_by_a_test():
    """Each command maps to an existing test whose file calls the same entry point with every flag the
    command uses (values may differ: the tests run seconds-long versions); `make` targets run the
    command the README promises."""
    commands = readme_commands()
    assert sorted(set(commands)) == sorted(COVERED), "README commands and COVERED differ"
    makefile = (ROOT / "Makefile").read_text()
    for command, where in COVERED.items():
        path, _, name = where.partition("::")
        source = (ROOT / path).read_text()
        assert re.search(rf"^def {name}\(", source, flags=re.MULTILINE), f"{command}: no test {where}"
        words = command.split()
        if words[0] == "make":  # the target's recipe, then what the named test runs
            recipe = re.search(rf"^{words[1]}:.*\n\t(.*)", makefile, flags=re.MULTILINE).group(1)
            assert {"demo": "scope-bench demo", "test": "pytest"}[words[1]] in recipe, recipe
            continue
        if words[0] == "bash":
            assert words[1] in source or Path(words[1]).name in source, f"{where} does not run {words[1]}"
        else:
            assert f'"{words[1]}"' in source, f"{where} does not run `scope-bench {words[1]}`"
        for flag in (w for w in words if w.startswith("--")):
            assert f'"{flag}"' in source, f"{where} never passes {flag} (README: {command})"


def test_the_readme_benchmark_example_loads(tmp_path):
    from scope_bench.eval.tasks import load_task

    (example,) = [b for b in fenced(README.read_text(), "yaml") if b.startswith("# tasks/")]
    shutil.copy(ROOT / "tasks" / "_prompts.yaml", tmp_path / "_prompts.yaml")
    (tmp_path / "mybench.yaml").write_text(example)
    task = load_task("mybench", tmp_path)
    assert (task.name, task.version, task.header, task.metric) == ("mybench", 1, "MyBench", "pass@1")


def _slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces as hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves(page):
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.DOTALL)  # links, not code
    broken = []
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"[a-z]+:", target):
            continue
        file, _, anchor = target.partition("#")
        path = (page.parent / file).resolve() if file else page
        if not path.exists():
            broken.append(target)
        elif anchor and path.suffix == ".md":
            headings = re.findall(r"^#+ (.*)$", path.read_text(), flags=re.MULTILINE)
            if anchor not in {_slug(h) for h in headings}:
                broken.append(target)
    assert broken == [], f"{page.name}: links that do not resolve"
