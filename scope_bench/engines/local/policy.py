"""The policy's two jobs in a step: sample responses, and score token log-probs of any responses
(sampled or rectified) for the loss. Plain Hugging Face `generate` and one forward pass."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from scope_bench.core.steps import decode_with_offsets


@dataclass
class Sample:
    """One response: ids as sampled (with the end-of-sequence token when it stopped), decoded text,
    and each token's character span in that text."""

    token_ids: list[int]
    text: str
    offsets: list[tuple[int, int]]
    finished: bool


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device={device} but CUDA is not available")
    return torch.device(device)


def load_policy(path, device: torch.device, dtype: str = "float32"):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path)
    tokenizer.padding_side = "left"
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(path, dtype=getattr(torch, dtype)).to(device)
    return model, tokenizer


def encode_prompts(tokenizer, prompts: list[str], max_tokens: int) -> list[list[int]]:
    """Prompt ids, keeping the last `max_tokens` (the question's end and the generation prompt)."""
    return [ids[-max_tokens:] for ids in tokenizer(prompts, add_special_tokens=False)["input_ids"]]


@torch.no_grad()
def generate(model, tokenizer, prompt_ids: list[list[int]], *, n: int, max_new_tokens: int,
             temperature: float = 1.0, top_p: float = 1.0, greedy: bool = False,
             chunk_size: int = 256, seed: int | None = None) -> list[list[Sample]]:
    """`n` responses per prompt (one group per prompt). `seed` fixes the sampling RNG."""
    if seed is not None:
        torch.manual_seed(seed)
    device = next(model.parameters()).device
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    flat = [ids for ids in prompt_ids for _ in range(n)]
    samples: list[Sample] = []
    was_training = model.training
    model.eval()
    for start in range(0, len(flat), chunk_size):
        chunk = flat[start: start + chunk_size]
        width = max(map(len, chunk))
        input_ids = torch.tensor([[pad] * (width - len(x)) + x for x in chunk], device=device)
        attn = torch.tensor([[0] * (width - len(x)) + [1] * len(x) for x in chunk], device=device)
        kwargs = {"do_sample": False} if greedy else {"do_sample": True, "temperature": temperature,
                                                       "top_p": top_p, "top_k": 0}
        out = model.generate(input_ids=input_ids, attention_mask=attn, max_new_tokens=max_new_tokens,
                             eos_token_id=eos, pad_token_id=pad, **kwargs)
        for row in out[:, width:].tolist():
            finished = eos in row
            ids = row[: row.index(eos) + 1] if finished else row
            text, offsets = decode_with_offsets(tokenizer, ids)
            samples.append(Sample(ids, text, offsets, finished))
    model.train(was_training)
    return [samples[i * n:(i + 1) * n] for i in range(len(prompt_ids))]


def pack(prompt_ids: list[list[int]], responses: list[list[int]], pad_id: int, device) -> dict:
    """A batch as [left-padded prompt | right-padded response], with positions that skip padding."""
    p_width = max(map(len, prompt_ids))
    r_width = max(map(len, responses))
    ids, attn, rmask = [], [], []
    for p, r in zip(prompt_ids, responses):
        ids.append([pad_id] * (p_width - len(p)) + p + r + [pad_id] * (r_width - len(r)))
        attn.append([0] * (p_width - len(p)) + [1] * (len(p) + len(r)) + [0] * (r_width - len(r)))
        rmask.append([1] * len(r) + [0] * (r_width - len(r)))
    attn_t = torch.tensor(attn, device=device)
    return {
        "input_ids": torch.tensor(ids, device=device),
        "attention_mask": attn_t,
        "position_ids": (attn_t.cumsum(-1) - 1).clamp(min=0),
        "response_mask": torch.tensor(rmask, device=device, dtype=torch.float32),
        "prompt_width": p_width,
    }


def response_logprobs(model, batch: dict, with_entropy: bool = False, temperature: float = 1.0):
    """Log-prob of each response token under `model` at sampling `temperature` (and the policy's
    entropy there). (B, R). The logits are divided by the temperature as `generate` does, so the ratio
    and the loss see the distribution the rollouts were drawn from (verl's FSDP engine does the same)."""
    p_width, r_width = batch["prompt_width"], batch["response_mask"].shape[1]
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                   position_ids=batch["position_ids"]).logits
    logits = logits[:, p_width - 1: p_width + r_width - 1].float()  # position t predicts token t+1
    if temperature != 1.0:
        logits = logits / temperature
    logp_all = torch.log_softmax(logits, dim=-1)
    targets = batch["input_ids"][:, p_width:]
    logp = logp_all.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    if not with_entropy:
        return logp, None
    entropy = -(logp_all.exp() * logp_all).sum(-1)
    return logp, entropy
