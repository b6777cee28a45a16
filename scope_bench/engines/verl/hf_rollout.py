"""The `hf` rollout of the CPU dry run: verl 0.9.1 has only vLLM/SGLang/TRT-LLM replicas, none of
which runs on CPU, so `cpu.py` registers these three under the rollout name `hf`:

- `HFRolloutServer`, a Ray actor holding a Hugging Face model that answers verl's token-in-token-out
  `generate` (requests arriving together decode as one batch; each samples from its own seed);
- `HFReplica`, the replica verl's agent loop talks to (one server per worker);
- `HFServerAdapter`, inside each actor worker: pushes the actor's weights to its replica's server
  after every update.
"""

from __future__ import annotations

import asyncio
import hashlib

import ray
import torch
import torch.distributed

from verl.workers.rollout.base import BaseRollout
from verl.workers.rollout.replica import RolloutReplica, TokenOutput


def _sample_next(logits: torch.Tensor, temperature: float, top_p: float, top_k: int,
                 generators: list[torch.Generator] | None = None):
    """Next tokens under the sampling settings, and their log-probs as vLLM reports them by default
    (`logprobs_mode=processed_logprobs`: after temperature, before top-k/top-p). Greedy at
    temperature 0. Row i draws from `generators[i]`, so what a request samples does not depend on
    which other requests shared its batch."""
    logits = logits.float()
    if temperature <= 0:
        token = logits.argmax(dim=-1)
        return token, torch.log_softmax(logits, dim=-1).gather(-1, token[:, None]).squeeze(-1)
    logprobs = torch.log_softmax(logits / temperature, dim=-1)
    probs = logprobs.exp()
    keep = torch.ones_like(probs, dtype=torch.bool)
    if top_k and top_k > 0:
        keep &= probs >= torch.topk(probs, min(top_k, probs.shape[-1]), dim=-1).values[:, -1:]
    if top_p < 1.0:
        sorted_probs, order = torch.sort(probs, descending=True, dim=-1)
        mass_before = sorted_probs.cumsum(dim=-1) - sorted_probs  # the nucleus: tokens reached before top_p
        keep &= torch.zeros_like(keep).scatter(-1, order, mass_before < top_p)
    kept = torch.where(keep, probs, 0.0)
    if generators is None:
        token = torch.multinomial(kept, 1).squeeze(-1)
    else:
        token = torch.cat([torch.multinomial(row, 1, generator=g) for row, g in zip(kept, generators)])
    return token, logprobs.gather(-1, token[:, None]).squeeze(-1)


def request_seed(seed: int, replica_rank: int, weights_version, prompt_ids: list[int], repeat: int) -> int:
    """The seed of one request, from what it is rather than when it arrived (vLLM's per-request
    `seed`): the run's seed, the replica, the weights it is sampled under (the training step they
    come from, so a resumed run samples as an uninterrupted one), the prompt, and how many requests
    with this prompt came before it under these weights (the k-th of a group's n rollouts)."""
    key = f"{seed}|{replica_rank}|{weights_version}|{repeat}|{','.join(map(str, prompt_ids))}"
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "little") & (2**63 - 1)


class HFRolloutServer:
    """One rollout replica: a Hugging Face model answering verl's token-in-token-out `generate`.

    Requests arriving together (the agent loop sends a whole step's at once) are decoded as one
    left-padded batch with a KV cache, so a step costs one batched generation, not one per rollout.
    Weights come from the actor after each update (`load_weights`), as vLLM's do in hybrid mode.
    """

    def __init__(self, model_path: str, *, seed: int = 0, max_model_len: int = 4096, dtype: str = "float32",
                 replica_rank: int = 0, batch_wait_s: float = 0.05):
        from transformers import AutoConfig, AutoModelForCausalLM

        self.seed, self.replica_rank = seed, replica_rank
        config = AutoConfig.from_pretrained(model_path)
        self.model = AutoModelForCausalLM.from_pretrained(
            model_path, dtype=getattr(torch, dtype), attn_implementation="sdpa").eval()
        eos = getattr(self.model.generation_config, "eos_token_id", None) or config.eos_token_id
        self.eos_ids = set(eos if isinstance(eos, list) else [eos]) - {None}
        self.pad_id = config.pad_token_id if config.pad_token_id is not None else next(iter(self.eos_ids), 0)
        self.max_model_len = max_model_len
        self.batch_wait_s = batch_wait_s
        self.global_steps = None
        self.weight_syncs = 0
        self._repeats: dict = {}  # (weights version, prompt) -> requests seen: the k of request_seed
        self._queue: list = []
        self._worker: asyncio.Task | None = None

    async def generate(self, prompt_ids, sampling_params: dict, request_id: str, **_ignored) -> TokenOutput:
        params = dict(sampling_params)
        max_tokens = int(params.pop("max_tokens", None) or params.pop("max_new_tokens", None) or 0)
        max_tokens = max(1, min(max_tokens or self.max_model_len, self.max_model_len - len(prompt_ids)))
        prompt_ids = list(prompt_ids)
        if params.get("seed") is None:
            version = self.global_steps if self.global_steps is not None else self.weight_syncs
            key = (version, tuple(prompt_ids))
            self._repeats[key] = repeat = self._repeats.get(key, 0) + 1
            params["seed"] = request_seed(self.seed, self.replica_rank, version, prompt_ids, repeat)
        future = asyncio.get_running_loop().create_future()
        self._queue.append((prompt_ids, params, max_tokens, future))
        if self._worker is None or self._worker.done():
            self._worker = asyncio.create_task(self._drain())
        return await future

    async def _drain(self):
        await asyncio.sleep(self.batch_wait_s)  # let the rest of the step's requests arrive
        while self._queue:
            batch, self._queue = self._queue, []
            groups: dict = {}
            for item in batch:
                p = item[1]
                key = (float(p.get("temperature", 1.0)), float(p.get("top_p", 1.0)), int(p.get("top_k", -1)))
                groups.setdefault(key, []).append(item)
            for (temperature, top_p, top_k), items in groups.items():
                try:
                    outputs = self._generate_batch(items, temperature, top_p, top_k)
                except Exception as err:  # noqa: BLE001 - the caller gets the error, the server lives
                    for *_, future in items:
                        future.set_exception(err)
                    continue
                for (*_, future), output in zip(items, outputs):
                    future.set_result(output)
            await asyncio.sleep(0)

    @torch.no_grad()
    def _generate_batch(self, items, temperature: float, top_p: float, top_k: int) -> list[TokenOutput]:
        prompts = [item[0] for item in items]
        budgets = torch.tensor([item[2] for item in items])
        logprobs_wanted = [item[1].get("logprobs") is not None and item[1].get("logprobs") is not False
                           for item in items]
        width = max(map(len, prompts))
        ids = torch.tensor([[self.pad_id] * (width - len(p)) + p for p in prompts])
        attention = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
        n = len(prompts)
        generators = [torch.Generator().manual_seed(int(item[1]["seed"])) for item in items]
        done = torch.zeros(n, dtype=torch.bool)
        tokens, logprobs = [[] for _ in range(n)], [[] for _ in range(n)]
        past, step_input = None, ids
        for step in range(int(budgets.max())):
            positions = (attention.cumsum(-1) - 1).clamp(min=0)[:, -step_input.shape[1]:]
            out = self.model(input_ids=step_input, attention_mask=attention, position_ids=positions,
                             past_key_values=past, use_cache=True)
            past = out.past_key_values
            token, logprob = _sample_next(out.logits[:, -1], temperature, top_p, top_k, generators)
            for i in range(n):
                if not done[i]:
                    tokens[i].append(int(token[i]))
                    logprobs[i].append(float(logprob[i]))
                    if int(token[i]) in self.eos_ids or len(tokens[i]) >= int(budgets[i]):
                        done[i] = True
            if bool(done.all()):
                break
            token = torch.where(done, torch.full_like(token, self.pad_id), token)
            step_input = token[:, None]
            attention = torch.cat([attention, (~done).long()[:, None]], dim=1)
        extra = {"global_steps": self.global_steps}
        return [TokenOutput(token_ids=tokens[i], log_probs=logprobs[i] if logprobs_wanted[i] else None,
                            stop_reason="completed", extra_fields=dict(extra)) for i in range(n)]

    def load_weights(self, state: dict, global_steps=None) -> int:
        """The actor's full weights (names as in the HF checkpoint); returns how many were loaded."""
        missing = set(state) - set(self.model.state_dict())
        if missing:
            raise KeyError(f"weights the rollout model does not have: {sorted(missing)[:5]}")
        self.model.load_state_dict(state, strict=False)
        self.global_steps = global_steps
        self.weight_syncs += 1
        self._repeats.clear()
        return len(state)

    def stats(self) -> dict:
        return {"weight_syncs": self.weight_syncs, "global_steps": self.global_steps}

    # the replica's control calls: nothing to free or resume on host memory
    async def wake_up(self): ...
    async def sleep(self): ...
    async def abort_all_requests(self, reject_request: bool = False): ...
    async def resume_generation(self): ...
    async def clear_kv_cache(self): ...
    async def release_kv_cache(self): ...
    async def resume_kv_cache(self): ...
    async def start_profile(self, **kwargs): ...
    async def stop_profile(self): ...


def server_name(replica_rank: int) -> str:
    return f"scope_hf_rollout_{replica_rank}"


class HFReplica(RolloutReplica):
    """A rollout replica of one HF server per `tensor_model_parallel_size` workers (1 on CPU)."""

    async def launch_servers(self):
        if self.world_size != 1:
            raise ValueError("the hf rollout runs one model per worker: set "
                             "actor_rollout_ref.rollout.tensor_model_parallel_size=1")
        cfg = self.config
        path = self.model_config.get("local_path") or self.model_config.path
        server = ray.remote(HFRolloutServer).options(
            name=server_name(self.replica_rank), num_cpus=0, max_concurrency=self.max_concurrency,
        ).remote(str(path), seed=cfg.seed, max_model_len=cfg.max_model_len or cfg.prompt_length + cfg.response_length,
                 replica_rank=self.replica_rank)
        await server.stats.remote()  # surfaces a model that fails to load here, not at the first step
        self.servers = [server]
        self._server_handle = server
        self._server_address = f"hf-replica-{self.replica_rank}"


class HFServerAdapter(BaseRollout):
    """The rollout side inside each actor worker: pushes the actor's weights to its replica's server
    after every update (verl's `naive` checkpoint engine calls `update_weights`)."""

    def __init__(self, config, model_config, device_mesh=None, *args, **kwargs):
        super().__init__(config, model_config, device_mesh)
        rank = torch.distributed.get_rank() if torch.distributed.is_initialized() else 0
        self.replica_rank = rank // max(1, self.config.tensor_model_parallel_size)
        self.is_leader_rank = rank % max(1, self.config.tensor_model_parallel_size) == 0

    async def update_weights(self, weights, wire_format: str = "named_tensors", global_steps=None, **kwargs):
        if wire_format != "named_tensors":
            raise ValueError(f"the hf rollout takes full named tensors, got wire_format={wire_format}")
        state = {}
        for name, tensor in weights:  # every rank walks the generator: gathering is collective
            tensor = tensor.full_tensor() if hasattr(tensor, "full_tensor") else tensor
            state[name] = tensor.detach().to("cpu", copy=True)
        if self.is_leader_rank:
            server = ray.get_actor(server_name(self.replica_rank))
            await server.load_weights.remote(state, global_steps)

    async def resume(self, tags):
        return None

    async def release(self):
        return None
