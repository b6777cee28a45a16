"""The HF rollout of `--device cpu` (`engines/verl/hf_rollout.py`) against the model itself: requests that
arrive together are decoded as one left-padded batch with a KV cache, and what comes back must be
what the model says for each prompt alone: greedy tokens equal `generate` on that prompt, and the
reported log-probs equal a teacher-forced forward pass over prompt + response."""

from __future__ import annotations

import asyncio

import pytest
import torch

pytest.importorskip("verl", reason="verl is installed by the test command (pip install -e .[verl])")

from scope_bench.engines.verl.cpu import PlatformCPU
from scope_bench.engines.verl.hf_rollout import HFRolloutServer, _sample_next
from scope_bench.prompts import prompt_text
from scope_bench.synthetic.model import tiny_model

torch.set_num_threads(1)
QUESTIONS = ["Start with 3. Add 4.", "Start with 12. Multiply by 3. Subtract 5.", "Start with 7."]


@pytest.fixture(scope="module")
def server():
    return HFRolloutServer(str(tiny_model()), seed=0, max_model_len=256, batch_wait_s=0.01)


@pytest.fixture(scope="module")
def prompts(server):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tiny_model()))
    return [tok(prompt_text(tok, q), add_special_tokens=False)["input_ids"] for q in QUESTIONS]


async def _together(server, prompts, params):
    return await asyncio.gather(*[server.generate(p, dict(params), f"r{i}") for i, p in enumerate(prompts)])


def _forward_logprobs(model, prompt, response, temperature=1.0):
    ids = torch.tensor([prompt + response])
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0, len(prompt) - 1: -1].float() / temperature
    return torch.log_softmax(logits, -1).gather(-1, torch.tensor(response)[:, None]).squeeze(-1)


def test_batched_greedy_equals_each_prompt_alone(server, prompts):
    outputs = asyncio.run(_together(server, prompts, {"temperature": 0, "max_tokens": 24, "logprobs": True}))
    assert len({len(p) for p in prompts}) > 1  # left padding is exercised
    for prompt, out in zip(prompts, outputs):
        with torch.no_grad():
            alone = server.model.generate(torch.tensor([prompt]), attention_mask=torch.ones(1, len(prompt)),
                                          do_sample=False, max_new_tokens=24, pad_token_id=server.pad_id,
                                          eos_token_id=list(server.eos_ids))[0, len(prompt):].tolist()
        assert out.token_ids == alone[: len(out.token_ids)] and 0 < len(out.token_ids) <= 24
        torch.testing.assert_close(torch.tensor(out.log_probs),
                                   _forward_logprobs(server.model, prompt, out.token_ids), atol=2e-4, rtol=0)
        assert out.stop_reason == "completed"


def test_sampled_logprobs_are_the_models_after_temperature(server, prompts):
    outputs = asyncio.run(_together(server, prompts * 2, {"temperature": 0.7, "max_tokens": 16, "logprobs": True}))
    for prompt, out in zip(prompts * 2, outputs):
        torch.testing.assert_close(torch.tensor(out.log_probs),
                                   _forward_logprobs(server.model, prompt, out.token_ids, 0.7), atol=2e-4, rtol=0)
    plain = asyncio.run(_together(server, prompts[:1], {"temperature": 1.0, "max_tokens": 4}))
    assert plain[0].log_probs is None  # only when asked, as vLLM


def test_a_sample_does_not_depend_on_its_batch_or_arrival_order(prompts):
    """Per-request seeds (as vLLM's `SamplingParams.seed`): a verl CPU run samples the same rollouts
    whichever requests happen to share a batch, so a seeded run repeats."""
    a, b, c = prompts
    params = {"temperature": 1.0, "max_tokens": 16}
    one = HFRolloutServer(str(tiny_model()), seed=0, max_model_len=256, batch_wait_s=0.01)
    first = asyncio.run(_together(one, [a, b, c, a], params))
    other = HFRolloutServer(str(tiny_model()), seed=0, max_model_len=256, batch_wait_s=0.01)
    alone = asyncio.run(_together(other, [a], params))
    rest = asyncio.run(_together(other, [c, a, b], params))
    tokens = [o.token_ids for o in first]
    assert tokens == [alone[0].token_ids, rest[2].token_ids, rest[0].token_ids, rest[1].token_ids]
    assert tokens[0] != tokens[3]  # the second rollout of a prompt is a new draw, not a copy
    reseeded = HFRolloutServer(str(tiny_model()), seed=1, max_model_len=256, batch_wait_s=0.01)
    assert asyncio.run(_together(reseeded, [a], params))[0].token_ids != tokens[0]  # the run's seed counts


def test_a_resumed_server_samples_as_an_uninterrupted_one(prompts):
    """The weights version in a request's seed is the training step the weights come from, not how many
    syncs this process has seen: a run resumed at step 3 (one sync) samples as one that synced 3 times."""
    params = {"temperature": 1.0, "max_tokens": 16}
    uninterrupted = HFRolloutServer(str(tiny_model()), seed=0, max_model_len=256, batch_wait_s=0.01)
    resumed = HFRolloutServer(str(tiny_model()), seed=0, max_model_len=256, batch_wait_s=0.01)
    state = uninterrupted.model.state_dict()
    for step in (1, 2, 3):
        uninterrupted.load_weights(state, global_steps=step)
    resumed.load_weights(state, global_steps=3)
    tokens = [o.token_ids for o in asyncio.run(_together(uninterrupted, prompts, params))]
    assert tokens == [o.token_ids for o in asyncio.run(_together(resumed, prompts, params))]
    resumed.load_weights(state, global_steps=4)  # the next step's weights: new draws
    assert tokens != [o.token_ids for o in asyncio.run(_together(resumed, prompts, params))]


def test_top_p_and_top_k_keep_the_nucleus():
    torch.manual_seed(0)
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]])).repeat(2000, 1)
    tokens, _ = _sample_next(logits, 1.0, top_p=0.7, top_k=-1)
    assert set(tokens.tolist()) == {0, 1}  # 0.5 + 0.3 reaches 0.7: the rest is never drawn
    tokens, _ = _sample_next(logits, 1.0, top_p=1.0, top_k=1)
    assert set(tokens.tolist()) == {0}


def test_weight_sync_changes_what_is_generated(server, prompts):
    state = {k: v.clone() for k, v in server.model.state_dict().items()}
    try:
        shifted = {k: v + 0.5 for k, v in state.items() if k.endswith("lm_head.weight") or "embed" in k}
        assert server.load_weights(shifted, global_steps=7) == len(shifted)
        out = asyncio.run(_together(server, prompts[:1], {"temperature": 0, "max_tokens": 8, "logprobs": True}))[0]
        assert out.extra_fields["global_steps"] == 7 and server.stats()["weight_syncs"] >= 1
        torch.testing.assert_close(torch.tensor(out.log_probs),
                                   _forward_logprobs(server.model, prompts[0], out.token_ids), atol=2e-4, rtol=0)
        with pytest.raises(KeyError, match="does not have"):
            server.load_weights({"no.such.weight": torch.zeros(1)})
    finally:
        server.model.load_state_dict(state)


def test_cpu_platform_answers_verls_questions():
    platform = PlatformCPU()
    assert platform.device_name == "cpu" and platform.communication_backend_name() == "gloo"
    assert platform.device_module.get_device_name() == "CPU"  # verl's flops counter asks
    free, total = platform.device_module.mem_get_info()
    assert 0 < free <= total
    assert torch.ones(2).to(platform.current_device()).device.type == "cpu"
