"""`scope-bench train --backend verl`: compose the verl config of a method and run it on Ray.

    scope-bench data prepare --preset math-l3to5 --out data/math_l3to5      # once
    scope-bench train --backend verl --method scope --model Qwen/Qwen2.5-Math-7B \\
        --data data/math_l3to5/train.parquet --val-data data/math500/test.parquet \\
        --prm-url http://prm-host:8000 --refiner deepseek-reasoner --refiner-url https://api.deepseek.com/v1 \\
        --refiner-key-env DEEPSEEK_API_KEY --nnodes 1 --gpus-per-node 8 trainer.logger=[console,wandb]

    scope-bench train --backend verl --device cpu --method scope --steps 2  # dry run, embedded default

Starts a local Ray cluster, or joins one with `--ray-address` (or `RAY_ADDRESS`). With `--device cpu`,
whatever is not named (model, data, PRM, refiner) comes from the embedded default. This module
imports verl and Ray only inside `run`, so the command line stays light.
"""

from __future__ import annotations

import os
import sys
from contextlib import ExitStack
from pathlib import Path

CPU_MODULE = "scope_bench.engines.verl.cpu"


def add_arguments(parser) -> None:
    """The verl-only flags of `scope-bench train` (flags the parser already has are left alone)."""
    add = _adder(parser.add_argument_group("verl backend"), set(parser._option_string_actions))
    add("--sft-data", help="SFT data of --method sft / sft+rl: a `messages` parquet (`scope-bench data distill` "
                            "writes DIR/sft.parquet); default on CPU: the synthetic task's solutions")
    add("--ray-address", help="join this Ray cluster (default: RAY_ADDRESS, else start a local one)")
    add("--nnodes", type=int, help="nodes (trainer.nnodes, default 1)")
    add("--gpus-per-node", type=int, help="GPUs per node (trainer.n_gpus_per_node, default 8)")
    add("--prm-url", help="vLLM pooling server of the PRM (vllm serve ... --runner pooling); --prm names "
                          "the served model (default Qwen/Qwen2.5-Math-PRM-7B)")
    add("--prm-device", help="device of an in-process PRM (--prm PATH without --prm-url), default cuda")
    add("--refiner-concurrency", type=int, help="refiner calls in flight at once (default 32)")
    add("--epochs", type=int, help="training epochs (trainer.total_epochs, default 10)")
    add("--logger", help="comma-separated verl loggers: console, wandb, tensorboard, file (default console)")


def _adder(group, have: set):
    def add(flag, **kwargs):
        if flag not in have:
            group.add_argument(flag, **kwargs)

    return add


def verl_overrides(args) -> list[str]:
    """The command-line flags as config overrides; explicit KEY=VALUE overrides come last and win."""
    get = lambda name: getattr(args, name, None)
    out = []
    if get("model"):
        out.append(f"actor_rollout_ref.model.path={args.model}")
    if get("data"):
        train = _parquet(args.data, "--data")
        val = _parquet(get("val_data"), "--val-data") if get("val_data") else None
        out += [f"data.train_files={train}", f"data.val_files={val or train}"]
        if val is None:  # no validation set: verl still builds one, but never runs it
            out += ["trainer.val_before_train=false", "trainer.test_freq=-1"]
    flags = {"seed": get("seed"), "trainer.nnodes": get("nnodes"), "trainer.n_gpus_per_node": get("gpus_per_node"),
             "trainer.total_training_steps": get("steps"), "trainer.total_epochs": get("epochs"),
             "refiner.concurrency": get("refiner_concurrency"), "prm.device": get("prm_device")}
    out += [f"{k}={v}" for k, v in flags.items() if v is not None]
    if get("logger"):
        out.append(f"trainer.logger=[{','.join(x.strip() for x in args.logger.split(','))}]")
    if get("prm_url"):
        out += ["prm.kind=vllm", f"prm.url={args.prm_url}"] + ([f"prm.path={args.prm}"] if get("prm") else [])
    elif get("prm"):
        out += ["prm.kind=qwen", f"prm.path={args.prm}"]
    if get("refiner_url") or get("refiner"):
        out += ["refiner.kind=openai", f"refiner.url={get('refiner_url')}", f"refiner.model={get('refiner')}"]
    if get("refiner_key_env"):
        out.append(f"refiner.api_key_env={args.refiner_key_env}")
    out.append(f"trainer.resume_mode={'auto' if get('resume') else 'disable'}")
    return out + list(get("set_overrides") or []) + list(get("overrides") or [])


def _parquet(path: str, flag: str) -> str:
    if not path.endswith(".parquet"):
        raise ValueError(f"{flag} {path}: the verl backend reads verl-format parquet; convert it with "
                         "`scope-bench data prepare --dataset ... --out DIR`")
    if not Path(path).exists():
        raise FileNotFoundError(f"{flag} {path} not found")
    return str(Path(path).resolve())


def run(args) -> int:
    """A method with SFT steps runs verl's SFT trainer first (`sft.py`); the rest is the GRPO recipe."""
    from scope_bench.engines.verl.sft import run as run_with_sft
    from scope_bench.engines.verl.sft import sft_kind

    cpu = getattr(args, "device", None) == "cpu"
    if cpu:
        _enable_cpu_layer()
    kind = sft_kind(args.method)
    return run_with_sft(args, kind, run_rl, check_attention) if kind else run_rl(args)


def run_rl(args, extra: list[str] | tuple = (), check_only: bool = False) -> int:
    """The GRPO recipe on Ray; `extra` overrides come after the user's (sft+rl: the SFT model).
    `check_only`: compose and validate the config, nothing else (sft+rl checks it before its SFT phase)."""
    from omegaconf import open_dict

    cpu = getattr(args, "device", None) == "cpu"
    from scope_bench.engines.verl.config import LOSS_MODULE, compose_config, to_yaml

    with ExitStack() as services:
        # the dry run fills in what is not named; a GPU run names its model, data and services
        quiet = getattr(args, "print_config", False) or check_only
        embedded = embedded_default(args, services) if cpu and not quiet else []
        cfg = compose_config(args.method, embedded + verl_overrides(args) + list(extra),
                             run_dir=getattr(args, "run_dir", None), device="cpu" if cpu else "gpu")
        if check_only:
            return 0
        if getattr(args, "print_config", False):
            sys.stdout.write(to_yaml(cfg))
            return 0
        if getattr(args, "resume", False) and finished(cfg):
            print(f"run {cfg.run_dir} already finished its {cfg.trainer.total_training_steps} steps; nothing to resume")
            return 0
        if "???" in str(cfg.data.train_files):
            raise ValueError("--data is required with --backend verl (a parquet from `scope-bench data prepare`)")

        if not cpu:
            check_attention(cfg)
        check_refiner(cfg)
        os.environ.setdefault("VERL_USE_EXTERNAL_MODULES", LOSS_MODULE)  # the driver registers the loss too
        from scope_bench.engines.verl.trainer import ScopeTaskRunner
        from verl.trainer import main_ppo
        from verl.trainer.ppo.utils import need_critic, need_reference_policy
        from verl.utils.config import validate_config
        from verl.utils.device import auto_set_device

        with open_dict(cfg):
            address = getattr(args, "ray_address", None)
            if address:
                cfg.ray_kwargs.ray_init.address = address
            if cpu:
                _cpu_ray_settings(cfg)
        run_dir = Path(cfg.run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.yaml").write_text(to_yaml(cfg))
        auto_set_device(cfg)
        validate_config(config=cfg, use_reference_policy=need_reference_policy(cfg), use_critic=need_critic(cfg))
        main_ppo.run_ppo(cfg, task_runner_class=ScopeTaskRunner.options(**runner_options(cfg, cpu)))
    print(f"run written to {run_dir} (config.yaml, metrics.jsonl, checkpoints/)")
    return 0


# --------------------------------------------------------------------------- checks before Ray


def finished(cfg) -> bool:
    """verl's last checkpoint is at `trainer.total_training_steps` already: verl's `fit` would resume from it
    and still run one more step, so a resumed finished run (sft+rl's GRPO phase too) starts nothing."""
    from scope_bench.eval.checkpoint import STEP, latest_step

    total = cfg.trainer.get("total_training_steps")
    step = latest_step(Path(cfg.trainer.default_local_dir))
    return total is not None and step is not None and int(STEP.search(step.name).group(1)) >= int(total)

# what the task runner reads from its environment besides the refiner's key: with --ray-address it
# runs with the environment of `ray start`, not of this shell, so the launcher forwards these
FORWARD_ENV = ("WANDB_API_KEY", "WANDB_ENTITY", "WANDB_BASE_URL", "WANDB_MODE", "HF_TOKEN", "HF_ENDPOINT",
               "SCOPE_PRM_API_KEY")


def forwarded_env(cfg) -> dict[str, str]:
    """The variables of this shell the task runner needs (the refiner's key, W&B, the Hub), those set."""
    names = list(FORWARD_ENV) + ([cfg.refiner.api_key_env] if cfg.refiner.get("api_key_env") else [])
    return {name: os.environ[name] for name in names if os.environ.get(name)}


def runner_options(cfg, cpu: bool) -> dict:
    """Ray options of the task runner: the forwarded variables (in its options, not in config.yaml,
    so keys stay out of files and logs) and, for an in-process PRM on CUDA, its GPU."""
    options = {"runtime_env": {"env_vars": forwarded_env(cfg)}}
    if cfg.prm.kind == "qwen" and not cpu and str(cfg.prm.device or "cuda").startswith("cuda"):
        options["num_gpus"] = 1  # the in-process PRM lives in the task runner
    return options


def check_attention(cfg, model=None, key: str = "actor_rollout_ref.model") -> None:
    """The attention the actor config names (verl's default `flash_attention_2`) and the varlen
    kernels of `use_remove_padding` come from flash-attn; a missing one would fail in every worker after
    Ray started and the model loaded. Checked on the driver, which has the same environment. `model`,
    `key`: another model block (the SFT phase's `model`, set with `sft.model.*` in sft+rl)."""
    import importlib.util

    model = cfg.actor_rollout_ref.model if model is None else model
    impl = (model.get("override_config") or {}).get("attn_implementation", "flash_attention_2")
    needs = [f"attn_implementation={impl}"] if impl in ("flash_attention_2", "flash_attention_3") else []
    if model.get("use_remove_padding"):
        needs.append("use_remove_padding=true")
    if needs and importlib.util.find_spec("flash_attn") is None:
        raise ValueError(
            f"the actor uses flash-attn ({', '.join(needs)}) and it is not installed: pip install "
            "flash-attn==2.8.3 --no-build-isolation (verl 0.9.1's pin for torch 2.11; after torch), or run "
            f"without it: ++{key}.override_config.attn_implementation=sdpa {key}.use_remove_padding=false "
            "(slower, more memory)")


def check_refiner(cfg) -> None:
    """A refiner that cannot be reached with its key turns every rectification into a counted
    failure, so SCOPE would train as GRPO without a word: refuse an unset key variable, and an endpoint
    that answers a first call with 401/403/404 (a bad key or a wrong URL or model), before Ray starts."""
    from scope_bench.engines.stage import stage_of

    refiner = cfg.refiner
    if refiner.kind != "openai" or not stage_of(cfg).needs_refiner(cfg):
        return
    var = refiner.get("api_key_env")
    if var and not os.environ.get(var):
        raise ValueError(f"refiner.api_key_env={var}: ${var} is not set in this shell; export it (it is forwarded "
                         "to the Ray job), or pass refiner.api_key_env=null for an endpoint that takes no key")
    from scope_bench.engines.refiner import OpenAIRefiner

    OpenAIRefiner(refiner.url, refiner.model, api_key_env=var, timeout_s=60.0, retries=0).probe()


# --------------------------------------------------------------------------- the embedded default


def embedded_default(args, services: ExitStack) -> list[str]:
    """Overrides that put the embedded default wherever the user named nothing: the warm-started
    tiny model, the synthetic task as verl parquet (in the run dir), and the rule-based PRM and
    programmatic refiner served on loopback (`scope-bench serve`), so the real HTTP clients run.
    Loopback: the services reach a task runner on this machine (a local Ray cluster)."""
    out = []
    if not getattr(args, "model", None):
        from scope_bench.synthetic.model import warm_start_model

        out.append(f"actor_rollout_ref.model.path={warm_start_model()}")
    if not getattr(args, "data", None):
        from scope_bench.engines.methods import default_run_dir

        seed = getattr(args, "seed", None) or 0
        run_dir = Path(getattr(args, "run_dir", None) or default_run_dir(args.method, seed))
        train, val = write_synthetic_parquet(run_dir / "data", seed=seed)
        out += [f"data.train_files={train}", f"data.val_files={val}"]
    named_prm = getattr(args, "prm", None) or getattr(args, "prm_url", None)
    named_refiner = getattr(args, "refiner", None) or getattr(args, "refiner_url", None)
    if not (named_prm and named_refiner):
        from scope_bench.engines.serve import SyntheticServer

        server = services.enter_context(SyntheticServer(port=0))
        print(f"embedded default: synthetic PRM and refiner served at {server.url}")
        if not named_prm:
            out += ["prm.kind=vllm", f"prm.url={server.url}", "prm.path=synthetic-prm"]
        if not named_refiner:
            out += ["refiner.kind=openai", f"refiner.url={server.url}/v1", "refiner.model=synthetic-refiner",
                    "refiner.api_key_env=null"]  # the loopback server takes no key
    return out


def write_synthetic_parquet(out_dir: Path, *, seed: int = 0, n_train: int = 2000, n_val: int = 32):
    """The synthetic task's train and validation splits as verl parquet (disjoint by construction)."""
    from scope_bench.engines.verl.data_cli import to_verl_rows, write_parquet
    from scope_bench.synthetic.task import generate_split

    paths = []
    for split, n in (("train", n_train), ("val", n_val)):
        records, _ = to_verl_rows(generate_split(split, n, seed), where=f"synthetic {split}", split=split,
                                  data_source="synthetic")
        path = Path(out_dir) / f"{split}.parquet"
        write_parquet(records, path)
        paths.append(path.resolve())
    return paths


# --------------------------------------------------------------------------- CPU mode


def _enable_cpu_layer() -> None:
    """Every process of the run loads `engines/verl/cpu.py` (through verl's external-module hook),
    this one included, before verl looks for a device."""
    from scope_bench.engines.verl.config import LOSS_MODULE

    os.environ["VERL_USE_EXTERNAL_MODULES"] = f"{LOSS_MODULE},{CPU_MODULE}"
    os.environ["VERL_PLATFORM"] = "cpu"
    from scope_bench.engines.verl import cpu

    cpu.register()


def _cpu_ray_settings(cfg) -> None:
    from omegaconf import OmegaConf

    from scope_bench.engines.verl import cpu

    if not cfg.ray_kwargs.ray_init.get("address"):  # a started cluster declares its own (ray start --num-gpus)
        cfg.ray_kwargs.ray_init.num_gpus = int(cfg.trainer.nnodes) * int(cfg.trainer.n_gpus_per_node)  # logical
        cfg.ray_kwargs.ray_init.include_dashboard = False  # seconds and memory a dry run does not need
    else:
        cfg.ray_kwargs.ray_init.num_cpus = None
    env = cfg.ray_kwargs.ray_init.runtime_env
    env.env_vars = OmegaConf.merge(env.get("env_vars") or {}, {
        **cpu.ENV, "VERL_USE_EXTERNAL_MODULES": os.environ["VERL_USE_EXTERNAL_MODULES"]})
