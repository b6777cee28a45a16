"""What a user with 8 GPUs meets first (issue 20), checked on CPU through the commands they run:
the paper-scale recipe script composes, impossible GPU layouts are refused before Ray starts with the
layouts that work, a missing flash-attn or refiner key stops the launch with what to do, the refiner's
key reaches the Ray job, and the reward function is an import, not the driver's file path.

`main_ppo.run_ppo` (what starts Ray) is replaced by a recorder in the in-process tests: a check that
passes lets the launch reach it, a check that fails must stop before it."""

from __future__ import annotations

import http.server
import os
import re
import subprocess
import sys
import threading
from pathlib import Path

import pandas as pd
import pytest

pytest.importorskip("verl", reason="verl is installed by the test command (pip install -e .[verl])")

from scope_bench.cli import main as cli_main
from scope_bench.engines.verl.config import compose_config

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "examples" / "scope_qwen2.5_math_7b_8gpu.sh"
NO_FLASH = ["++actor_rollout_ref.model.override_config.attn_implementation=sdpa",
            "actor_rollout_ref.model.use_remove_padding=false"]


@pytest.fixture(scope="module")
def parquet(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("data") / "train.parquet"
    pd.DataFrame({"prompt": ["x"]}).to_parquet(path)
    return path


@pytest.fixture()
def launched(monkeypatch):
    """The configs `scope-bench train --backend verl` handed to verl's run_ppo (Ray never starts)."""
    from verl.trainer import main_ppo

    calls = []
    monkeypatch.setattr(main_ppo, "run_ppo", lambda config, task_runner_class: calls.append(config))
    return calls


def run_script(parquet: Path, tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    bin_dir = str(Path(sys.executable).parent)
    environ = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "TRAIN": str(parquet), "VAL": str(parquet),
               "RUN_DIR": str(tmp_path / "run"), **env}
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, env=environ, timeout=300,
                          check=False)


def test_the_paper_recipe_script_composes_on_8_gpus_with_an_importable_reward(parquet, tmp_path):
    from omegaconf import OmegaConf
    from verl.utils.import_utils import load_extern_object

    out = run_script(parquet, tmp_path, "--print-config")
    assert out.returncode == 0, out.stderr[-3000:]
    cfg = OmegaConf.create(out.stdout)
    assert (cfg.trainer.nnodes, cfg.trainer.n_gpus_per_node) == (1, 8)
    assert cfg.method == "scope" and cfg.prm.kind == "vllm" and cfg.refiner.api_key_env == "DEEPSEEK_API_KEY"
    assert cfg.data.train_batch_size * cfg.actor_rollout_ref.rollout.n % 8 == 0
    assert cfg.trainer.max_actor_ckpt_to_keep == 2  # not every 7B checkpoint kept
    # the reward function is a package import, found on any node (not this machine's file path)
    path = cfg.reward.custom_reward_function.path
    assert path == "pkg://scope_bench.grading.verl_reward" and not Path(path).is_absolute()
    fn = load_extern_object(path, cfg.reward.custom_reward_function.name)
    assert fn("math500", "so \\boxed{4}", "4") == 1.0


def test_a_prm_served_on_a_training_gpu_is_refused_with_layouts_that_work(parquet, tmp_path):
    out = run_script(parquet, tmp_path, "--print-config", PRM_URL="http://localhost:8000")
    assert out.returncode == 2
    assert "run out of memory" in out.stderr and "Layouts that work on 1 node(s) of 8 GPUs" in out.stderr
    # the suggested same-node layout (PRM on GPU 7, training on the other 7) composes
    line = next(x for x in out.stderr.splitlines() if "PRM served on GPU 7" in x)
    gpus = re.search(r"--gpus-per-node (\d+)", line).group(1)
    overrides = re.findall(r"(?<!\S)[a-z_]+(?:\.[a-z_]+)+=\S+", line)
    assert gpus == "7" and "layout.node_gpus=8" in overrides
    ok = run_script(parquet, tmp_path, *overrides, "--print-config", PRM_URL="http://localhost:8000",
                    GPUS_PER_NODE=gpus)
    assert ok.returncode == 0, ok.stderr[-3000:]


@pytest.mark.parametrize("extra, reason", [
    (["--prm", "/models/prm"], "in-process PRM"),
    (["--prm-url", "http://prm:8000", "--gpus-per-node", "7"], "do not split over 7 ranks"),
])
def test_impossible_layouts_stop_before_ray(parquet, launched, capsys, extra, reason):
    args = ["train", "--backend", "verl", "--method", "scope", "--data", str(parquet), "--refiner-url", "http://t/v1",
            "--refiner", "r1", *extra, "refiner.api_key_env=null", *NO_FLASH]
    assert cli_main(args) == 2
    err = capsys.readouterr().err
    assert reason in err and "Layouts that work" in err and not launched
    # every layout it lists composes (the batch sizes it names split over the ranks it names)
    for line in [x for x in err.splitlines() if x.strip().startswith("- ")]:
        gpus = re.search(r"--gpus-per-node (\d+)", line)
        overrides = re.findall(r"(?<!\S)[a-z_]+(?:\.[a-z_]+)+=\S+", line) + [
            f"trainer.n_gpus_per_node={gpus.group(1)}" if gpus else "trainer.nnodes=1"]
        prm = ["prm.kind=qwen", "prm.path=/models/prm"] if "--prm PATH" in line else [
            "prm.kind=vllm", "prm.url=http://localhost:8000" if "localhost" in line else "prm.url=http://prm:8000"]
        compose_config("scope", overrides + prm + ["refiner.kind=openai", "refiner.url=http://t/v1", "refiner.model=r"])


def test_a_missing_flash_attn_stops_the_launch_with_what_to_do(parquet, launched, capsys):
    pytest.importorskip("torch")
    import importlib.util

    if importlib.util.find_spec("flash_attn") is not None:
        pytest.skip("flash-attn is installed here")
    args = ["train", "--backend", "verl", "--method", "grpo", "--data", str(parquet)]
    assert cli_main(args) == 2
    err = capsys.readouterr().err
    assert "flash-attn==2.8.3" in err and "attn_implementation=sdpa" in err and not launched
    assert cli_main(args + NO_FLASH) == 0 and len(launched) == 1  # the override it names runs


class _Refuse(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.send_response(401)
        self.end_headers()
        self.wfile.write(b'{"error": "invalid api key"}')

    def log_message(self, *args):
        pass


@pytest.fixture()
def refusing_server():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Refuse)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}/v1"
    server.shutdown()


def test_a_refiner_without_a_working_key_stops_before_step_1(parquet, launched, capsys, monkeypatch,
                                                              refusing_server):
    args = ["train", "--backend", "verl", "--method", "scope", "--data", str(parquet), "--prm-url", "http://prm:8000",
            "--refiner-url", refusing_server, "--refiner", "r1", "--refiner-key-env", "MY_REFINER_KEY", *NO_FLASH]
    monkeypatch.delenv("MY_REFINER_KEY", raising=False)
    assert cli_main(args) == 2
    assert "$MY_REFINER_KEY is not set" in capsys.readouterr().err and not launched
    monkeypatch.setenv("MY_REFINER_KEY", "wrong")
    assert cli_main(args) == 2
    err = capsys.readouterr().err
    assert "answered a first call with 401" in err and "SCOPE trains as GRPO" in err and not launched


def test_the_refiner_key_reaches_a_ray_cluster_started_without_it(monkeypatch):
    """With --ray-address the task runner gets the environment the cluster started with, not this
    shell's: the launcher's actor options carry the key (and W&B's) to it; config.yaml never holds them."""
    ray = pytest.importorskip("ray")
    from omegaconf import OmegaConf

    from scope_bench.engines.verl.launch import forwarded_env

    names = ["MY_REFINER_KEY", "WANDB_API_KEY"]
    for name in names:
        monkeypatch.delenv(name, raising=False)
    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)  # started without the variables
    try:
        monkeypatch.setenv("MY_REFINER_KEY", "sk-secret")  # then set in the shell that launches
        monkeypatch.setenv("WANDB_API_KEY", "wandb-secret")
        forwarded = forwarded_env(OmegaConf.create({"refiner": {"api_key_env": "MY_REFINER_KEY"}}))

        @ray.remote(num_cpus=0)
        def seen():
            return {n: os.environ.get(n) for n in names}

        assert ray.get(seen.remote()) == {n: None for n in names}  # what the task runner saw before
        got = ray.get(seen.options(runtime_env={"env_vars": forwarded}).remote())
        assert got == {"MY_REFINER_KEY": "sk-secret", "WANDB_API_KEY": "wandb-secret"}
    finally:
        ray.shutdown()
