"""A tiny causal LM and tokenizer for the synthetic task, built offline like a real checkpoint.

`build_tiny_model(out_dir)` writes a randomly initialised Qwen2 model (~0.9M parameters) and a
byte-level BPE tokenizer (digits split, a chat template) with `save_pretrained`, so every later stage
loads it with `from_pretrained`. `warm_start_model()` adds a short SFT on reference solutions so
the policy starts in SCOPE's regime (some right, many nearly right); both are cached in CACHE_DIR.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import shutil
import tempfile
from pathlib import Path

from scope_bench.paths import CACHE_DIR
from scope_bench.synthetic.task import generate_problems, solution, split_problems

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
TINY = {"hidden_size": 128, "intermediate_size": 384, "num_hidden_layers": 4, "num_attention_heads": 4,
        "num_key_value_heads": 2, "max_position_embeddings": 512}
VOCAB_SIZE = 512


def _corpus(n: int, seed: int) -> list[str]:
    from scope_bench.prompts import chat_messages

    texts = []
    for p in generate_problems(n, seed):
        system, user = (m["content"] for m in chat_messages(p.question))
        texts.append(f"system\n{system}\nuser\n{user}\nassistant\n{solution(p)}")
    return texts


def build_tokenizer(seed: int = 0):
    """Byte-level BPE trained on synthetic text (digits always single tokens), with a chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=VOCAB_SIZE, special_tokens=SPECIAL_TOKENS, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(_corpus(2000, seed), trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>",
        chat_template=CHAT_TEMPLATE, padding_side="left", model_max_length=TINY["max_position_embeddings"],
    )


def build_tiny_model(out_dir: str | os.PathLike, seed: int = 0, **overrides) -> Path:
    """Random-init Qwen2 causal LM + tokenizer saved in `out_dir` (safetensors)."""
    import torch
    from transformers import GenerationConfig, Qwen2Config, Qwen2ForCausalLM

    out_dir = Path(out_dir)
    tokenizer = build_tokenizer(seed)
    config = Qwen2Config(
        vocab_size=len(tokenizer), tie_word_embeddings=True, rope_theta=10000.0,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
        bos_token_id=None, **{**TINY, **overrides},
    )
    torch.manual_seed(seed)
    model = Qwen2ForCausalLM(config)
    model.generation_config = GenerationConfig(
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, bos_token_id=None)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return out_dir


def tiny_model(seed: int = 0, cache_dir: str | os.PathLike | None = None) -> Path:
    """The random-init tiny model, built once per (seed, architecture) and cached."""
    key = _key({"kind": "tiny", "seed": seed, "arch": TINY, "vocab": VOCAB_SIZE})
    return _cached(Path(cache_dir or CACHE_DIR) / "synthetic" / f"tiny-{key}",
                   lambda d: build_tiny_model(d, seed=seed))


def warm_start_model(steps: int = 800, seed: int = 0, cache_dir: str | os.PathLike | None = None,
                     batch_size: int = 32, lr: float = 1e-3, threads: int | None = None,
                     careless_rate: float = 0.0, careless_steps: int = 200, careless_lr: float = 3e-4,
                     careless_from: int = 1) -> Path:
    """The tiny model after `steps` of SFT on reference solutions (cached; ~3-4 min on 2 cores).

    With `careless_rate` > 0 that careful warm start is SFT-ed `careless_steps` more (at `careless_lr`)
    on solutions where each line from line `careless_from` on is careless with that chance
    (`task.solution_steps`), so the policy
    chooses its style itself and keeps the careful skill (an SFT of the mix from scratch lost it:
    no success gap between the styles was left for RL to find)."""
    key = _key({"kind": "warm", "data": "hash-split", "seed": seed, "steps": steps, "bs": batch_size, "lr": lr,
                "arch": TINY, "vocab": VOCAB_SIZE})
    base = tiny_model(seed, cache_dir)
    careful = _cached(Path(cache_dir or CACHE_DIR) / "synthetic" / f"warm-{key}",
                      lambda d: sft_warm_start(base, d, steps=steps, seed=seed, batch_size=batch_size, lr=lr,
                                               threads=threads))
    if not careless_rate:
        return careful
    key = _key({"kind": "careless", "format": "chain", "base": careful.name, "rate": careless_rate,
                "steps": careless_steps, "lr": careless_lr, "bs": batch_size, "from": careless_from})
    return _cached(Path(cache_dir or CACHE_DIR) / "synthetic" / f"warm-{key}",
                   lambda d: sft_warm_start(careful, d, steps=careless_steps, seed=seed + 1, batch_size=batch_size,
                                            lr=careless_lr, threads=threads, careless_rate=careless_rate,
                                            careless_from=careless_from))


def warm_start_for(model_cfg, threads: int | None = None) -> Path:
    """The warm start a trainer config's `model` section names (warm_start_steps, careless_*)."""
    return warm_start_model(steps=model_cfg.warm_start_steps, threads=threads,
                            careless_rate=model_cfg.careless_rate, careless_steps=model_cfg.careless_steps,
                            careless_lr=model_cfg.careless_lr, careless_from=model_cfg.careless_from)


def sft_warm_start(model_dir, out_dir, *, steps: int, seed: int = 0, batch_size: int = 32, lr: float = 1e-3,
                   threads: int | None = None, careless_rate: float = 0.0, careless_from: int = 1) -> Path:
    """Teacher-forced SFT on synthetic training problems (prompt tokens masked out of the loss);
    `careless_rate` makes some lines careless (`task.solution_steps`)."""
    import torch
    from tqdm import tqdm
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from scope_bench.prompts import prompt_text

    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(seed)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    model.train()
    problems = split_problems("train", steps * batch_size, seed + 7)  # never a val/test problem
    rng = random.Random(seed)
    rng.shuffle(problems)
    style_rng = random.Random(f"careless|{seed}")
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / 50) * 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps)))
    eos = tokenizer.eos_token
    bar = tqdm(range(steps), desc="warm start (SFT)", leave=False)
    for step in bar:
        batch = problems[step * batch_size:(step + 1) * batch_size]
        prompts = [prompt_text(tokenizer, p.question) for p in batch]
        ids, labels = [], []
        for prompt, p in zip(prompts, batch):
            pi = tokenizer(prompt, add_special_tokens=False)["input_ids"]
            text = solution(p, careless_rate, style_rng, careless_from) if careless_rate else solution(p)
            ri = tokenizer(text + eos, add_special_tokens=False)["input_ids"]
            ids.append(pi + ri)
            labels.append([-100] * len(pi) + ri)
        width = max(map(len, ids))
        pad = tokenizer.pad_token_id
        input_ids = torch.tensor([x + [pad] * (width - len(x)) for x in ids])
        label_t = torch.tensor([y + [-100] * (width - len(y)) for y in labels])
        attn = torch.tensor([[1] * len(x) + [0] * (width - len(x)) for x in ids])
        loss = model(input_ids=input_ids, attention_mask=attn, labels=label_t).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        bar.set_postfix(loss=f"{loss.item():.3f}")
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return Path(out_dir)


def _key(spec: dict) -> str:
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:10]


def _cached(path: Path, build) -> Path:
    """Build into a temporary sibling and rename, so a killed build never leaves a half-written
    checkpoint at `path`; one process builds while the others wait for it (a file lock: the test
    workers and a demo started beside them would otherwise each spend minutes on the same build)."""
    from filelock import FileLock

    if (path / "config.json").exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(path) + ".lock"):
        if (path / "config.json").exists():  # built by the process that held the lock
            return path
        return _build_and_rename(path, build)


def _build_and_rename(path: Path, build) -> Path:
    tmp = Path(tempfile.mkdtemp(prefix=path.name + ".", dir=path.parent))
    try:
        build(tmp)
        try:
            os.replace(tmp, path)
        except OSError:  # another process finished first
            if not (path / "config.json").exists():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return path
