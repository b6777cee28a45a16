"""Checks that fail fast and say what to do, before any slow work starts.

- A checkpoint path that does not exist is "no such folder" at once, instead of a Hub repo-id
  validation message from transformers or vLLM minutes later (`check_checkpoint`).
- With no network, a Hub dataset fails at once, naming the local options, instead of after the Hub
  client's retries with back-off, about 40 s (`require_hub`).
- The local benchmark folder can be set once in the environment, `SCOPE_BENCH_DATA_DIR`, instead of
  `--data-dir` on every call (`resolve_data_dir`).
- A prompt with no room left in the model's context is recorded per problem as `prompt_too_long`
  instead of a tokenizer warning and an indexing error (`context_length`, `overlong_prompts`).
"""

from __future__ import annotations

import os
import re
import socket
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

DATA_DIR_ENV = "SCOPE_BENCH_DATA_DIR"
DEFAULT_HUB = "https://huggingface.co"
HUB_PROBE_TIMEOUT_S = 3.0
PROMPT_TOO_LONG = "prompt_too_long"  # finish reason of every sample of a problem whose prompt cannot fit
# tokenizers without a real limit report this sentinel (transformers' VERY_LARGE_INTEGER) or more
_NO_LIMIT = int(1e20)
# huggingface_hub's repo-id rule: `name` or `org/name`, word characters, '-', '.'; no '--' or '..'
_REPO_ID_RE = re.compile(r"^(?:[\w.-]+/)?[\w.-]{1,96}$")


class HubUnreachable(ConnectionError):
    """The Hugging Face Hub cannot be reached; the message names the local options."""


# ---------------------------------------------------------------- checkpoints

def looks_like_repo_id(name: str) -> bool:
    """True for `org/name` or `name` as the Hub spells them (not `./x`, `/abs`, `a/b/c`, `x.gguf`)."""
    return (bool(_REPO_ID_RE.fullmatch(name)) and "--" not in name and ".." not in name
            and not name.startswith((".", "-")) and not name.endswith(".gguf"))


def check_checkpoint(ckpt: str, backend: str = "hf") -> None:
    """Raise FileNotFoundError("no such folder ...") for a local checkpoint path that does not exist.

    A Hub id (`Qwen/Qwen2.5-Math-7B`) passes: the backend downloads it. A name whose first part is a
    folder here (`runs/final` with `runs/` present) is a local path, not a Hub id. The `openai`
    backend's `--ckpt` is the served model's name, so it is never a path.
    """
    if backend == "openai" or not ckpt:
        return
    path = Path(ckpt).expanduser()
    if path.exists():
        return
    repo_id = looks_like_repo_id(ckpt)
    first = ckpt.split("/")[0]
    local_first = repo_id and "/" in ckpt and Path(first).is_dir()
    if repo_id and not local_first:
        return
    why = (f"{first}/ is a folder here, so this is a local path" if local_first
           else "nor a Hugging Face repo id like org/name")
    kind = "file" if path.suffix == ".gguf" else "folder"
    raise FileNotFoundError(f"no such {kind}: {ckpt} (checkpoint not found; {why})")


# ---------------------------------------------------------------- data sources

def resolve_data_dir(data_dir: str | Path | None) -> Path | None:
    """`--data-dir` if given, else `$SCOPE_BENCH_DATA_DIR` (empty or unset: the Hub); must exist."""
    chosen = data_dir if data_dir not in (None, "") else os.environ.get(DATA_DIR_ENV) or None
    if chosen is None:
        return None
    path = Path(chosen).expanduser()
    if not path.is_dir():
        origin = "--data-dir" if data_dir not in (None, "") else f"${DATA_DIR_ENV}"
        raise FileNotFoundError(f"no such folder: {path} (given by {origin}, the local benchmark folder)")
    return path


def hub_endpoint() -> str:
    return os.environ.get("HF_ENDPOINT") or DEFAULT_HUB


@lru_cache(maxsize=8)
def _reachable(host: str, port: int, timeout_s: float) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:  # no route, refused, DNS failure, timeout
        return False


PROXY_VARS = ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")


def hub_reachable(timeout_s: float = HUB_PROBE_TIMEOUT_S) -> bool:
    """One TCP connection (cached per process) to the Hub endpoint, or to the HTTPS proxy when one is
    set (requests then go through it): a few seconds at most offline."""
    url = urlparse(hub_endpoint())
    proxy = next((os.environ[v] for v in PROXY_VARS if os.environ.get(v)), None)
    if proxy and url.scheme == "https":
        url = urlparse(proxy if "://" in proxy else f"http://{proxy}")
    port = url.port or (443 if url.scheme == "https" else 80)
    return _reachable(url.hostname or "", port, timeout_s)


def hub_offline_mode() -> bool:
    """HF_HUB_OFFLINE / HF_DATASETS_OFFLINE: the user asked for the local Hub cache only."""
    return any(os.environ.get(v, "").strip().lower() in ("1", "true", "yes", "on")
               for v in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"))


def require_hub(task: str, dataset: str) -> None:
    """Raise HubUnreachable at once when the Hub cannot be reached (offline mode is left to the cache)."""
    if hub_offline_mode() or hub_reachable():
        return
    raise HubUnreachable(
        f"task '{task}': cannot reach {hub_endpoint()} to load the Hugging Face dataset {dataset!r} "
        f"(no network?). Read local copies instead: --data-dir DIR (or set {DATA_DIR_ENV}=DIR once), "
        f"or --data {task}=PATH; a dataset already in the Hugging Face cache loads with HF_HUB_OFFLINE=1")


# ---------------------------------------------------------------- prompt length

def context_length(model: Any = None, tokenizer: Any = None, max_model_len: int | None = None) -> int | None:
    """The model's context in tokens: `max_model_len` if set (vLLM), else the smaller of the model
    config's `max_position_embeddings` and the tokenizer's `model_max_length`; None if unknown."""
    if max_model_len:
        return int(max_model_len)
    limits = []
    config = getattr(model, "config", None)
    for value in (getattr(config, "max_position_embeddings", None), getattr(tokenizer, "model_max_length", None)):
        if isinstance(value, int) and 0 < value < _NO_LIMIT:
            limits.append(value)
    return min(limits) if limits else None


def overlong_prompts(prompt_lengths: Sequence[int], context: int | None) -> list[int]:
    """Indices of prompts that leave no room for one new token in `context` (none if unknown)."""
    if context is None:
        return []
    return [i for i, n in enumerate(prompt_lengths) if n >= context]


def overlong_message(n_tokens: int, context: int) -> str:
    return f"{PROMPT_TOO_LONG}: the prompt has {n_tokens} tokens, the model's context is {context}"


def new_token_budget(n_prompt_tokens: int, max_tokens: int, context: int | None) -> int:
    """New tokens a sample may draw: `max_tokens`, capped by what is left of the context."""
    return max_tokens if context is None else max(0, min(max_tokens, context - n_prompt_tokens))
