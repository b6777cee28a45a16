"""`scope-bench train`: train a method on one machine (local backend) or through verl.

    scope-bench train --method scope                       # embedded default: synthetic task, tiny model
    scope-bench train --method grpo --set train.steps=20 rollout.n=4
    scope-bench train --method scope --model Qwen/Qwen2.5-Math-1.5B --data train.parquet \\
        --prm Qwen/Qwen2.5-Math-PRM-7B --refiner deepseek-r1 --refiner-url http://host:8000/v1
    scope-bench train --backend verl --device cpu --method scope --steps 2   # verl's fit on CPU (dry run)
"""

from __future__ import annotations

import argparse
import sys

from scope_bench.engines.methods import available_methods


def register(subparsers) -> None:
    methods = available_methods()
    p = subparsers.add_parser(
        "train", help="train a method (scope, grpo, replace, prm-reward, sft, sft+rl)",
        description=__doc__.splitlines()[0], epilog="\n".join(__doc__.splitlines()[1:]),
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--method", required=True, help=f"trainers/<method>.yaml: {', '.join(methods)}; or the path "
                   "of a method YAML (composed over trainers/base.yaml)")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides (Hydra style)")
    p.add_argument("--set", dest="set_overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="config override, repeatable (same as a positional KEY=VALUE)")
    p.add_argument("--backend", choices=("local", "verl"), default="local",
                   help="local: single-process PyTorch trainer; verl: the verl adapter")
    p.add_argument("--model", help="Hugging Face checkpoint (dir or hub id); default the synthetic tiny model")
    p.add_argument("--data", help="training set: .parquet/.jsonl file or dataset id (default: synthetic)")
    p.add_argument("--val-data", help="validation set (default: synthetic split, or none with --data)")
    p.add_argument("--prm", help="Qwen2.5-Math-PRM-style checkpoint (default: the rule-based synthetic PRM)")
    p.add_argument("--refiner", help="refiner model name served at --refiner-url")
    p.add_argument("--refiner-url", help="OpenAI-compatible base URL (default: the programmatic refiner)")
    p.add_argument("--refiner-key-env", help="environment variable holding the refiner's API key")
    p.add_argument("--steps", type=int, help="training steps (train.steps)")
    p.add_argument("--seed", type=int, help="seed")
    p.add_argument("--device", help="auto | cpu | cuda | cuda:N; with --backend verl, cpu dry-runs the recipe "
                                    "on CPU (verl's own fit, HF rollout, the embedded default)")
    p.add_argument("--run-dir", help="output folder (default runs/train/<method>-seed<seed> in the project)")
    p.add_argument("--resume", action="store_true", help="continue from the latest checkpoint in the run dir")
    p.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    from scope_bench.engines.verl.launch import add_arguments as add_verl_arguments  # light: no verl import

    add_verl_arguments(p)
    p.set_defaults(func=run)


def cli_overrides(args) -> list[str]:
    """Convenience flags as config overrides; explicit KEY=VALUE overrides come last and win."""
    out = []
    flags = {"model.path": args.model, "data.train": args.data, "train.steps": args.steps, "seed": args.seed,
             "device": args.device, "run_dir": args.run_dir}
    out += [f"{k}={v}" for k, v in flags.items() if v is not None]
    if args.data:
        out.append("data.n_train=null")  # every row of a real training set (the cap is for synthetic data)
        out.append(f"data.val={args.val_data}" if args.val_data else "data.val=null")
        if not args.prm:
            out.append("metrics.near_miss=false")  # the rule-based PRM only knows the synthetic task
    elif args.val_data:
        out.append(f"data.val={args.val_data}")
    if args.prm:
        out += ["prm.kind=qwen", f"prm.path={args.prm}"]
    if args.refiner_url or args.refiner:
        out += ["refiner.kind=openai", f"refiner.url={args.refiner_url}", f"refiner.model={args.refiner}"]
    if args.refiner_key_env:
        out.append(f"refiner.api_key_env={args.refiner_key_env}")
    if args.resume:
        out.append("resume=true")
    return out + list(args.set_overrides) + list(args.overrides)


def run(args) -> int:
    if args.backend == "verl":
        from scope_bench.engines.verl.launch import run as verl_run

        return int(verl_run(args) or 0)
    from scope_bench.engines.local.config import load_train_config, to_yaml

    cfg = load_train_config(args.method, cli_overrides(args))
    if args.print_config:
        sys.stdout.write(to_yaml(cfg))
        return 0
    from scope_bench.engines.local import train

    run_dir = train(cfg)
    print(f"run written to {run_dir} (metrics.jsonl, checkpoints/, final/)")
    return 0
