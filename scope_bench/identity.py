"""What a training run is, as its engine wrote it: the method (the name of its `trainers/*.yaml`,
`method:` in the run's config.yaml, also on every metrics.jsonl row) and the backbone (the model it
started from). Evaluation records both in summary.json from the checkpoint's run, so reports key
their rows on names written when the run was made instead of guessing from folder names."""

from __future__ import annotations

from pathlib import Path

import yaml

from scope_bench.paths import CACHE_DIR

RUN_CONFIG = "config.yaml"
SYNTHETIC_BACKBONE = "synthetic"  # the tiny synthetic policy (model.path null, or a cached warm start)
# folders inside a run dir that hold a checkpoint (local: final/, checkpoints/step_N; verl:
# checkpoints/global_step_N/actor, merged into merged_hf/); they add nothing to a label
_CHECKPOINT_FOLDERS = ("final", "checkpoints", "actor", "merged_hf", "huggingface")


def backbone_name(model_path: str | None) -> str:
    """The backbone a run started from: the last part of its model path or Hub id
    ("Qwen/Qwen2.5-Math-7B" -> "Qwen2.5-Math-7B"), or "synthetic" for the synthetic tiny model."""
    if not model_path:
        return SYNTHETIC_BACKBONE
    path = Path(str(model_path))
    if path.is_absolute() and path.resolve().is_relative_to(CACHE_DIR.resolve() / "synthetic"):
        return SYNTHETIC_BACKBONE
    return path.name or str(model_path)


def run_identity(run_dir: str | Path) -> dict | None:
    """`{"method", "backbone"}` of a training run dir from its config.yaml (either engine's layout);
    None when the folder holds no run config naming a method."""
    path = Path(run_dir) / RUN_CONFIG
    if not path.is_file():
        return None
    cfg = yaml.safe_load(path.read_text()) or {}
    if not isinstance(cfg, dict) or not cfg.get("method"):
        return None
    local = (cfg.get("model") or {}).get("path") if isinstance(cfg.get("model"), dict) else None
    verl = ((cfg.get("actor_rollout_ref") or {}).get("model") or {}).get("path")
    sft = cfg.get("sft") if isinstance(cfg.get("sft"), dict) else {}  # verl sft+rl: GRPO from the SFT model
    verl = sft.get("base_model") or verl
    return {"method": str(cfg["method"]), "backbone": backbone_name(local or verl)}


def checkpoint_run(ckpt: str | Path) -> Path | None:
    """The training run dir a checkpoint lies in (the checkpoint itself, or up to three folders above:
    final/, checkpoints/step_N, checkpoints/global_step_N/actor), or None for a model from elsewhere."""
    path = Path(ckpt)
    if not path.exists():
        return None
    for candidate in [path, *path.resolve().parents][:4]:
        if run_identity(candidate) is not None and (
                (candidate / "metrics.jsonl").exists() or (candidate / "checkpoints").is_dir()):
            return candidate
    return None


def checkpoint_label(ckpt: str | Path, run_dir: Path) -> str:
    """A checkpoint's name from its run: "scope-seed0" for final/, "scope-seed0-step_20" for a step."""
    inside = Path(ckpt).resolve().relative_to(run_dir.resolve()).parts
    return "-".join([run_dir.resolve().name, *(p for p in inside if p not in _CHECKPOINT_FOLDERS)])
