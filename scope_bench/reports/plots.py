"""Figures of a report (matplotlib, saved as PNG and PDF of a fixed size).

Figures are drawn with `matplotlib.figure.Figure` directly (no pyplot), so they need no display and
leave no global state behind. Every figure has a fixed size in inches and DPI and is saved without
tight cropping, so its PNG is exactly ``FIGSIZE * DPI`` pixels: tests check that size. Each method
keeps one colour in every figure (by order of first appearance; SCOPE is always the same red).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from scope_bench.analysis.dynamics import DYNAMICS_METRICS, NEAR_MISS_METRICS, TrainingRun, seed_curve

DPI = 100
FIGSIZE = {"bars": (12.0, 4.5), "dynamics": (15.0, 8.0), "near_miss": (15.0, 4.0), "diversity": (7.0, 5.0),
           "exploration": (15.0, 8.0)}
_TITLES = {"reward_mean": "Reward (train)", "entropy": "Policy entropy", "keep_ratio": "PRM keep ratio",
           "response_length": "Response length (tokens)", "val_accuracy": "Validation accuracy"}


def expected_size(kind: str) -> tuple[int, int]:
    """(width, height) in pixels of a saved PNG of this kind."""
    w, h = FIGSIZE[kind]
    return round(w * DPI), round(h * DPI)


def _colors(labels) -> dict[str, tuple]:
    from matplotlib import colormaps

    palette = [c for i, c in enumerate(colormaps["tab10"].colors) if i != 3]  # red kept for SCOPE
    out, i = {}, 0
    for label in labels:
        if label.lower().startswith("scope") and (0.839, 0.153, 0.157) not in out.values():
            out[label] = (0.839, 0.153, 0.157)
        else:
            out[label] = palette[i % len(palette)]
            i += 1
    return out


def _figure(kind: str):
    from matplotlib.figure import Figure

    return Figure(figsize=FIGSIZE[kind], dpi=DPI)


def _save(fig, stem: Path) -> list[Path]:
    stem.parent.mkdir(parents=True, exist_ok=True)
    paths = [stem.with_suffix(".png"), stem.with_suffix(".pdf")]
    for p in paths:
        fig.savefig(p, dpi=DPI)
    return paths


def plot_benchmark_bars(scores: dict[str, dict[str, float | None]], tasks: list[str], headers: dict,
                        stem: Path, title: str) -> list[Path]:
    """Grouped bars: one group per benchmark, one bar per method (missing scores leave a gap)."""
    fig = _figure("bars")
    ax = fig.add_subplot()
    labels = list(scores)
    colors = _colors(labels)
    width = 0.8 / max(len(labels), 1)
    x = np.arange(len(tasks))
    for i, label in enumerate(labels):
        vals = [scores[label].get(t) for t in tasks]
        heights = [np.nan if v is None else v for v in vals]
        bars = ax.bar(x + (i - (len(labels) - 1) / 2) * width, heights, width, label=label, color=colors[label])
        for bar, v in zip(bars, vals):
            if v is not None:
                ax.annotate(f"{v:.1f}", (bar.get_x() + bar.get_width() / 2, v), ha="center", va="bottom",
                            fontsize=7, xytext=(0, 1), textcoords="offset points")
    ax.set_xticks(x, [headers.get(t, t) for t in tasks])
    top = max([v for s in scores.values() for v in s.values() if v is not None], default=1.0)
    ax.set_ylim(0, max(top, 1.0) * 1.25)  # head room for the legend and value labels (all-zero scores too)
    ax.set_ylabel("accuracy (%)")
    ax.set_title(title)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, ncols=min(len(labels), 4), loc="upper right")
    fig.subplots_adjust(left=0.06, right=0.98, top=0.9, bottom=0.1)
    return _save(fig, stem)


def _curves(fig, groups: dict[str, list[TrainingRun]], keys, ncols: int, titles: dict) -> None:
    from matplotlib.ticker import MaxNLocator

    colors = _colors(groups)
    nrows = -(-len(keys) // ncols)
    for i, key in enumerate(keys):
        ax = fig.add_subplot(nrows, ncols, i + 1)
        drawn = False
        for label, runs in groups.items():
            curve = seed_curve(runs, key)
            if curve is None:
                continue
            drawn = True
            name = f"{label} ({len(runs)} seed{'s' if len(runs) > 1 else ''})"
            ax.plot(curve["step"], curve["mean"], color=colors[label], label=name, lw=1.5)
            ax.fill_between(curve["step"], curve["lo"], curve["hi"], color=colors[label], alpha=0.2, lw=0)
        ax.set_title(titles.get(key, key), fontsize=10)
        ax.set_xlabel("step")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        if drawn:
            ax.legend(fontsize=7)
        else:
            ax.text(0.5, 0.5, "not logged", ha="center", va="center", transform=ax.transAxes, color="gray")


def plot_dynamics(groups: dict[str, list[TrainingRun]], stem: Path) -> list[Path]:
    """Reward, entropy, keep ratio, response length and validation accuracy against step:
    mean over seeds with a +-1 std band, one colour per method."""
    return _curve_grid("dynamics", groups, DYNAMICS_METRICS, _TITLES, "Training dynamics", stem)


def _curve_grid(kind: str, groups, keys, titles: dict, title: str, stem: Path) -> list[Path]:
    fig = _figure(kind)
    _curves(fig, groups, keys, 3, titles)
    fig.suptitle(f"{title} (mean and ±1 std over seeds)")
    fig.subplots_adjust(left=0.05, right=0.98, top=0.9, bottom=0.08, hspace=0.35, wspace=0.2)
    return _save(fig, stem)


# The demo's figure: what the policy itself scored (a rectified row's reward is 1 by construction, so
# the training reward flatters SCOPE), the keep ratio in steps (the paper's Fig. 4) and in tokens,
# near-miss@1 (Fig. 5-6) and the share of groups where every rollout failed (no GRPO signal).
EXPLORATION_METRICS = ("accuracy", "all_fail_groups", "keep_ratio_steps", "keep_ratio", "near_miss@1", "near_miss@2")
EXPLORATION_TITLES = {"accuracy": "On-policy accuracy (the policy's own rollouts)",
                      "all_fail_groups": "Share of all-fail groups", "keep_ratio_steps": "Keep ratio (steps)",
                      "keep_ratio": "Keep ratio (tokens)", "near_miss@1": "Near-miss@1 (r=0)",
                      "near_miss@2": "Near-miss@2 (r=0)"}


def plot_exploration(groups: dict[str, list[TrainingRun]], stem: Path) -> list[Path]:
    """The demo's training curves (EXPLORATION_METRICS), mean over seeds with a ±1 std band."""
    return _curve_grid("exploration", groups, EXPLORATION_METRICS, EXPLORATION_TITLES, "Training", stem)


def plot_near_miss(groups: dict[str, list[TrainingRun]], stem: Path) -> list[Path]:
    """Near-miss@1..3 of zero-reward rollouts against training step."""
    fig = _figure("near_miss")
    titles = {k: f"Near-miss@{k.split('@')[1]} (r=0)" for k in NEAR_MISS_METRICS}
    _curves(fig, groups, NEAR_MISS_METRICS, 3, titles)
    fig.subplots_adjust(left=0.05, right=0.98, top=0.88, bottom=0.14, wspace=0.2)
    return _save(fig, stem)


def plot_diversity_quality(points: dict[str, dict], stem: Path, task: str) -> list[Path]:
    """div-score median (p10-p90 whiskers) against pass@1 (dots) and pass@10 (squares) per method.

    ``points[label] = {"div": (p50, p10, p90), "pass@1": float|None, "pass@10": float|None}``."""
    fig = _figure("diversity")
    ax = fig.add_subplot()
    colors = _colors(points)
    for label, p in points.items():
        p50, p10, p90 = p["div"]
        for key, marker in (("pass@1", "o"), ("pass@10", "s")):
            if p.get(key) is None:
                continue
            ax.errorbar([p50], [p[key]], xerr=[[p50 - p10], [p90 - p50]], fmt=marker, color=colors[label],
                        capsize=3, label=f"{label} {key}")
    ax.set_xlabel("div-score (median, p10-p90 across prompts)")
    ax.set_ylabel("quality (%)")
    ax.set_title(f"Diversity vs quality on {task}")
    ax.grid(alpha=0.3)
    if points:
        ax.legend(fontsize=8)
    fig.subplots_adjust(left=0.11, right=0.97, top=0.92, bottom=0.11)
    return _save(fig, stem)
