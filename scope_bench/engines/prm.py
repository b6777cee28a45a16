"""Process reward models for the SCOPE stage: Qwen2.5-Math-PRM-7B in process, or served by vLLM.

Both follow the checkpoint's official recipe (docs/method.md, step 3): system prompt "Please reason step by
step, and put your final answer within \\boxed{}.", user = question, assistant = the steps joined and
terminated by `<extra_0>`; `p_j` = softmax over the two classes, positive class, at the j-th `<extra_0>`.

- `QwenMathPRM` loads the weights into transformers' native `Qwen2Model` plus the checkpoint's score
  head (Linear, ReLU, Linear). The checkpoint's own remote code silently returns constant ~0.5
  scores under transformers 5.x, so it is never used.
- `VLLMPoolingPRM` is an HTTP client of `vllm serve Qwen/Qwen2.5-Math-PRM-7B --runner pooling`
  (`Qwen2ForProcessRewardModel`, STEP pooling on `<extra_0>`), one `/pooling` request per solution,
  all in flight at once under a concurrency bound, like the refiner.
"""

from __future__ import annotations

import json
import logging
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from scope_bench.engines.http import RETRYABLE, CallError, JSONEndpoint

logger = logging.getLogger(__name__)

STEP_TAG = "<extra_0>"
PRM_SYSTEM_PROMPT = "Please reason step by step, and put your final answer within \\boxed{}."


def prm_messages(question: str, steps: Sequence[str]) -> list[dict]:
    """The PRM's chat: steps joined and terminated by the step tag (a tag inside a step is removed,
    so there is exactly one tag per step)."""
    clean = [step.replace(STEP_TAG, "") for step in steps]
    return [
        {"role": "system", "content": PRM_SYSTEM_PROMPT},
        {"role": "user", "content": question},
        {"role": "assistant", "content": STEP_TAG.join(clean) + STEP_TAG},
    ]


class QwenMathPRM:
    """Qwen2.5-Math-PRM (7B or 72B) in this process, on `device`.

    `max_length` caps the tokens of one scored chat; steps whose tag falls beyond it get score 0.0
    (an error), which shortens the verified prefix rather than trusting unseen steps; they are
    counted in `truncated_steps`.
    """

    def __init__(self, name_or_path: str, device: str = "cuda", *, dtype=None, batch_size: int = 8,
                 max_length: int = 4096):
        import torch
        from transformers import AutoTokenizer, Qwen2Model
        from transformers.utils import logging as hf_logging

        self.device = torch.device(device)
        if dtype is None:
            dtype = torch.bfloat16 if self.device.type == "cuda" else torch.float32
        path = _local_checkpoint(name_or_path)
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.step_tag_id = self.tokenizer.convert_tokens_to_ids(STEP_TAG)
        if self.step_tag_id is None or self.step_tag_id == self.tokenizer.unk_token_id:
            raise ValueError(f"{path}: tokenizer has no {STEP_TAG} token; not a Qwen2.5-Math-PRM checkpoint")
        verbosity = hf_logging.get_verbosity()
        hf_logging.set_verbosity_error()  # the score.* tensors are loaded below, not "unexpected"
        try:
            self.model = Qwen2Model.from_pretrained(path, dtype=dtype).to(self.device).eval()
        finally:
            hf_logging.set_verbosity(verbosity)
        self.score_head = _load_score_head(path, self.model.config.hidden_size).to(self.device, dtype).eval()
        self.batch_size = batch_size
        self.max_length = max_length
        self.truncated_steps = 0
        self.last_prompt_tokens: list[int | None] = []  # per solution of the last `score` call (the bill)

    def score(self, questions: Sequence[str], steps: Sequence[Sequence[str]]) -> list[list[float]]:
        if len(questions) != len(steps):
            raise ValueError(f"{len(questions)} questions but {len(steps)} step lists")
        texts = [
            self.tokenizer.apply_chat_template(prm_messages(q, s), tokenize=False, add_generation_prompt=False)
            for q, s in zip(questions, steps)
        ]
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))  # similar lengths share a batch
        scores: list[list[float]] = [[] for _ in texts]
        self.last_prompt_tokens = [None] * len(texts)
        for start in range(0, len(order), self.batch_size):
            chunk = order[start : start + self.batch_size]
            for i, (probs, n_tokens) in zip(chunk, self._step_probabilities([texts[i] for i in chunk])):
                self.last_prompt_tokens[i] = n_tokens
                missing = len(steps[i]) - len(probs)
                self.truncated_steps += missing
                scores[i] = probs + [0.0] * missing
        return scores

    def _step_probabilities(self, texts: list[str]) -> list[tuple[list[float], int]]:
        """Per text: the step probabilities and the tokens the model read."""
        import torch

        self.tokenizer.padding_side = "right"
        enc = self.tokenizer(texts, return_tensors="pt", padding=True, truncation=True, max_length=self.max_length,
                             add_special_tokens=False).to(self.device)
        with torch.no_grad():
            hidden = self.model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).last_hidden_state
            probs = torch.softmax(self.score_head(hidden).float(), dim=-1)[..., 1]
        is_tag = (enc["input_ids"] == self.step_tag_id) & enc["attention_mask"].bool()
        lengths = enc["attention_mask"].sum(dim=-1).tolist()
        return [(probs[row][is_tag[row]].tolist(), int(lengths[row])) for row in range(len(texts))]


def _local_checkpoint(name_or_path: str) -> Path:
    """A local directory as is; a Hub id through the Hub cache (config, tokenizer, safetensors)."""
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return path
    from huggingface_hub import snapshot_download

    return Path(snapshot_download(name_or_path, allow_patterns=["*.json", "*.safetensors", "*.txt", "*.model"]))


def _load_score_head(path: Path, hidden_size: int):
    """The checkpoint's `score.{0,2}.{weight,bias}` tensors as `Sequential(Linear, ReLU, Linear)`."""
    import torch
    from safetensors import safe_open

    index = path / "model.safetensors.index.json"
    if index.exists():
        files = sorted({f for k, f in json.loads(index.read_text())["weight_map"].items() if k.startswith("score.")})
    else:
        files = ["model.safetensors"]
    state = {}
    for name in files:
        with safe_open(str(path / name), framework="pt") as f:
            state.update({k[len("score."):]: f.get_tensor(k) for k in f.keys() if k.startswith("score.")})  # noqa: SIM118
    expected = {"0.weight", "0.bias", "2.weight", "2.bias"}
    if set(state) != expected:
        raise ValueError(f"{path}: expected score head tensors {sorted('score.' + k for k in expected)}, "
                         f"found {sorted('score.' + k for k in state)}")
    num_labels = state["2.weight"].shape[0]
    head = torch.nn.Sequential(
        torch.nn.Linear(hidden_size, hidden_size), torch.nn.ReLU(), torch.nn.Linear(hidden_size, num_labels))
    head.load_state_dict(state)
    return head


class VLLMPoolingPRM:
    """Client of a vLLM pooling server: `POST {base_url}/pooling` with the PRM chat as `messages`.

    `base_url` is the server's root, with or without a trailing `/v1`. The reply's `data[i].data` is
    one entry per step tag, each the two class probabilities (or a single positive probability); the
    positive one is taken. A call that still fails after `retries` raises: scoring with a broken PRM
    would silently change the method.

    A server that cannot be reached (refused, timed out, 429/5xx after `retries`) is waited for: the
    failed calls are sent again every `RETRY_PAUSE_S` until `retry_s` seconds have passed since they
    failed, with a warning "PRM server URL unreachable ..., retrying for up to N s". This covers
    a PRM server restarted mid-run (vLLM needs ~1-3 min to load a 7B PRM). When the window is spent,
    `score` raises `PRMUnreachable`: the run stops at that step, its last checkpoint is kept, and it
    resumes (`--resume`) once the server is back. Other failures (4xx, a malformed reply) raise at once.

    Over-long chats are handled as `QwenMathPRM` handles them: each request asks vLLM to keep the
    first `max_tokens` tokens (`truncate_prompt_tokens`, `truncation_side: "right"`, both accepted by
    vLLM 0.24; -1 = the server's `max_model_len`), so the system prompt, the question and the first
    steps are what the PRM sees; the steps whose tag was cut off come back without a score, get 0.0
    and are counted in `truncated_steps`. Keeping the start is the only side that works: scores are
    matched to steps from the first one, and a PRM that does not see the question cannot judge a step.
    `max_tokens=None` sends no truncation (a chat over the server's limit is then a 4xx that raises).
    `max_tokens` must not exceed the server's `--max-model-len` (vLLM refuses it with a 400).
    """

    def __init__(self, base_url: str, model: str, *, concurrency: int = 64, timeout_s: float = 300.0,
                 retries: int = 3, backoff_s: float = 1.0, api_key_env: str = "SCOPE_PRM_API_KEY",
                 max_tokens: int | None = 4096, extra_body: dict | None = None, retry_s: float = 600.0):
        if retry_s < 0:
            raise ValueError(f"PRM retry_s must be >= 0, got {retry_s}")
        if max_tokens is not None and (max_tokens == 0 or max_tokens < -1):
            raise ValueError(f"PRM max_tokens must be positive, -1 (the server's max_model_len) or None, got {max_tokens}")
        root = base_url.rstrip("/")
        self.endpoint = JSONEndpoint(root.removesuffix("/v1") + "/pooling", api_key_env=api_key_env,
                                     concurrency=concurrency, timeout_s=timeout_s, retries=retries, backoff_s=backoff_s)
        # while the server is unreachable: one attempt per round, a round every RETRY_PAUSE_S
        self._waiting = JSONEndpoint(self.endpoint.url, api_key_env=api_key_env, concurrency=concurrency,
                                     timeout_s=timeout_s, retries=0)
        self.url = self.endpoint.url
        self.model = model
        self.max_tokens = max_tokens
        self.extra_body = dict(extra_body or {})
        self.retry_s = retry_s
        self.stats: Counter = Counter()
        self.truncated_steps = 0
        self.last_prompt_tokens: list[int | None] = []  # per solution of the last `score` call: the
        # server's `usage.prompt_tokens` (None: not sent, or no usage in the reply)

    def score(self, questions: Sequence[str], steps: Sequence[Sequence[str]]) -> list[list[float]]:
        if len(questions) != len(steps):
            raise ValueError(f"{len(questions)} questions but {len(steps)} step lists")
        steps = [list(s) for s in steps]
        todo = [i for i, s in enumerate(steps) if s]  # a solution without steps has nothing to score
        truncation = ({"truncate_prompt_tokens": self.max_tokens, "truncation_side": "right"}
                      if self.max_tokens is not None else {})
        bodies = [{"model": self.model, "messages": prm_messages(questions[i], steps[i]), **truncation,
                   **self.extra_body} for i in todo]
        self.last_prompt_tokens = [None] * len(steps)

        def parse(k, reply):
            self.last_prompt_tokens[todo[k]] = _prompt_tokens(reply)
            return parse_pooling_reply(reply, len(steps[todo[k]]), truncated=self.max_tokens is not None)

        got = self._post_within_window(bodies, parse)
        scores: list[list[float]] = [[] for _ in steps]
        for i, result in zip(todo, got):
            if isinstance(result, CallError):
                raise RuntimeError(  # noqa: TRY004 - a failed call, not a bad argument
                    f"PRM server {self.url} failed after {self.endpoint.retries} retries: {result}")
            missing = len(steps[i]) - len(result)
            self.truncated_steps += missing
            scores[i] = result + [0.0] * missing
        return scores


    def _post_within_window(self, bodies: list[dict], parse) -> list:
        """`post_all`, with the calls that found the server unreachable sent again until `retry_s`
        has passed since the first such failure; raises `PRMUnreachable` when it has."""
        results = self.endpoint.post_all(bodies, parse, self.stats)
        start = None
        while True:
            down = [k for k, r in enumerate(results) if isinstance(r, CallError) and r.kind in RETRYABLE]
            if not down:
                if start is not None:
                    logger.warning("PRM server %s is back after %.0f s", self.url, time.monotonic() - start)
                return results
            if start is None:
                start = time.monotonic()
                logger.warning("PRM server %s unreachable (%s), retrying for up to %g s (prm.retry_s)",
                               self.url, results[down[0]], self.retry_s)
            waited = time.monotonic() - start
            if waited >= self.retry_s:
                raise PRMUnreachable(
                    f"PRM server {self.url} unreachable for {waited:.0f} s (prm.retry_s={self.retry_s:g}): "
                    f"{results[down[0]]}. The run stops at this step; its last checkpoint is kept: start the "
                    "server again and resume the run (--resume), or raise prm.retry_s")
            time.sleep(min(RETRY_PAUSE_S, self.retry_s - waited))
            self.stats["window_retries"] += 1
            again = self._waiting.post_all([bodies[k] for k in down], lambda j, reply, ks=down: parse(ks[j], reply),
                                           self.stats)
            for k, r in zip(down, again):
                results[k] = r


class PRMUnreachable(RuntimeError):
    """The PRM server stayed unreachable for the whole retry window (`VLLMPoolingPRM.retry_s`)."""


RETRY_PAUSE_S = 5.0  # between rounds of calls to an unreachable PRM server (one attempt per call a round)


def _prompt_tokens(reply) -> int | None:
    """`usage.prompt_tokens` of a pooling reply (vLLM sends it), or None."""
    try:
        return int(reply["usage"]["prompt_tokens"])
    except (KeyError, TypeError, ValueError):
        return None


def parse_pooling_reply(reply, n_steps: int, truncated: bool = False) -> list[float]:
    """Positive-class probability per step from a vLLM `/pooling` reply for one solution; with
    `truncated` (the request asked for truncation) fewer scores than steps are the leading steps'."""
    try:
        rows = reply["data"][0]["data"]
    except (KeyError, IndexError, TypeError):
        raise CallError("malformed", f"no data[0].data in {str(reply)[:200]}") from None
    scores = [float(r[-1]) if isinstance(r, (list, tuple)) else float(r) for r in rows]
    if len(scores) > n_steps or (len(scores) < n_steps and not truncated):
        raise CallError("malformed", f"{len(scores)} step scores for {n_steps} steps (is the server a STEP-pooling PRM?)")
    return scores
