"""The PRM and refiner a config asks for. Engine-specific ones (Qwen2.5-Math-PRM, an OpenAI-compatible
endpoint) are imported only when chosen."""

from __future__ import annotations

from collections.abc import Sequence

from scope_bench.core.interfaces import RefineRequest, RefineResult


def build_prm(cfg, device: str):
    if cfg.prm.kind == "rule":
        from scope_bench.synthetic.prm import RuleBasedPRM

        return RuleBasedPRM(cfg.prm.p_correct, cfg.prm.p_wrong, fp_rate=cfg.prm.fp_rate, fn_rate=cfg.prm.fn_rate,
                            seed=cfg.seed)
    from scope_bench.engines.prm import QwenMathPRM

    return QwenMathPRM(cfg.prm.path, device=cfg.prm.device or device, max_length=cfg.prm.max_tokens or 4096)


def build_refiner(cfg):
    if cfg.refiner.kind == "programmatic":
        from scope_bench.synthetic.refiner import ProgrammaticRefiner

        inner = ProgrammaticRefiner(failure=cfg.refiner.failure, failure_rate=cfg.refiner.failure_rate,
                                    seed=cfg.seed, style=cfg.refiner.style, error_rate=cfg.refiner.error_rate)
    else:
        from scope_bench.engines.refiner import OpenAIRefiner

        inner = OpenAIRefiner(cfg.refiner.url, cfg.refiner.model, api_key_env=cfg.refiner.api_key_env,
                              timeout_s=cfg.refiner.timeout_s, max_tokens=cfg.refiner.max_tokens)
    return GuardedRefiner(inner)


class GuardedRefiner:
    """Holds a refiner to its contract: an exception or a short answer becomes per-item failures
    (`refiner_error:exception`), so a broken refiner never stops training."""

    def __init__(self, inner):
        self.inner = inner
        self.exceptions = 0

    def refine(self, requests: Sequence[RefineRequest]) -> list[RefineResult]:
        try:
            results = list(self.inner.refine(requests))
        except Exception:  # noqa: BLE001 - any refiner bug must leave the groups as sampled
            self.exceptions += 1
            return [RefineResult(None, "exception") for _ in requests]
        if len(results) != len(requests):
            return [RefineResult(None, "bad_response") for _ in requests]
        return results
