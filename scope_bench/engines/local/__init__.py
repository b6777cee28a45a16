"""The local (single-process PyTorch) trainer: `load_train_config(method, overrides)` then `train(cfg)`."""

from scope_bench.engines.local.config import load_train_config
from scope_bench.engines.methods import available_methods


def train(cfg, **kwargs):
    """Train a config from `load_train_config`; returns the run directory (imports torch lazily)."""
    from scope_bench.engines.local.trainer import train as _train

    return _train(cfg, **kwargs)


__all__ = ["available_methods", "load_train_config", "train"]
