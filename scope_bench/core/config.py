"""Configuration of the SCOPE stage and of the losses. Every value the paper leaves open is a
documented default here, overridable from the method YAMLs in `trainers/`."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields


@dataclass
class ScopeConfig:
    """The rectification stage (docs/method.md, steps 1-6)."""

    tau: float = 0.5  # PRM validity threshold (paper: a step with p < tau is an error)
    min_failures: int = 2  # gate: groups with fewer failing rollouts are left as sampled
    stats_scope: str = "batch"  # "batch" | "group": population for the length statistics of eq. 3
    prefix_source: str = "prm"  # "prm" (SCOPE) | "none" (replace the whole rollout, LUFFY-style)
    reject_prefix_rewrite: bool = True  # a suffix that restarts the solution is a refiner failure
    max_response_tokens: int | None = None  # a mixed trajectory longer than this is skipped
    score_all_failures: bool = False  # also PRM-score failures of ungated groups (near-miss metrics)

    def __post_init__(self):
        check_tau(self.tau)
        if self.min_failures < 1:
            raise ValueError(f"scope.min_failures must be >= 1, got {self.min_failures}")
        _check_choice("scope.stats_scope", self.stats_scope, ("batch", "group"))
        _check_choice("scope.prefix_source", self.prefix_source, ("prm", "none"))
        if self.max_response_tokens is not None and self.max_response_tokens < 1:
            raise ValueError(f"scope.max_response_tokens must be positive, got {self.max_response_tokens}")


@dataclass
class LossConfig:
    """The hybrid objective (eq. 6) and GRPO advantages."""

    clip_eps: float = 0.2  # PPO clip range on prefix tokens
    clip_ratio_c: float | None = 3.0  # dual-clip bound for negative advantages (verl's default); null: off
    lam: float = 1.0  # weight of the off-policy term (the paper's lambda)
    gamma: float = 0.1  # shaping f(p) = p / (p + gamma), from LUFFY
    offpolicy_advantage: bool = False  # True: LUFFY's form, the shaped term times the advantage
    adv_eps: float = 1e-6  # GRPO advantage denominator epsilon (verl's default)

    def __post_init__(self):
        if not 0 < self.clip_eps < 1:
            raise ValueError(f"loss.clip_eps must lie in (0, 1), got {self.clip_eps}")
        if self.gamma <= 0:
            raise ValueError(f"loss.gamma must be positive, got {self.gamma}")
        if self.lam < 0:
            raise ValueError(f"loss.lam must be >= 0, got {self.lam}")
        if self.clip_ratio_c is not None and self.clip_ratio_c <= 1:
            raise ValueError(f"loss.clip_ratio_c must be > 1 (or null to disable dual-clip), got {self.clip_ratio_c}")

    def objective_kwargs(self) -> dict:
        """The keyword arguments of `hybrid_loss` / `hybrid_token_objective`, for every engine alike."""
        return {"clip_eps": self.clip_eps, "clip_ratio_c": self.clip_ratio_c, "lam": self.lam,
                "gamma": self.gamma, "offpolicy_advantage": self.offpolicy_advantage}


@dataclass
class PRMRewardConfig:
    """The RL-with-PRM-reward baseline (docs/method.md, "Baselines")."""

    weight: float = 0.5  # R = outcome + weight * agg_j p_j; below 1 a right answer outranks any wrong one
    aggregate: str = "min"  # "min" | "mean" over the steps (form scalar); min is the Qwen PRM authors' choice
    form: str = "scalar"  # "scalar": one reward per rollout | "step": weight * p_j at each step's boundary

    def __post_init__(self):
        if self.weight < 0:
            raise ValueError(f"prm_reward.weight must be >= 0, got {self.weight}")
        _check_choice("prm_reward.aggregate", self.aggregate, ("min", "mean"))
        _check_choice("prm_reward.form", self.form, ("scalar", "step"))


# the method blocks of a trainer config and the dataclass that owns each block's keys and defaults
METHOD_CONFIGS = {"scope": ScopeConfig, "loss": LossConfig, "prm_reward": PRMRewardConfig}


def check_tau(tau: float) -> float:
    if not (0.0 < tau < 1.0):
        raise ValueError(f"tau must lie in (0, 1), got {tau!r}")
    return tau


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(choices)}; got {value!r}")


def from_dict(cls, values: dict | None, where: str = ""):
    """Build a config dataclass from a mapping, naming any unknown key."""
    values = dict(values or {})
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"unknown key(s) {unknown} in {where or cls.__name__}; known: {sorted(known)}")
    return cls(**values)


def method_defaults() -> dict:
    """`{block: {key: default}}` of every method block: the one place these defaults are written."""
    return {name: asdict(cls()) for name, cls in METHOD_CONFIGS.items()}
