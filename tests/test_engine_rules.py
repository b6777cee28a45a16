"""Rules both engines share are written once (`engines/methods.py`): the same bad PRM, refiner or
LUFFY setting is refused by the local and the verl config with the same message naming its key, and a
run with no run dir lands in the same folder of the project, wherever the command starts."""

from __future__ import annotations

import pytest

from scope_bench.engines.local import load_train_config
from scope_bench.engines.methods import default_run_dir
from scope_bench.paths import PROJECT_ROOT

BAD_SERVICES = [
    (["prm.kind=vllm"], "prm.url is required with prm.kind=vllm"),
    (["prm.kind=qwen"], "prm.path is required with prm.kind=qwen"),
    (["prm.kind=vllm", "prm.url=http://p", "prm.retry_s=-1"], "prm.retry_s must be >= 0"),
    (["prm.kind=remote"], "prm.kind must be rule, qwen or vllm"),
    (["refiner.kind=openai", "refiner.url=http://t/v1"], "refiner.url and refiner.model are required"),
    (["refiner.error_rate=2"], "refiner.error_rate must lie in"),
    (["luffy.source=disk"], "luffy.source must be refiner or data"),
]


@pytest.fixture(scope="module")
def verl_config():
    """A composed verl config (hydra takes seconds, so once); each case edits a copy and validates it."""
    from scope_bench.engines.verl.config import compose_config

    return compose_config("grpo")


@pytest.mark.parametrize("overrides, message", BAD_SERVICES)
def test_both_engines_refuse_a_bad_service_setting_alike(overrides, message, verl_config):
    from omegaconf import OmegaConf

    from scope_bench.engines.verl.config import validate

    with pytest.raises(ValueError, match=message):
        load_train_config("grpo", overrides)
    cfg = OmegaConf.merge(verl_config, OmegaConf.from_dotlist(overrides))
    with pytest.raises(ValueError, match=message):
        validate(cfg)


def test_both_engines_default_to_one_run_folder_in_the_project(tmp_path, monkeypatch):
    from scope_bench.engines.verl.config import compose_config

    monkeypatch.chdir(tmp_path)  # not the project: the folder must not follow the working directory
    expected = PROJECT_ROOT / "runs" / "train" / "grpo-seed3"
    assert default_run_dir("grpo", 3) == expected
    assert compose_config("grpo", ["seed=3"]).run_dir == str(expected.resolve())
