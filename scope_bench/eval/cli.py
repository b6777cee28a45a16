"""`scope-bench eval`: evaluate a checkpoint on the paper's benchmarks, or export the tasks for lm-eval.

    scope-bench eval --ckpt Qwen/Qwen2.5-Math-7B --tasks all --backend vllm --tp 2
    scope-bench eval --ckpt Qwen/Qwen2.5-Math-7B --tasks all --backend vllm --dp 8 --tp 1   # 8 GPUs, 8 replicas
    scope-bench eval --ckpt runs/train/scope-seed0/final --tasks math-id --data-dir data/benchmarks
    scope-bench eval --export-lm-eval lm_eval_tasks/     # then: lm_eval --include_path lm_eval_tasks ...
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from scope_bench.eval.backends import CONTEXT_EXTENSIONS, budget_warning
from scope_bench.eval.protocol import DEFAULT_PROTOCOL, PROTOCOLS


def _data_override(text: str) -> tuple[str, str]:
    task, sep, path = text.partition("=")
    if not sep or not task or not path:
        raise argparse.ArgumentTypeError(f"--data takes TASK=PATH, got {text!r}")
    return task, path


def register(subparsers) -> None:
    p = subparsers.add_parser("eval", help="evaluate a checkpoint on the benchmarks (tasks/*.yaml)",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ckpt", help="model folder, Hub id, .gguf file, the served model name (openai), or a verl "
                                  "checkpoint: global_step_N, its actor/, or a run folder (its latest step), "
                                  "merged once into global_step_N/merged_hf")
    p.add_argument("--tasks", default="all", help="comma-separated tasks and groups (math-id, ood, all)")
    p.add_argument("--backend", default="hf", choices=["hf", "vllm", "openai"])
    p.add_argument("--out", help="run folder (default runs/eval/<label>)")
    p.add_argument("--label", help="name of the model in reports (default: its training run's folder name, "
                   "else the checkpoint folder name)")
    p.add_argument("--method", help="the method that trained it, a trainers/*.yaml name, recorded for reports "
                   "(default: read from the checkpoint's training run)")
    p.add_argument("--backbone", help="the model it was trained from, recorded for reports (default: read from "
                   "the checkpoint's training run)")
    p.add_argument("--data-dir", help="read benchmarks from local files under this folder (tasks' `local:`; "
                                      "default: $SCOPE_BENCH_DATA_DIR)")
    p.add_argument("--data", action="append", type=_data_override, default=[], metavar="TASK=PATH",
                   help="read one task from this file (jsonl, json, parquet, save_to_disk folder)")
    p.add_argument("--limit", type=int, help="evaluate only the first N problems of each task")
    p.add_argument("--protocol", default=DEFAULT_PROTOCOL, choices=sorted(PROTOCOLS),
                   help="sampling of the paper's benchmarks: luffy = temperature 0.6, top_p 1.0, 8192 new "
                        "tokens (LUFFY's evaluation, the numbers the paper compares against); task = each task "
                        "YAML's sampling. The flags below override it (default: %(default)s)")
    p.add_argument("--n", type=int, help="samples per problem for every task (default: the task's)")
    p.add_argument("--max-tokens", type=int, help="override max new tokens")
    p.add_argument("--temperature", type=float, help="override sampling temperature (0: greedy; n > 1 "
                                                     "greedy samples are drawn once and repeated)")
    p.add_argument("--top-p", type=float, help="override nucleus top_p")
    p.add_argument("--seed", type=int, default=0, help="base seed; each problem's seed derives from it")
    p.add_argument("--prompt-format", default="auto", choices=["auto", "chat", "raw"],
                   help="chat template, or the task's raw template for base models (auto: chat if present)")
    p.add_argument("--force", action="store_true", help="discard earlier results in the run folder")
    p.add_argument("--chunk-size", type=int, default=None,
                   help="problems per generation call, written when done (default 64; vllm 1024)")
    p.add_argument("--batch-size", type=int, default=32, help="hf: sequences decoded together")
    p.add_argument("--device", help="hf: cpu, cuda, cuda:1 (default: cuda if available)")
    p.add_argument("--dtype", default="auto", help="model dtype (auto: bf16 on GPU, fp32 on CPU)")
    p.add_argument("--gguf-file", help="hf: a .gguf file name inside --ckpt")
    p.add_argument("--dp", type=int, default=1,
                   help="data parallel: run N replicas of the backend as Ray actors (vllm: each on --tp GPUs), "
                        "problems shared out among them, one results file (default 1: no Ray)")
    p.add_argument("--ray-address", help="join this Ray cluster (e.g. auto, ray://head:10001) for --dp; "
                                         "default: start a local Ray for the run")
    p.add_argument("--tp", type=int, default=1, help="vllm: tensor parallel size (per replica with --dp)")
    p.add_argument("--gpu-memory-utilization", type=float, default=0.9,
                   help="vllm: share of GPU memory (of RAM on vLLM's CPU build) to reserve")
    p.add_argument("--max-model-len", type=int, help="vllm: context length")
    p.add_argument("--kv-cache-memory-bytes", type=int,
                   help="vllm: the KV cache's size in bytes (overrides --gpu-memory-utilization for it; on the "
                        "CPU build a fixed size is safer than a share of RAM)")
    p.add_argument("--context-extension", choices=sorted(CONTEXT_EXTENSIONS),
                   help="hf/vllm: evaluate with a longer context than the checkpoint's own: luffy = rope_theta "
                        "40000 and 16,384 positions, as LUFFY evaluated Qwen2.5-Math-7B (4,096) at 8,192 new "
                        "tokens (recorded in summary.json)")
    p.add_argument("--enforce-eager", action="store_true",
                   help="vllm: no torch.compile / CUDA graphs (starts much faster; decodes slower on GPU)")
    p.add_argument("--base-url", default="http://localhost:8000/v1", help="openai: server URL")
    p.add_argument("--concurrency", type=int, default=16, help="openai: requests in flight")
    p.add_argument("--grading-workers", type=int, help="processes for math grading (default: one per core)")
    p.add_argument("--tasks-dir", help="folder of task YAMLs (default: the project's tasks/)")
    p.add_argument("--export-lm-eval", metavar="DIR", help="write lm-evaluation-harness task YAMLs and exit")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    p.set_defaults(func=run)


def _backend_kwargs(args) -> dict:
    if args.backend == "hf":
        return {"batch_size": args.batch_size, "device": args.device, "dtype": args.dtype,
                "gguf_file": args.gguf_file, "context_extension": args.context_extension}
    if args.backend == "vllm":
        return {"tensor_parallel_size": args.tp, "dtype": args.dtype, "seed": args.seed,
                "gpu_memory_utilization": args.gpu_memory_utilization, "max_model_len": args.max_model_len,
                "enforce_eager": args.enforce_eager, "kv_cache_memory_bytes": args.kv_cache_memory_bytes,
                "context_extension": args.context_extension}
    return {"base_url": args.base_url, "concurrency": args.concurrency}


def context_budget(args) -> dict | None:
    """The requested new-token budget against the model's context (`--max-model-len`, else the
    config's `max_position_embeddings`), warned about on stderr when it cannot be met; None when
    either is unknown (a Hub id is not fetched for this, an openai server is not asked)."""
    requested = args.max_tokens or PROTOCOLS[args.protocol].settings.get("max_tokens")
    context = args.max_model_len
    if context is None and args.context_extension and args.backend != "openai":
        context = CONTEXT_EXTENSIONS[args.context_extension]["max_position_embeddings"]
    if context is None and args.backend != "openai" and (Path(args.ckpt) / "config.json").is_file():
        context = json.loads((Path(args.ckpt) / "config.json").read_text()).get("max_position_embeddings")
    if not requested or not context:
        return None
    effective, warning = budget_warning(requested, context)
    if warning:
        print(f"WARNING: {warning}", file=sys.stderr)
    return {"max_tokens": requested, "context": context, "effective_max_tokens": effective}


def run(args) -> int:
    from scope_bench.eval.lm_eval_export import export_lm_eval
    from scope_bench.eval.runner import RESULTS_FILE, SUMMARY_FILE, evaluate, format_summary

    if args.export_lm_eval:
        written = export_lm_eval(args.export_lm_eval, args.tasks, tasks_dir=args.tasks_dir, data_dir=args.data_dir,
                                 protocol=args.protocol, overrides={"n": args.n, "max_tokens": args.max_tokens,
                                                                    "temperature": args.temperature,
                                                                    "top_p": args.top_p})
        names = ",".join("scope_" + t.strip().replace("-", "_") for t in args.tasks.split(","))
        print(f"wrote {len(written)} files to {args.export_lm_eval}; use lm_eval --include_path "
              f"{args.export_lm_eval} --tasks {names}")
        return 0
    if not args.ckpt:
        raise ValueError("--ckpt is required (or --export-lm-eval DIR)")
    if args.backend != "openai":  # a verl checkpoint is merged into a model folder first (eval/checkpoint.py)
        from scope_bench.eval.checkpoint import MERGED, merged_label, resolve_checkpoint

        args.ckpt = resolve_checkpoint(args.ckpt)
        if args.label is None and Path(args.ckpt).name == MERGED:
            args.label = merged_label(Path(args.ckpt))
    budget = context_budget(args)
    chunk = args.chunk_size or (1024 if args.backend == "vllm" else 64)
    summary = evaluate(
        args.ckpt, args.tasks, backend=args.backend, out_dir=args.out, label=args.label,
        data_dir=args.data_dir, data_paths=dict(args.data), limit=args.limit, n=args.n,
        max_tokens=args.max_tokens, temperature=args.temperature, top_p=args.top_p, seed=args.seed,
        prompt_format=args.prompt_format, force=args.force, chunk_size=chunk,
        grading_workers=args.grading_workers, backend_kwargs=_backend_kwargs(args), tasks_dir=args.tasks_dir,
        protocol=args.protocol, dp=args.dp, ray_address=args.ray_address, method=args.method,
        backbone=args.backbone)
    out = args.out or f"runs/eval/{summary['label']}"
    if budget:  # what the context allowed next to what was asked (the tasks' own budgets are in `sampling`)
        summary["budget"] = budget
    if args.context_extension:
        summary["context_extension"] = {"name": args.context_extension,
                                        **CONTEXT_EXTENSIONS[args.context_extension]}
    if budget or args.context_extension:
        Path(out, SUMMARY_FILE).write_text(json.dumps(summary, indent=2, ensure_ascii=False))
    print(format_summary(summary))
    print(f"results: {out}/{RESULTS_FILE}  summary: {out}/{SUMMARY_FILE}")
    return 0
