"""`scope-bench train --backend verl --method sft | sft+rl`: verl's own SFT trainer, then (sft+rl) GRPO from it.

    scope-bench data distill --url ... --data data/math_l3to5/train.parquet --out data/distill   # teacher data
    scope-bench train --backend verl --method sft --model Qwen/Qwen2.5-Math-7B \\
        --sft-data data/distill/sft.parquet --gpus-per-node 8
    scope-bench train --backend verl --method sft+rl --model Qwen/Qwen2.5-Math-7B \\
        --sft-data data/distill/sft.parquet --data data/math_l3to5/train.parquet --gpus-per-node 8
    scope-bench train --backend verl --device cpu --method sft+rl --steps 2 sft.trainer.total_training_steps=2

The SFT phase is `verl.trainer.sft_trainer` launched with torchrun, as verl launches it, on the config
composed here (`config/scope_sft.yaml` over verl's `sft_trainer_engine`) and written to the phase folder
first. torchrun rather than `sft_trainer_ray`: SFT needs no rollout workers or task runner, one process
group per node is what verl's SFT examples run, and the GRPO phase then starts its own Ray cluster.
verl saves the last step with `hf_model`, so `checkpoints/global_step_N/huggingface` is a loadable model
(`scope-bench eval --ckpt`, and the GRPO phase's `actor_rollout_ref.model.path`).

Folders: `--method sft` writes its run folder (config.yaml, sft_log.jsonl, checkpoints/); `sft+rl` writes the
SFT phase to `<run_dir>/sft/` and the GRPO phase to `<run_dir>` as any verl run. `phase.json` in the SFT
folder marks a finished phase: `--resume` never redoes it, and resumes an unfinished one from verl's SFT
checkpoint. Overrides: with sft+rl, `sft.KEY=VALUE` goes to the SFT phase and the rest to GRPO; with sft,
every verl override (`sft.` prefix optional) goes to the SFT trainer.
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from omegaconf import DictConfig, OmegaConf, open_dict

from scope_bench.engines.methods import default_run_dir, method_files
from scope_bench.paths import TRAINERS_DIR

CONFIG_DIR = Path(__file__).resolve().parent / "config"  # config.py's, shared with the GRPO recipe
SFT_CONFIG_NAME = "scope_sft"
SFT_PREFIX = "sft."
PHASE_DIR = "sft"          # the SFT phase of sft+rl, inside the run folder
PHASE_FILE = "phase.json"  # written when the SFT phase finished: its model
LOG_FILE = "sft_log.jsonl"  # verl's file logger: {"step", "data": {"train/loss", ...}} per step


def sft_kind(method: str, trainers_dir: str | Path = TRAINERS_DIR) -> str | None:
    """"sft" (every step is SFT: `train.sft_steps: ${train.steps}`), "sft+rl" (SFT, then RL), or None."""
    _, method_file = method_files(method, trainers_dir)
    train = OmegaConf.to_container(method_file.get("train") or OmegaConf.create({}), resolve=False)
    if "sft_steps" not in train:
        return None
    return "sft" if str(train["sft_steps"]).replace(" ", "") == "${train.steps}" else "sft+rl"


def sft_overrides(kind: str, overrides: Sequence[str]) -> tuple[list[str], list[str]]:
    """`(SFT phase overrides, RL phase overrides)` of the user's KEY=VALUE list."""
    sft, rl = [], []
    for item in overrides:
        key = item.lstrip("+~")
        if key.startswith(SFT_PREFIX):
            sft.append(item[:len(item) - len(key)] + key[len(SFT_PREFIX):])
        else:
            (sft if kind == "sft" else rl).append(item)
    return sft, rl


def compose_sft_config(method: str, overrides: Sequence[str] = (), *, phase_dir: str | Path,
                       device: str = "gpu", seed: int = 0) -> DictConfig:
    """The SFT phase's verl config (`config/scope_sft.yaml` over `sft_trainer_engine`, `+sft_device=cpu`
    on CPU, then `overrides`), with `method`, `seed` and the phase folder's checkpoints."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base=None):
            device_config = ["+sft_device=cpu"] if device == "cpu" else []
            cfg = compose(SFT_CONFIG_NAME, overrides=device_config + list(overrides))
    except Exception as err:  # noqa: BLE001 - hydra raises several types for bad overrides
        raise ValueError(f"cannot compose the verl SFT config: {err}") from None
    finally:
        GlobalHydra.instance().clear()
    phase_dir = Path(phase_dir).resolve()
    with open_dict(cfg):
        cfg.method, cfg.seed, cfg.run_dir = method, seed, str(phase_dir)
        if cfg.trainer.experiment_name is None:
            cfg.trainer.experiment_name = f"{method}-seed{seed}"
        if str(cfg.trainer.default_local_dir).startswith("checkpoints/"):  # verl's default, relative to the cwd
            cfg.trainer.default_local_dir = str(phase_dir / "checkpoints")
        cfg.trainer.seed = cfg.engine.seed = seed
    if "hf_model" not in cfg.checkpoint.save_contents:
        raise ValueError("checkpoint.save_contents must keep hf_model: the SFT phase's model is its saved HF folder")
    return cfg


def write_synthetic_sft_parquet(path: Path, *, seed: int = 0, n: int = 2000) -> Path:
    """The embedded default's SFT data: the synthetic task's training problems (the RL phase's prompts) with
    the programmatic refiner's full solutions, as the local trainer's SFT steps get them, in `messages` form
    (the training prompt template, then the solution as the assistant turn)."""
    from scope_bench.core.interfaces import RefineRequest
    from scope_bench.io import write_parquet
    from scope_bench.prompts import chat_messages
    from scope_bench.synthetic.refiner import ProgrammaticRefiner
    from scope_bench.synthetic.task import generate_split

    rows = generate_split("train", n, seed)
    results = ProgrammaticRefiner(seed=seed).refine([RefineRequest(r["question"], "", r["answer"]) for r in rows])
    records = [{"messages": [*chat_messages(r["question"]), {"role": "assistant", "content": res.suffix.strip()}],
                "question": r["question"], "answer": r["answer"]} for r, res in zip(rows, results) if res.ok]
    write_parquet(records, path)
    return path.resolve()


def finished_model(phase_dir: Path) -> Path | None:
    """The model of a finished SFT phase (its `phase.json`), else None."""
    marker = Path(phase_dir) / PHASE_FILE
    if not marker.is_file():
        return None
    model = Path(json.loads(marker.read_text())["model"])
    return model if model.is_dir() else None


def saved_model(cfg: DictConfig) -> Path:
    """verl's last saved step's HF folder (`global_step_N/huggingface`, saved with `hf_model`)."""
    from scope_bench.eval.checkpoint import is_model_folder, latest_step

    step = latest_step(Path(cfg.trainer.default_local_dir))
    model = step / "huggingface" if step is not None else None
    if model is None or not is_model_folder(model):
        raise RuntimeError(f"verl's SFT trainer left no HF model under {cfg.trainer.default_local_dir} "
                           "(global_step_N/huggingface with weights)")
    return model


def torchrun_command(cfg: DictConfig, config_file: Path) -> list[str]:
    """verl's SFT entry point under torchrun, on the written config (hydra reads it as is)."""
    if int(cfg.trainer.nnodes) > 1:
        raise ValueError(f"trainer.nnodes={cfg.trainer.nnodes}: the SFT phase is launched on this node only; on "
                         f"several nodes run on each: torchrun --nnodes {cfg.trainer.nnodes} --nproc_per_node "
                         f"{cfg.trainer.n_gpus_per_node} --rdzv_backend c10d --rdzv_endpoint HOST:PORT -m "
                         f"verl.trainer.sft_trainer --config-path {config_file.parent} --config-name "
                         f"{config_file.stem}")
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes", "1",
            "--nproc_per_node", str(cfg.trainer.n_gpus_per_node), "-m", "verl.trainer.sft_trainer",
            "--config-path", str(config_file.parent), "--config-name", config_file.stem,
            f"hydra.run.dir={config_file.parent / 'hydra'}", "hydra.output_subdir=null"]


def run_sft_phase(cfg: DictConfig, *, cpu: bool, resume: bool) -> Path:
    """Run the SFT phase in `cfg.run_dir` unless `phase.json` says it finished; return its model."""
    phase_dir = Path(cfg.run_dir)
    done = finished_model(phase_dir)
    if done is not None and resume:
        print(f"SFT phase already finished: {done}")
        return done
    with open_dict(cfg):
        cfg.trainer.resume_mode = "auto" if resume else "disable"
    phase_dir.mkdir(parents=True, exist_ok=True)
    (phase_dir / PHASE_FILE).unlink(missing_ok=True)
    config_file = phase_dir / "config.yaml"
    config_file.write_text(OmegaConf.to_yaml(cfg))
    env = {**os.environ, "VERL_FILE_LOGGER_PATH": str(phase_dir / LOG_FILE)}
    if cpu:
        from scope_bench.engines.verl import cpu as cpu_layer

        env.update(cpu_layer.ENV, VERL_USE_EXTERNAL_MODULES=os.environ["VERL_USE_EXTERNAL_MODULES"])
    command = torchrun_command(cfg, config_file)
    print("SFT phase: " + " ".join(command), flush=True)
    code = subprocess.call(command, env=env)
    if code != 0:
        raise RuntimeError(f"verl's SFT trainer exited with {code} (config {config_file}); rerun with --resume "
                           "to continue from its last checkpoint")
    model = saved_model(cfg)
    (phase_dir / PHASE_FILE).write_text(json.dumps({"phase": "sft", "done": True, "model": str(model)}) + "\n")
    print(f"SFT phase written to {phase_dir}: model {model}")
    return model


def run(args, kind: str, run_rl, check_attention=None) -> int:
    """`--method sft` (the SFT phase is the run) or `sft+rl` (SFT in `<run_dir>/sft`, then `run_rl(args,
    extra)` with the SFT model as the actor's start). `run_rl` is the GRPO launcher (`launch.run_rl`),
    `check_attention` its flash-attn check (`launch.check_attention`), run on the SFT model block too."""
    cpu = getattr(args, "device", None) == "cpu"
    seed = getattr(args, "seed", None) or 0
    run_dir = Path(getattr(args, "run_dir", None) or default_run_dir(args.method, seed)).resolve()
    phase_dir = run_dir if kind == "sft" else run_dir / PHASE_DIR
    sft_user, rl_user = sft_overrides(kind, list(getattr(args, "set_overrides", None) or [])
                                      + list(getattr(args, "overrides", None) or []))
    # the SFT phase of sft+rl is an SFT run of its own (`method: sft`): evaluated, it gives the SFT row of
    # Table 1 and the run folder's final model the SFT+RL row
    name = "sft" if kind == "sft+rl" else str(method_files(args.method)[1].get("method") or args.method)
    cfg = compose_sft_config(name, _flags(args, kind, run_dir, cpu, seed) + sft_user,
                             phase_dir=phase_dir, device="cpu" if cpu else "gpu", seed=seed)
    if kind == "sft+rl":
        with open_dict(cfg):
            cfg.phase_of = str(method_files(args.method)[1].get("method") or args.method)
    printing = getattr(args, "print_config", False)
    if check_attention is not None and not cpu and not printing:
        check_attention(cfg, cfg.model, "model" if kind == "sft" else "sft.model")
    if printing:
        sys.stdout.write(("# SFT phase (verl.trainer.sft_trainer)\n" if kind != "sft" else "") + OmegaConf.to_yaml(cfg))
    if kind == "sft":
        if not printing:
            run_sft_phase(cfg, cpu=cpu, resume=bool(getattr(args, "resume", False)))
            print(f"run written to {run_dir} (config.yaml, {LOG_FILE}, checkpoints/global_step_N/huggingface)")
        return 0
    rl_args = copy.copy(args)
    rl_args.set_overrides, rl_args.overrides, rl_args.run_dir = [], rl_user, str(run_dir)
    model = Path(cfg.trainer.default_local_dir) / "global_step_N" / "huggingface"  # known once it is saved
    phase = lambda path: [f"actor_rollout_ref.model.path={path}", f"+sft.model={path}",
                          f"+sft.base_model={cfg.model.path}", f"+sft.run_dir={phase_dir}"]
    if printing:
        sys.stdout.write("# GRPO phase (RayPPOTrainer.fit), from the SFT phase's model\n")
        return run_rl(rl_args, phase(model))
    run_rl(rl_args, phase(model), check_only=True)  # a bad GRPO setting fails now, not after the SFT epochs
    return run_rl(rl_args, phase(run_sft_phase(cfg, cpu=cpu, resume=bool(getattr(args, "resume", False)))))


def _flags(args, kind: str, run_dir: Path, cpu: bool, seed: int) -> list[str]:
    """The command line's flags as SFT overrides: model, SFT data (--sft-data; with --method sft also
    --data), and with --method sft the steps, epochs, GPUs and logger. The embedded default on CPU fills
    in the model and the data when they are not named."""
    get = lambda name: getattr(args, name, None)
    out = []
    model = get("model")
    if model is None and cpu:
        from scope_bench.synthetic.model import warm_start_model

        model = warm_start_model()
    if model:
        out.append(f"model.path={model}")
    data = get("sft_data") or (get("data") if kind == "sft" else None)
    if data:
        if not str(data).endswith(".parquet") or not Path(data).exists():
            raise ValueError(f"--sft-data {data}: a `messages` parquet (from `scope-bench data distill`) is needed")
        out.append(f"data.train_files={Path(data).resolve()}")
    elif cpu:  # the embedded default (written when the run starts, not for --print-config)
        path = run_dir / "data" / "sft.parquet"
        out.append(f"data.train_files={path if get('print_config') else write_synthetic_sft_parquet(path, seed=seed)}")
    elif not get("print_config"):
        raise ValueError(f"--method {args.method} --backend verl needs --sft-data: a `messages` parquet of teacher "
                         "solutions (`scope-bench data distill ... --out DIR` writes DIR/sft.parquet)")
    if kind == "sft":
        flags = {"trainer.total_training_steps": get("steps"), "trainer.total_epochs": get("epochs"),
                 "trainer.nnodes": get("nnodes"), "trainer.n_gpus_per_node": get("gpus_per_node")}
        out += [f"{k}={v}" for k, v in flags.items() if v is not None]
        if get("val_data"):
            out.append(f"data.val_files={Path(args.val_data).resolve()}")
        if get("logger"):
            out.append(f"trainer.logger=[{','.join(x.strip() for x in args.logger.split(','))},file]")
    elif get("gpus_per_node"):
        out.append(f"trainer.n_gpus_per_node={args.gpus_per_node}")
    return out
