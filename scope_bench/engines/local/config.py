"""Trainer configuration: `trainers/base.yaml` + `trainers/<method>.yaml` + command-line overrides,
composed with OmegaConf. Unknown keys and bad values fail here, before any model is loaded."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from scope_bench.engines.bill import check_bill_config
from scope_bench.engines.methods import (
    check_method_blocks,
    check_services,
    method_files,
    method_path,
    needs_prm,
    needs_refiner,
)
from scope_bench.engines.methods import need as check
from scope_bench.engines.stage import check_stage
from scope_bench.paths import TRAINERS_DIR

DTYPES = ("float32", "bfloat16", "float16")


def load_train_config(method: str, overrides: Sequence[str] | dict | None = None, *,
                      trainers_dir: str | Path = TRAINERS_DIR) -> DictConfig:
    """The resolved, validated config of `method`. `overrides` are "key=value" strings (dotted keys,
    YAML values, as Hydra writes them) or a nested/dotted dict."""
    base, method_file = method_files(method, trainers_dir)
    OmegaConf.set_struct(base, True)  # merging a key that base does not define raises
    cfg = _merge(base, method_file, str(method_path(method, trainers_dir)))
    cfg = _merge(cfg, _overrides(overrides), "overrides")
    try:
        OmegaConf.resolve(cfg)
    except OmegaConfBaseException as err:
        raise ValueError(f"cannot resolve the {method} config: {err}") from None
    _check_types(base, cfg)
    validate(cfg)
    return cfg


def _overrides(overrides) -> DictConfig:
    if not overrides:
        return OmegaConf.create({})
    if isinstance(overrides, dict):
        return OmegaConf.create(overrides) if not any("." in k for k in overrides) else \
            OmegaConf.from_dotlist([f"{k}={_yaml(v)}" for k, v in overrides.items()])
    items = []
    for item in overrides:
        if "=" not in item:
            raise ValueError(f"override {item!r} is not key=value")
        items.append(item.lstrip("+"))
    try:
        return OmegaConf.from_dotlist(items)
    except OmegaConfBaseException as err:
        raise ValueError(f"bad override: {err}") from None


def _yaml(value) -> str:
    return "null" if value is None else str(value).lower() if isinstance(value, bool) else str(value)


def _merge(cfg: DictConfig, other: DictConfig, where: str) -> DictConfig:
    try:
        return OmegaConf.merge(cfg, other)
    except OmegaConfBaseException as err:
        key = getattr(err, "full_key", None) or ""
        raise ValueError(f"unknown or invalid key {key!r} in {where}: {str(err).splitlines()[0]}") from None


def _check_types(base: DictConfig, cfg: DictConfig, prefix: str = "") -> None:
    """A value must keep its base type (an int may stand for a float; null is always allowed)."""
    for key in base:
        b, v = base[key], cfg[key]
        name = f"{prefix}{key}"
        if isinstance(b, DictConfig):
            _check_types(b, v, name + ".")
        elif b is None or v is None:
            continue
        elif isinstance(b, bool) and not isinstance(v, bool):
            raise ValueError(f"{name} must be true or false, got {v!r}")
        elif isinstance(b, (int, float)) and not isinstance(b, bool) and (
                isinstance(v, bool) or not isinstance(v, (int, float)) or isinstance(b, int) and isinstance(v, float)):
            raise ValueError(f"{name} must be {'an int' if isinstance(b, int) else 'a number'}, got {v!r}")
        elif isinstance(b, str) and not isinstance(v, str):
            raise ValueError(f"{name} must be a string, got {v!r}")
        elif isinstance(b, ListConfig) and not isinstance(v, ListConfig):
            raise ValueError(f"{name} must be a list, got {v!r}")


def validate(cfg: DictConfig) -> None:
    """Value checks that name the offending key."""
    def need(cond, key, msg):
        check(cfg, cond, key, msg)

    check_stage(cfg, "local")
    need(cfg.device == "auto" or cfg.device == "cpu" or str(cfg.device).startswith("cuda"), "device",
         "must be auto, cpu, cuda or cuda:N")
    need(cfg.threads >= 0, "threads", "must be >= 0")
    need(cfg.model.dtype in DTYPES, "model.dtype", f"must be one of {', '.join(DTYPES)}")
    need(cfg.model.warm_start_steps >= 0, "model.warm_start_steps", "must be >= 0")
    need(0 <= cfg.model.careless_rate <= 1, "model.careless_rate", "must lie in [0, 1]")
    need(cfg.model.careless_steps > 0, "model.careless_steps", "must be > 0")
    need(cfg.model.careless_from >= 0, "model.careless_from", "must be >= 0")
    need(cfg.rollout.n >= 2, "rollout.n", "must be >= 2 (group advantages need a group)")
    need(cfg.rollout.temperature > 0, "rollout.temperature", "must be > 0")
    need(0 < cfg.rollout.top_p <= 1, "rollout.top_p", "must lie in (0, 1]")
    need(cfg.rollout.max_new_tokens > 0, "rollout.max_new_tokens", "must be > 0")
    need(cfg.rollout.chunk_size > 0, "rollout.chunk_size", "must be > 0")
    need(cfg.train.steps > 0, "train.steps", "must be > 0")
    need(cfg.train.batch_size > 0, "train.batch_size", "must be > 0")
    need(cfg.train.lr > 0, "train.lr", "must be > 0")
    need(cfg.train.ppo_epochs > 0, "train.ppo_epochs", "must be > 0")
    need(cfg.train.micro_batch_size > 0, "train.micro_batch_size", "must be > 0")
    need(0 <= cfg.train.sft_steps <= cfg.train.steps, "train.sft_steps", "must lie in [0, train.steps]")
    check_services(cfg)  # the PRM and refiner blocks, as the verl engine checks them
    if cfg.refiner.kind == "programmatic":
        from scope_bench.synthetic.task import STYLES
        need(cfg.refiner.style in STYLES, "refiner.style", f"must be one of {', '.join(STYLES)}")
    need(cfg.eval.every >= 0, "eval.every", "must be >= 0")
    need(cfg.checkpoint.every >= 0, "checkpoint.every", "must be >= 0")
    need(cfg.checkpoint.keep_last >= 1, "checkpoint.keep_last", "must be >= 1")
    if cfg.refiner.failure is not None:
        from scope_bench.synthetic.refiner import FAILURES
        need(cfg.refiner.failure in FAILURES, "refiner.failure", f"must be one of {', '.join(FAILURES)}")
    synthetic_task = cfg.data.train == "synthetic"
    need(synthetic_task or cfg.prm.kind != "rule" or not needs_prm(cfg), "prm.kind",
         "rule only knows the synthetic task; pass --prm for other data")
    need(synthetic_task or cfg.refiner.kind != "programmatic" or not needs_refiner(cfg), "refiner.kind",
         "programmatic only knows the synthetic task; pass --refiner-url/--refiner for other data")
    if synthetic_task:
        from scope_bench.synthetic.task import ALL_DIFFICULTIES
        for d in cfg.data.difficulties:
            need(d in ALL_DIFFICULTIES, "data.difficulties", f"entries must be among {', '.join(ALL_DIFFICULTIES)}")
    check_method_blocks(cfg)
    check_bill_config(cfg.refiner, cfg.prm)  # prices and budget (engines/bill.py)


def to_yaml(cfg: DictConfig) -> str:
    return OmegaConf.to_yaml(cfg, resolve=True)
