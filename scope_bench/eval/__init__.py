"""Evaluation harness: tasks (tasks/*.yaml), loaders, generation backends, results store, metrics.

    from scope_bench.eval import evaluate
    summary = evaluate("Qwen/Qwen2.5-Math-7B", "all", backend="vllm")

Importing this package does not import torch, transformers or vLLM.
"""

from scope_bench.eval.backends import (
                                       Generation,
                                       GenerationRequest,
                                       HFBackend,
                                       OpenAIBackend,
                                       VLLMBackend,
                                       make_backend,
)
from scope_bench.eval.data import Problem, load_problems, render_prompt
from scope_bench.eval.lm_eval_export import export_lm_eval
from scope_bench.eval.metrics import group_scores, pass_at_k, task_metrics
from scope_bench.eval.runner import evaluate
from scope_bench.eval.store import ResultStore
from scope_bench.eval.tasks import Task, available_tasks, load_groups, load_task, resolve_task_names

__all__ = [
    "Generation", "GenerationRequest", "HFBackend", "OpenAIBackend", "Problem", "ResultStore", "Task",
    "VLLMBackend", "available_tasks", "evaluate", "export_lm_eval", "group_scores", "load_groups",
    "load_problems", "load_task", "make_backend", "pass_at_k", "render_prompt", "resolve_task_names",
    "task_metrics",
]
