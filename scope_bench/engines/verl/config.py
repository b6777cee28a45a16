"""The verl run config: hydra composes verl's `ppo_trainer` (from `pkg://verl.trainer.config`) under
`config/scope_trainer.yaml` (the paper's setup), and the method blocks come from the same
`trainers/base.yaml` + `trainers/<method>.yaml` the local trainer reads.

Overrides are hydra-style `key=value`: keys under a method block (`scope.tau=0.6`, `loss.lam=0.5`,
`refiner.url=...`) go to the method blocks, every other key to verl (`trainer.nnodes=2`,
`actor_rollout_ref.actor.optim.lr=5e-7`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from urllib.parse import urlparse

from omegaconf import DictConfig, OmegaConf, open_dict
from omegaconf.errors import OmegaConfBaseException

from scope_bench.engines.bill import check_bill_config
from scope_bench.engines.methods import check_method_blocks, check_services, default_run_dir, method_files
from scope_bench.engines.stage import check_stage
from scope_bench.paths import TRAINERS_DIR

CONFIG_DIR = Path(__file__).resolve().parent / "config"
CONFIG_NAME = "scope_trainer"
METHOD_BLOCKS = ("method", "stage", "stage_module", "seed", "scope", "loss", "prm_reward", "luffy", "prm", "refiner",
                 "metrics")
LOSS_MODULE = "scope_bench.engines.verl.loss"
REWARD_MODULE = "pkg://scope_bench.grading.verl_reward"  # verl's load_module imports pkg:// paths
LOOPBACK = ("localhost", "127.0.0.1", "::1", "0.0.0.0")


def split_overrides(overrides: Sequence[str]) -> tuple[list[str], list[str]]:
    """`(method-block overrides, verl overrides)`; each item must be `key=value`."""
    method, verl = [], []
    for item in overrides:
        if "=" not in item:
            raise ValueError(f"override {item!r} is not key=value")
        key = item.lstrip("+~").split("=", 1)[0]
        (method if key.split(".", 1)[0] in METHOD_BLOCKS else verl).append(item)
    return method, verl


def method_blocks(method: str, overrides: Sequence[str] = (), trainers_dir: str | Path = TRAINERS_DIR) -> DictConfig:
    """The method blocks of `trainers/base.yaml` + `trainers/<method>.yaml` + overrides (the other
    blocks, model, data, train..., are the local trainer's: verl has its own)."""
    base, method_file = method_files(method, trainers_dir)
    from scope_bench.engines.verl.sft import sft_kind

    if sft_kind(method, trainers_dir) == "sft":  # sft+rl's GRPO phase is composed here, its SFT phase in sft.py
        raise ValueError(f"method {method!r} is SFT only: it runs verl's SFT trainer (engines/verl/sft.py, "
                         "`scope-bench train --backend verl --method sft`), not the GRPO recipe")
    cfg = OmegaConf.merge(*(OmegaConf.masked_copy(c, [k for k in METHOD_BLOCKS if k in c]) for c in (base, method_file)))
    OmegaConf.set_struct(cfg, True)
    try:
        cfg = OmegaConf.merge(cfg, OmegaConf.from_dotlist([o.lstrip("+") for o in overrides]))
    except OmegaConfBaseException as err:
        key = getattr(err, "full_key", None) or "?"
        raise ValueError(f"bad method override {key!r} (not in trainers/base.yaml, or a wrong type): "
                         f"{str(err).splitlines()[0]}") from None
    return cfg


def dense_reward(blocks) -> bool:
    """The method gives per-step rewards (the dense PRM reward), trained with `config/advantage/dense.yaml`'s
    estimator (`advantage.py`); every other method with GRPO's."""
    return blocks.stage == "prm_reward" and blocks.prm_reward.form == "step"


def compose_config(method: str, overrides: Sequence[str] = (), *, trainers_dir: str | Path = TRAINERS_DIR,
                   run_dir: str | Path | None = None, device: str = "gpu") -> DictConfig:
    """The full, validated verl config of `method` (not yet resolved: verl resolves it itself).
    `device="cpu"` adds `config/device/cpu.yaml` (the CPU dry run's sizes and backends)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    method_overrides, verl_overrides = split_overrides(overrides)
    blocks = method_blocks(method, method_overrides, trainers_dir)
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base=None):
            device_config = ["+device=cpu"] if device == "cpu" else []  # under the user's overrides
            advantage = ["+advantage=dense"] if dense_reward(blocks) else []
            cfg = compose(CONFIG_NAME, overrides=device_config + advantage + list(verl_overrides))
    except Exception as err:  # noqa: BLE001 - hydra raises several types for bad overrides
        raise ValueError(f"cannot compose the verl config: {err}") from None
    finally:
        GlobalHydra.instance().clear()
    with open_dict(cfg):
        for key in METHOD_BLOCKS:
            cfg[key] = blocks[key]
        _derive(cfg, run_dir)
    validate(cfg)
    return cfg


def _derive(cfg: DictConfig, run_dir) -> None:
    """Settings that follow from the method blocks, unless the user set them."""
    if cfg.trainer.experiment_name is None:
        cfg.trainer.experiment_name = f"{cfg.method}-seed{cfg.seed}"
    run_dir = Path(run_dir or default_run_dir(cfg.method, cfg.seed)).resolve()
    cfg.run_dir = str(run_dir)
    if cfg.trainer.default_local_dir.startswith("checkpoints/"):  # verl's default, relative to the cwd
        cfg.trainer.default_local_dir = str(run_dir / "checkpoints")
    if cfg.trainer.rollout_data_dir is None and cfg.metrics.max_rollout_rows:  # the rollout record, for `view`
        cfg.trainer.rollout_data_dir = str(run_dir / "rollouts")
    if cfg.reward.custom_reward_function.path is None:  # an import on every node, not the driver's file path
        cfg.reward.custom_reward_function.path = REWARD_MODULE
    actor = cfg.actor_rollout_ref.actor
    actor.clip_ratio = actor.clip_ratio_low = actor.clip_ratio_high = cfg.loss.clip_eps  # verl's own metrics
    if cfg.loss.clip_ratio_c is not None:
        actor.clip_ratio_c = cfg.loss.clip_ratio_c
    cfg.data.seed = cfg.seed
    actor.data_loader_seed = cfg.seed
    env = cfg.ray_kwargs.ray_init.runtime_env
    env.env_vars = OmegaConf.merge(env.get("env_vars") or {}, {"VERL_USE_EXTERNAL_MODULES": LOSS_MODULE})


def validate(cfg: DictConfig) -> None:
    """Checks that name the offending key; verl validates the rest when the run starts."""
    check_method_blocks(cfg)
    check_services(cfg)  # the PRM and refiner blocks, as the local engine checks them
    check_bill_config(cfg.refiner, cfg.prm)  # prices and budget (engines/bill.py)
    stage = check_stage(cfg, "verl")
    if cfg.trainer.use_v1:
        raise ValueError("trainer.use_v1=true is not supported: the SCOPE stage plugs into RayPPOTrainer "
                         "(trainer.use_v1=false)")
    from scope_bench.engines.verl.advantage import ESTIMATOR

    estimator, why = (ESTIMATOR, "prm_reward.form=step: the outcome's and the steps' group advantages") \
        if dense_reward(cfg) else ("grpo", "group advantages after the stage")
    # a stage from outside scope_bench (stage_module) may give per-step rewards: it may pick the dense one
    allowed = {estimator, ESTIMATOR} if cfg.stage_module else {estimator}
    if cfg.algorithm.adv_estimator not in allowed:
        raise ValueError(f"algorithm.adv_estimator must be {estimator} ({why}), got {cfg.algorithm.adv_estimator!r}")
    if cfg.algorithm.adv_estimator == ESTIMATOR and not cfg.algorithm.norm_adv_by_std_in_grpo:
        raise ValueError(f"algorithm.norm_adv_by_std_in_grpo must be true with {ESTIMATOR} (the local trainer's "
                         "process advantages normalise by the group's std)")
    correction = cfg.algorithm.rollout_correction
    if correction.get("rollout_is") or correction.get("rollout_rs"):
        raise ValueError("algorithm.rollout_correction.rollout_is/rollout_rs must be null for every method: "
                         "refiner tokens have no rollout log-probs, so SCOPE's rows could not be corrected while "
                         "GRPO's would be, and the methods would train under different rules")
    if cfg.get("distillation", {}).get("enabled", False):
        raise ValueError("distillation.enabled=true is not supported: its loss would be replaced by the SCOPE "
                         "loss (scope_hybrid) without a word")
    actor = cfg.actor_rollout_ref.actor
    rewrites = stage.offpolicy  # rows with refiner tokens the policy never sampled
    regularisers = {"actor_rollout_ref.actor.use_kl_loss": actor.use_kl_loss,
                    "algorithm.use_kl_in_reward": cfg.algorithm.use_kl_in_reward,
                    "actor_rollout_ref.actor.entropy_coeff": actor.entropy_coeff != 0}
    on = [key for key, enabled in regularisers.items() if enabled]
    if rewrites and on:
        raise ValueError(f"{', '.join(on)}: with method {cfg.method}, verl would apply the KL/entropy terms to the "
                         "refiner's tokens too (they are not masked out of them); leave them off (the paper "
                         "trains without them)")
    if correction.get("bypass_mode", False):
        raise ValueError("algorithm.rollout_correction.bypass_mode must be false: refiner tokens were not "
                         "sampled by the policy, old log-probs are recomputed after the stage")
    if cfg.actor_rollout_ref.actor.policy_loss.loss_mode != "scope_hybrid":
        raise ValueError("actor_rollout_ref.actor.policy_loss.loss_mode must be scope_hybrid (eq. 6; "
                         f"GRPO is its all-zero-mask case), got {cfg.actor_rollout_ref.actor.policy_loss.loss_mode!r}")
    if stage.needs_prm(cfg) and cfg.prm.kind not in ("vllm", "qwen"):
        raise ValueError(f"method {cfg.method} needs a PRM: --prm-url URL (vLLM pooling server) or --prm PATH "
                         f"(in-process); prm.kind is {cfg.prm.kind!r}")
    if stage.needs_refiner(cfg) and (cfg.refiner.kind != "openai" or not cfg.refiner.url or not cfg.refiner.model):
        raise ValueError(f"method {cfg.method} needs a refiner: --refiner-url URL --refiner-model NAME "
                         "(an OpenAI-compatible endpoint)")
    check_layout(cfg)


def check_layout(cfg: DictConfig) -> None:
    """Refuse a GPU layout verl or the PRM cannot run, before Ray starts, naming layouts that work.

    verl's actor, rollout and reference share `trainer.nnodes * trainer.n_gpus_per_node` ranks, and
    every step's rows (`data.train_batch_size * rollout.n`) and mini-batches must split over them. An
    in-process PRM (`--prm PATH`, prm.kind=qwen on CUDA) lives in the task runner, which then takes one
    GPU outside verl's pool; a PRM served on this machine needs a GPU the rollouts do not use (vLLM
    rollouts take `gpu_memory_utilization` of theirs). `layout.node_gpus` is what each node has."""
    nnodes, per_node = int(cfg.trainer.nnodes), int(cfg.trainer.n_gpus_per_node)
    node_gpus = int(cfg.layout.node_gpus or per_node)
    if per_node > node_gpus:
        raise ValueError(f"trainer.n_gpus_per_node={per_node} is more than layout.node_gpus={node_gpus}")
    ranks = nnodes * per_node
    n = int(cfg.actor_rollout_ref.rollout.n)
    batch, mini = int(cfg.data.train_batch_size), int(cfg.actor_rollout_ref.actor.ppo_mini_batch_size)
    gpu = str(cfg.trainer.get("device") or "cuda") != "cpu"
    problem = None
    if cfg.prm.kind == "qwen" and gpu and str(cfg.prm.device or "cuda").startswith("cuda") \
            and nnodes * node_gpus < ranks + 1:
        problem = (f"an in-process PRM (--prm PATH) takes one GPU for the task runner, and verl takes all "
                   f"{ranks} of the {nnodes * node_gpus} GPUs")
    elif cfg.prm.kind == "vllm" and gpu and urlparse(str(cfg.prm.url)).hostname in LOOPBACK and node_gpus <= per_node:
        problem = (f"the PRM is served on this machine ({cfg.prm.url}) while verl's rollouts take every GPU of it "
                   f"({per_node}): the PRM server and a rollout engine on one GPU run out of memory")
    elif batch * n % ranks or mini * n % ranks:
        problem = (f"data.train_batch_size={batch} and actor_rollout_ref.actor.ppo_mini_batch_size={mini} times "
                   f"rollout.n={n} ({batch * n} and {mini * n} rows) do not split over {ranks} ranks")
    if problem:
        raise ValueError(f"GPU layout: {problem}. Layouts that work on {nnodes} node(s) of {node_gpus} GPUs:\n"
                         + "\n".join(f"  - {line}" for line in working_layouts(nnodes, node_gpus, batch, mini, n)))


def working_layouts(nnodes: int, node_gpus: int, batch: int, mini: int, n: int) -> list[str]:
    """The layouts `check_layout` accepts on this many nodes, as the flags that select them."""
    def sizes(ranks: int) -> str:
        if not (batch * n % ranks or mini * n % ranks):
            return ""
        b = next(x for x in range(batch, 0, -1) if x * n % ranks == 0)
        m = next(x for x in range(min(mini, b), 0, -1) if x * n % ranks == 0 and b % x == 0)
        return f" data.train_batch_size={b} actor_rollout_ref.actor.ppo_mini_batch_size={m}"

    out = [("PRM served on another machine (vllm serve Qwen/Qwen2.5-Math-PRM-7B --runner pooling there): "
            f"--prm-url http://PRM_HOST:8000 --gpus-per-node {node_gpus}{sizes(nnodes * node_gpus)}")]
    if node_gpus > 1:
        keep = node_gpus - 1
        visible = ",".join(map(str, range(keep)))
        out.append(f"PRM served on GPU {keep} of this node (CUDA_VISIBLE_DEVICES={keep} vllm serve ... --runner "
                   f"pooling), training on the others: CUDA_VISIBLE_DEVICES={visible} scope-bench train ... "
                   f"--prm-url http://localhost:8000 --gpus-per-node {keep} layout.node_gpus={node_gpus}"
                   f"{sizes(nnodes * keep)}")
    if nnodes > 1:
        out.append(f"PRM on a node of its own: --nnodes {nnodes - 1} for training and the PRM served on the last "
                   f"node (--prm-url http://PRM_NODE:8000){sizes((nnodes - 1) * node_gpus)}")
    if node_gpus > 1:
        out.append(f"in-process PRM on a GPU verl does not take: --prm PATH --gpus-per-node {node_gpus - 1} "
                   f"layout.node_gpus={node_gpus}{sizes(nnodes * (node_gpus - 1))}")
    return out


def to_yaml(cfg: DictConfig) -> str:
    return OmegaConf.to_yaml(cfg)
