"""The PRM and refiner a method config asks for, for every engine and every kind. Each client is
imported only when chosen (the rule PRM and programmatic refiner know the synthetic task; `qwen` runs a
Qwen2.5-Math-PRM-style checkpoint in-process; `vllm` and `openai` are HTTP clients)."""

from __future__ import annotations

from collections.abc import Sequence

from scope_bench.core.interfaces import RefineRequest, RefineResult


def build_prm(prm, *, device: str = "cuda", seed: int = 0):
    """The `prm` block's PRM: rule | qwen | vllm."""
    if prm.kind == "rule":
        from scope_bench.synthetic.prm import RuleBasedPRM

        return RuleBasedPRM(prm.p_correct, prm.p_wrong, fp_rate=prm.fp_rate, fn_rate=prm.fn_rate, seed=seed)
    if prm.kind == "vllm":
        from scope_bench.engines.prm import VLLMPoolingPRM

        return VLLMPoolingPRM(prm.url, prm.path or "Qwen/Qwen2.5-Math-PRM-7B", concurrency=prm.concurrency,
                              timeout_s=prm.timeout_s, max_tokens=prm.max_tokens,
                              retry_s=prm.retry_s)
    if prm.kind == "qwen":
        from scope_bench.engines.prm import QwenMathPRM

        return QwenMathPRM(prm.path, device=prm.device or device, max_length=prm.max_tokens or 4096)
    raise ValueError(f"prm.kind must be rule, qwen or vllm, got {prm.kind!r}")


def build_refiner(refiner, *, seed: int = 0) -> GuardedRefiner:
    """The `refiner` block's refiner (programmatic | openai), held to its contract by `GuardedRefiner`."""
    if refiner.kind == "programmatic":
        from scope_bench.synthetic.refiner import ProgrammaticRefiner

        inner = ProgrammaticRefiner(failure=refiner.failure, failure_rate=refiner.failure_rate, seed=seed,
                                    style=refiner.style, error_rate=refiner.error_rate)
    elif refiner.kind == "openai":
        from scope_bench.engines.refiner import OpenAIRefiner

        inner = OpenAIRefiner(refiner.url, refiner.model, api_key_env=refiner.api_key_env,
                              concurrency=refiner.concurrency, timeout_s=refiner.timeout_s, retries=refiner.retries,
                              max_tokens=refiner.max_tokens,
                              step_deadline_s=getattr(refiner, "step_deadline_s", None))
    else:
        raise ValueError(f"refiner.kind must be programmatic or openai, got {refiner.kind!r}")
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
