"""What `scope-bench eval --ckpt PATH` evaluates when PATH is a verl checkpoint.

verl writes `global_step_N/actor/` as FSDP shards (`model_world_size_W_rank_R.pt`) plus a
`huggingface/` folder holding only the config and tokenizer, which no inference engine loads. A verl
step folder (`global_step_N`), its `actor/`, or a run folder (its `checkpoints/`, meaning the latest
step) is merged once with verl's own model merger (`verl.model_merger`) into `global_step_N/merged_hf/`
next to the shards; later evaluations read that folder. A step saved with `hf_model` (verl's SFT trainer,
`scope-bench train --backend verl --method sft`) has its whole model in `huggingface/`, read as is. Anything else that exists on disk must be a
Hugging Face model folder or a file (.gguf); names that do not exist are Hub ids or served models.
"""

from __future__ import annotations

import contextlib
import re
import shutil
import sys
from pathlib import Path

MERGED = "merged_hf"
SHARD = re.compile(r"model_world_size_(\d+)_rank_(\d+)\.pt$")
STEP = re.compile(r"global_step_(\d+)$")
WEIGHTS = ("*.safetensors", "pytorch_model*.bin", "*.gguf")


def resolve_checkpoint(ckpt: str) -> str:
    """The model folder (or id) to load for `ckpt`, merging a verl checkpoint first; a ValueError
    in one line for a folder that is neither a model nor a verl checkpoint."""
    path = Path(ckpt)
    if not path.exists() or path.is_file() or is_model_folder(path):
        return ckpt
    actor = verl_actor_folder(path)
    if actor is None:
        raise ValueError(f"--ckpt {ckpt}: not a model folder (config.json and weights) nor a verl checkpoint "
                         "(global_step_N/actor/model_world_size_*_rank_*.pt, global_step_N, or a run folder "
                         "with checkpoints/global_step_N)")
    saved = actor / "huggingface"  # verl's SFT trainer saves the whole model there (checkpoint: hf_model)
    return str(saved) if is_model_folder(saved) else str(merged_model(actor))


def is_model_folder(path: Path) -> bool:
    return (path / "config.json").is_file() and any(next(path.glob(p), None) for p in WEIGHTS)


def verl_actor_folder(path: Path) -> Path | None:
    """The `actor/` folder of a verl step, step folder or run folder (the latest step), else None."""
    for candidate in (path, path / "actor"):
        if any(SHARD.search(p.name) for p in candidate.glob("model_world_size_*_rank_*.pt")):
            return candidate
    for root in (path, path / "checkpoints"):
        step = latest_step(root)
        if step is not None:
            return verl_actor_folder(step)
    return None


def latest_step(root: Path) -> Path | None:
    """verl's latest step folder under `root`: the one `latest_checkpointed_iteration.txt` names
    (what verl resumes from), else the highest `global_step_N`."""
    tracker = root / "latest_checkpointed_iteration.txt"
    if tracker.is_file():
        step = root / f"global_step_{tracker.read_text().strip()}"
        if step.is_dir():
            return step
    steps = [p for p in root.glob("global_step_*") if p.is_dir() and STEP.search(p.name)]
    return max(steps, key=lambda p: int(STEP.search(p.name).group(1)), default=None)


def merged_model(actor: Path) -> Path:
    """`<global_step_N>/merged_hf`, merged from `actor` by verl's FSDP model merger unless it exists.
    Written to a temporary folder and renamed, so an interrupted merge is never read as a model."""
    target = actor.parent / MERGED
    if is_model_folder(target):
        print(f"verl checkpoint {actor}: using the merged model {target}", file=sys.stderr)
        return target
    from verl.model_merger.base_model_merger import ModelMergerConfig
    from verl.model_merger.fsdp_model_merger import FSDPModelMerger

    print(f"verl checkpoint {actor}: merging its FSDP shards into {target} (verl.model_merger, once)",
          file=sys.stderr, flush=True)
    partial = actor.parent / f".{MERGED}.partial"
    shutil.rmtree(partial, ignore_errors=True)
    config = ModelMergerConfig(operation="merge", backend="fsdp", local_dir=str(actor), target_dir=str(partial),
                               hf_model_config_path=str(actor / "huggingface"))
    with contextlib.redirect_stdout(sys.stderr):  # verl's merger prints its progress
        merger = FSDPModelMerger(config)
        merger.merge_and_save()
        merger.cleanup()
    shutil.rmtree(target, ignore_errors=True)
    partial.rename(target)
    return target


def merged_label(model: Path) -> str:
    """A report label for a merged verl step: `<run>-global_step_N` (the run folder's name, when
    the step sits in `<run>/checkpoints/`)."""
    step = Path(model).parent
    run = step.parent.parent if step.parent.name == "checkpoints" else None
    return f"{run.name}-{step.name}" if run is not None else step.name
