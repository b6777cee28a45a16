"""What a method is, for every engine: `trainers/base.yaml` + `trainers/<method>.yaml`, over the
defaults of the method blocks (`scope`, `loss`, `prm_reward`), which live once, in the core's config
dataclasses. What a method needs (PRM, refiner) is its stage's registry entry (`engines/stage.py`).
The core and the registry are imported when used: the CLI lists methods without loading torch."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from scope_bench.paths import PROJECT_ROOT, TRAINERS_DIR


def available_methods(trainers_dir: str | Path = TRAINERS_DIR) -> list[str]:
    return sorted(p.stem for p in Path(trainers_dir).glob("*.yaml") if p.stem != "base")


def method_path(method: str, trainers_dir: str | Path = TRAINERS_DIR) -> Path:
    """`trainers/<method>.yaml`, or `method` itself when it names a YAML file (a method kept outside
    the project, composed over the same `base.yaml`)."""
    if method.endswith((".yaml", ".yml")):
        if not Path(method).is_file():
            raise FileNotFoundError(f"method file {method} not found")
        return Path(method)
    methods = available_methods(trainers_dir)
    if method not in methods:
        raise ValueError(f"unknown method {method!r}; choose from {', '.join(methods)} (files in {trainers_dir}), "
                         "or give the path of a method YAML")
    return Path(trainers_dir) / f"{method}.yaml"


def method_name(method: str) -> str:
    """The name of `--method` (a path's file stem), for default run folders."""
    return Path(method).stem if method.endswith((".yaml", ".yml")) else method


def default_run_dir(method: str, seed: int) -> Path:
    """Where a run writes when no run dir is given, for both engines: runs/train/<method>-seed<seed>
    under the project root (as the demo's runs/demo), wherever the command is started from."""
    return PROJECT_ROOT / "runs" / "train" / f"{method_name(method)}-seed{seed}"


def method_files(method: str, trainers_dir: str | Path = TRAINERS_DIR) -> tuple[DictConfig, DictConfig]:
    """`(base, method file)`: `base.yaml` over the dataclass defaults (every known key, the struct a
    method file and overrides may only fill in) and the method's YAML as written."""
    from scope_bench.core.config import method_defaults

    path = method_path(method, trainers_dir)
    base = OmegaConf.merge(OmegaConf.create(method_defaults()), load_yaml(Path(trainers_dir) / "base.yaml"))
    return base, load_yaml(path)


def load_yaml(path: Path) -> DictConfig:
    if not path.exists():
        raise FileNotFoundError(f"trainer config {path} not found")
    try:
        return OmegaConf.load(path)
    except Exception as err:  # noqa: BLE001 - yaml errors come in several types
        raise ValueError(f"cannot parse {path}: {err}") from None


def needs_prm(cfg) -> bool:
    """Whether a run of `cfg` scores steps: its stage does, or near-miss metrics are on."""
    from scope_bench.engines.stage import stage_of

    return bool(cfg.metrics.near_miss) or stage_of(cfg).needs_prm(cfg)


def needs_refiner(cfg) -> bool:
    """Whether a run of `cfg` asks a teacher: its stage does, or it has SFT steps."""
    from scope_bench.engines.stage import stage_of

    sft = cfg.get("train", {}).get("sft_steps", 0) if isinstance(cfg, DictConfig) else 0
    return stage_of(cfg).needs_refiner(cfg) or bool(sft)


def need(cfg, cond, key: str, msg: str) -> None:
    """Refuse a config value, naming its key and what it holds."""
    if not cond:
        raise ValueError(f"{key} {msg}, got {OmegaConf.select(cfg, key)!r}")


def check_services(cfg) -> None:
    """The PRM, refiner and LUFFY blocks, one set of rules for both engines: each kind and the
    fields it needs (a served PRM its URL, an in-process one its path, an OpenAI refiner URL and
    model), retry and error ranges."""
    need(cfg, cfg.prm.kind in ("rule", "qwen", "vllm"), "prm.kind", "must be rule, qwen or vllm")
    need(cfg, cfg.prm.kind != "vllm" or cfg.prm.url, "prm.url", "is required with prm.kind=vllm")
    need(cfg, cfg.prm.kind != "qwen" or cfg.prm.path, "prm.path", "is required with prm.kind=qwen")
    need(cfg, cfg.prm.retry_s >= 0, "prm.retry_s", "must be >= 0")
    need(cfg, 0 <= cfg.prm.fp_rate <= 1 and 0 <= cfg.prm.fn_rate <= 1, "prm.fp_rate",
         "and prm.fn_rate must lie in [0, 1]")
    need(cfg, cfg.refiner.kind in ("programmatic", "openai"), "refiner.kind", "must be programmatic or openai")
    need(cfg, cfg.refiner.kind != "openai" or (cfg.refiner.url and cfg.refiner.model), "refiner.url",
         "and refiner.model are required with refiner.kind=openai")
    need(cfg, 0 <= cfg.refiner.error_rate <= 1, "refiner.error_rate", "must lie in [0, 1]")
    need(cfg, cfg.luffy.source in ("refiner", "data"), "luffy.source", "must be refiner or data")


def check_method_blocks(cfg) -> None:
    """Each method block through its dataclass (the range checks, naming the key)."""
    from scope_bench.core.config import METHOD_CONFIGS, from_dict

    for name, cls in METHOD_CONFIGS.items():
        from_dict(cls, OmegaConf.to_container(cfg[name], resolve=True), name)
