"""A step-verifiable synthetic task for CPU runs: generator, rule-based PRM, programmatic refiner, and
a tiny model + tokenizer built offline (`build_tiny_model`, `warm_start_model`)."""

from scope_bench.synthetic.prm import RuleBasedPRM, check_steps
from scope_bench.synthetic.refiner import ProgrammaticRefiner
from scope_bench.synthetic.task import (
    Problem,
    generate_problems,
    generate_split,
    parse_question,
    solution,
    split_of,
    split_problems,
)


def build_tiny_model(out_dir, seed: int = 0, **overrides):
    """Random-init tiny Qwen2 + tokenizer saved in `out_dir` (see `scope_bench.synthetic.model`)."""
    from scope_bench.synthetic.model import build_tiny_model as _build

    return _build(out_dir, seed=seed, **overrides)


def tiny_model(seed: int = 0, cache_dir=None):
    from scope_bench.synthetic.model import tiny_model as _tiny

    return _tiny(seed=seed, cache_dir=cache_dir)


def warm_start_model(steps: int = 800, seed: int = 0, cache_dir=None, **kwargs):
    """Cached path of the SFT warm-started tiny model (built once; a few minutes on 2 cores)."""
    from scope_bench.synthetic.model import warm_start_model as _warm

    return _warm(steps=steps, seed=seed, cache_dir=cache_dir, **kwargs)


__all__ = ["Problem", "ProgrammaticRefiner", "RuleBasedPRM", "build_tiny_model", "check_steps",
           "generate_problems", "generate_split", "parse_question", "solution", "split_of", "split_problems", "tiny_model", "warm_start_model"]
