"""Fail fast and clearly, offline and on bad input (issue 12, item 4): each check is fed the bad input
and its message is checked."""

import pytest

from scope_bench.eval import checks
from scope_bench.eval.checks import (
    DATA_DIR_ENV,
    HubUnreachable,
    check_checkpoint,
    context_length,
    new_token_budget,
    overlong_message,
    overlong_prompts,
)
from scope_bench.eval.data import load_problems
from scope_bench.eval.tasks import load_task
from scope_bench.paths import SHARED_DATA_DIR

BENCH = SHARED_DATA_DIR / "benchmarks"
needs_data = pytest.mark.skipif(not BENCH.exists(), reason=f"shared benchmark data not at {BENCH}")


def test_missing_checkpoint_is_no_such_folder(tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError, match=r"no such folder: .*does-not-exist/final.*nor a Hugging Face"):
        check_checkpoint(str(tmp_path / "does-not-exist" / "final"))
    with pytest.raises(FileNotFoundError, match=r"no such file: .*model\.gguf"):
        check_checkpoint(str(tmp_path / "model.gguf"))
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs").mkdir()
    # `runs/final` is also a valid repo id; `runs/` being a folder here says it is a local path
    with pytest.raises(FileNotFoundError, match=r"no such folder: runs/final .*runs/ is a folder here"):
        check_checkpoint("runs/final")


def test_existing_paths_hub_ids_and_served_names_pass(tmp_path):
    check_checkpoint(str(tmp_path))
    check_checkpoint("Qwen/Qwen2.5-Math-7B")  # downloaded by the backend
    check_checkpoint("gpt2")
    check_checkpoint("/no/such/served-model", backend="openai")  # a served model's name, never a path
    assert not checks.looks_like_repo_id("a/b/c") and not checks.looks_like_repo_id("./x")


def test_offline_hub_dataset_fails_at_once_naming_local_options(monkeypatch):
    """Nothing listens on port 9 of this machine: the probe is refused at once, and the Hub client
    (which would retry with back-off) is never called."""
    import datasets

    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", DATA_DIR_ENV, *checks.PROXY_VARS):
        monkeypatch.delenv(var, raising=False)

    def must_not_run(*args, **kwargs):
        raise AssertionError("load_dataset was called although the Hub is unreachable")

    monkeypatch.setattr(datasets, "load_dataset", must_not_run)
    with pytest.raises(HubUnreachable, match=r"task 'math500': cannot reach http://127.0.0.1:9 .*"
                                             r"HuggingFaceH4/MATH-500.*--data-dir DIR \(or set "
                                             r"SCOPE_BENCH_DATA_DIR=DIR once\).*--data math500=PATH"):
        load_problems(load_task("math500"))


def test_behind_a_proxy_the_probe_goes_to_the_proxy(monkeypatch):
    import socket

    monkeypatch.setenv("HF_ENDPOINT", "https://127.0.0.1:9")  # unreachable directly
    for var in checks.PROXY_VARS:
        monkeypatch.delenv(var, raising=False)
    assert not checks.hub_reachable()
    with socket.socket() as proxy:  # a listening "proxy" on this machine
        proxy.bind(("127.0.0.1", 0))
        proxy.listen()
        monkeypatch.setenv("HTTPS_PROXY", f"http://127.0.0.1:{proxy.getsockname()[1]}")
        assert checks.hub_reachable()


@needs_data
def test_data_folder_from_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv(DATA_DIR_ENV, str(BENCH))
    problems, origin = load_problems(load_task("aime24"))
    assert len(problems) == 30 and origin.startswith(str(BENCH / "qwen/aime24.jsonl"))
    monkeypatch.setenv(DATA_DIR_ENV, str(tmp_path / "nowhere"))
    with pytest.raises(FileNotFoundError, match=r"no such folder: .*nowhere \(given by \$SCOPE_BENCH_DATA_DIR"):
        load_problems(load_task("aime24"))
    # an explicit --data-dir wins over the environment
    assert load_problems(load_task("aime24"), BENCH)[0] == problems


def test_prompt_longer_than_the_context_is_flagged(tmp_path):
    from _tiny_model import build_tiny_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = build_tiny_model(tmp_path / "tiny")
    model, tok = AutoModelForCausalLM.from_pretrained(path), AutoTokenizer.from_pretrained(path)
    context = context_length(model, tok)
    assert context == model.config.max_position_embeddings == 2048  # the tokenizer sets no limit
    assert context_length(model, tok, max_model_len=512) == 512  # vLLM's --max-model-len wins
    short = tok("What is 1+1?")["input_ids"]
    long = tok("The answer is \\boxed{42}. " * 400, verbose=False)["input_ids"]
    assert len(long) > context > len(short)
    assert overlong_prompts([len(short), len(long), context], context) == [1, 2]
    assert overlong_message(len(long), context) == (
        f"prompt_too_long: the prompt has {len(long)} tokens, the model's context is 2048")
    assert new_token_budget(2000, 8192, context) == 48 and new_token_budget(10, 64, None) == 64
    assert overlong_prompts([10**6], None) == []  # unknown context: nothing is flagged


def test_eval_command_fails_at_once_on_a_missing_checkpoint(tmp_path, capsys):
    from scope_bench.cli import main

    code = main(["eval", "--ckpt", str(tmp_path / "runs" / "nope"), "--tasks", "math500",
                 "--out", str(tmp_path / "out"), "--limit", "1"])
    assert code == 2 and "no such folder" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()  # nothing was started


def test_a_prompt_longer_than_the_context_is_recorded_per_problem(tmp_path):
    """Through the HF backend: the long problem's samples are `prompt_too_long` (empty, graded 0),
    the short one is sampled as usual, and nothing raises for the batch."""
    from _tiny_model import build_tiny_model

    from scope_bench.eval.backends import GenerationRequest, HFBackend
    from scope_bench.eval.tasks import Sampling

    backend = HFBackend(str(build_tiny_model(tmp_path / "tiny")), batch_size=4)
    sampling = Sampling(n=2, temperature=1.0, top_p=1.0, max_tokens=4)
    out = backend.generate([GenerationRequest("What is 1+1?", sampling, 1),
                            GenerationRequest("The answer is 42. " * 1500, sampling, 2)])
    assert [g.finish_reason for g in out[1]] == ["prompt_too_long"] * 2 and out[1][0].text == ""
    assert len(out[0]) == 2 and all(g.finish_reason in ("stop", "length") for g in out[0])
