"""PRM loaders: the native Qwen2 + score-head loader on a tiny checkpoint built offline (checked
against a hand computation from the saved tensors), and the vLLM /pooling client on a local server."""

from __future__ import annotations

import json

import pytest
import torch
from test_refiner_server import FakeChatServer

from scope_bench.core.interfaces import ProcessRewardModel
from scope_bench.engines.prm import STEP_TAG, QwenMathPRM, VLLMPoolingPRM, prm_messages

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def tiny_prm_dir(tmp_path_factory):
    return build_tiny_prm(tmp_path_factory.mktemp("tiny-prm"))


def build_tiny_prm(out):
    """A Qwen2.5-Math-PRM-shaped checkpoint: `model.*` Qwen2 weights and `score.{0,2}` head, in two
    safetensors shards with an index, the `<extra_0>` token and a Qwen-style chat template."""
    from safetensors.torch import save_file
    from transformers import Qwen2Config, Qwen2Model

    tokenizer = chat_tokenizer()
    tokenizer.add_special_tokens({"additional_special_tokens": [STEP_TAG]})
    config = Qwen2Config(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                         architectures=["Qwen2ForProcessRewardModel"], pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(0)
    body = Qwen2Model(config)
    head = torch.nn.Sequential(torch.nn.Linear(32, 32), torch.nn.ReLU(), torch.nn.Linear(32, 2))
    with torch.no_grad():  # spread the logits so step probabilities differ clearly
        head[2].weight.mul_(3.0)
    state = {f"model.{k}": v.contiguous() for k, v in body.state_dict().items()}
    state.update({f"score.{k}": v.contiguous() for k, v in head.state_dict().items()})
    names = sorted(state)
    shards = {"model-00001-of-00002.safetensors": names[: len(names) // 2],
              "model-00002-of-00002.safetensors": names[len(names) // 2 :]}
    for file, keys in shards.items():
        save_file({k: state[k] for k in keys}, str(out / file), metadata={"format": "pt"})
    weight_map = {k: file for file, keys in shards.items() for k in keys}
    (out / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    config.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


CHAT_TEMPLATE = (
    "{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>\\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


def chat_tokenizer():
    """Byte-level tokenizer (one token per byte, nothing trained) with Qwen's chat markers."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    tok = Tokenizer(models.BPE(vocab={ch: i for i, ch in enumerate(alphabet)}, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                        chat_template=CHAT_TEMPLATE)
    tokenizer.add_special_tokens({"additional_special_tokens": ["<|im_start|>"]})
    return tokenizer


def _hand_scores(path, question, steps):
    """Step probabilities from the saved tensors directly: Qwen2 forward, then the head by hand."""
    from safetensors.torch import load_file
    from transformers import AutoTokenizer, Qwen2Config, Qwen2Model

    tokenizer = AutoTokenizer.from_pretrained(path)
    state = {}
    for file in sorted(path.glob("*.safetensors")):
        state.update(load_file(str(file)))
    body = Qwen2Model(Qwen2Config.from_pretrained(path))
    body.load_state_dict({k[len("model."):]: v for k, v in state.items() if k.startswith("model.")})
    text = tokenizer.apply_chat_template(prm_messages(question, steps), tokenize=False)
    ids = tokenizer(text, add_special_tokens=False, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        h = body(input_ids=ids).last_hidden_state[0]
    hidden = torch.relu(h @ state["score.0.weight"].T + state["score.0.bias"])
    logits = hidden @ state["score.2.weight"].T + state["score.2.bias"]
    positions = (ids[0] == tokenizer.convert_tokens_to_ids(STEP_TAG)).nonzero().flatten().tolist()
    return [float(torch.softmax(logits[p], -1)[1]) for p in positions]


def test_native_loader_matches_a_hand_computation(tiny_prm_dir):
    prm = QwenMathPRM(str(tiny_prm_dir), device="cpu", batch_size=2)
    assert isinstance(prm, ProcessRewardModel)
    questions = ["What is 2+3?", "Compute 7*8.", "Is 9 prime?"]
    steps = [["2+3 = 5.", "So \\boxed{5}."],
             ["7*8 = 54.", "Check: 7*8 = 7*7 + 7.", "That is 56, so \\boxed{56}."],
             ["9 = 3*3."]]
    scores = prm.score(questions, steps)  # batched with right padding, sorted by length
    assert [len(s) for s in scores] == [2, 3, 1]
    for q, s, got in zip(questions, steps, scores):
        assert got == pytest.approx(_hand_scores(tiny_prm_dir, q, s), abs=1e-5)
    flat = [p for s in scores for p in s]
    assert all(0.0 <= p <= 1.0 for p in flat)
    assert len({round(p, 6) for p in flat}) == len(flat)  # step-specific, not the broken constant 0.5


def test_step_tag_inside_a_step_does_not_shift_scores(tiny_prm_dir):
    prm = QwenMathPRM(str(tiny_prm_dir), device="cpu")
    (scores,) = prm.score(["q"], [["a step with a stray <extra_0> tag", "second"]])
    assert len(scores) == 2


def test_truncated_steps_score_zero(tiny_prm_dir):
    prm = QwenMathPRM(str(tiny_prm_dir), device="cpu", max_length=60)
    steps = [f"Step {i}: add {i} to the total and carry on." for i in range(12)]
    (scores,) = prm.score(["Sum the numbers."], [steps])
    assert len(scores) == 12 and scores[-1] == 0.0 and prm.truncated_steps > 0
    full = QwenMathPRM(str(tiny_prm_dir), device="cpu").score(["Sum the numbers."], [steps])[0]
    kept = 12 - prm.truncated_steps
    assert scores[:kept] == pytest.approx(full[:kept], abs=1e-5)


def test_loader_rejects_a_checkpoint_without_the_step_tag(tmp_path):
    chat_tokenizer().save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="<extra_0>"):
        QwenMathPRM(str(tmp_path), device="cpu")


def _pooling_reply(body):
    """A STEP-pooling reply: one [p_neg, p_pos] per tag; p_pos encodes the step's position."""
    n = body["messages"][-1]["content"].count(STEP_TAG)
    return {"object": "list", "data": [{"index": 0, "object": "pooling",
                                        "data": [[1 - 0.1 * (j + 1), 0.1 * (j + 1)] for j in range(n)]}]}


def test_vllm_pooling_client_scores_every_solution_concurrently():
    with FakeChatServer(latency_s=0.2, pooling=_pooling_reply) as server:
        prm = VLLMPoolingPRM(server.base_url, "Qwen/Qwen2.5-Math-PRM-7B", concurrency=8)
        scores = prm.score(["q1", "q2", "q3"], [["a", "b", "c"], [], ["x"]])
    assert scores == [pytest.approx([0.1, 0.2, 0.3]), [], pytest.approx([0.1])]
    assert len(server.requests) == 2  # no call for a solution without steps
    # the requests are concurrent: they arrive in any order
    request = next(r for r in server.requests if r["body"]["messages"][1]["content"] == "q1")
    assert request["path"] == "/pooling"  # the /v1 of the base url is dropped
    assert request["body"]["model"] == "Qwen/Qwen2.5-Math-PRM-7B"
    assert request["body"]["messages"] == prm_messages("q1", ["a", "b", "c"])
    # over-long chats keep their start, as QwenMathPRM keeps it (tests/test_serve.py runs the cut)
    assert request["body"]["truncate_prompt_tokens"] == 4096 and request["body"]["truncation_side"] == "right"


def test_vllm_pooling_client_raises_on_a_wrong_step_count():
    """Fewer scores than steps are truncated steps only when truncation was asked for; more are never right."""
    def two_scores(body):
        return {"data": [{"index": 0, "data": [[0.5, 0.5], [0.4, 0.6]]}]}

    with FakeChatServer(pooling=two_scores) as server:
        with pytest.raises(RuntimeError, match="2 step scores for 3 steps"):
            VLLMPoolingPRM(server.root_url, "m", retries=0, max_tokens=None).score(["q"], [["a", "b", "c"]])
        with pytest.raises(RuntimeError, match="2 step scores for 1 steps"):
            VLLMPoolingPRM(server.root_url, "m", retries=0).score(["q"], [["a"]])
        truncating = VLLMPoolingPRM(server.root_url, "m", retries=0)
        assert truncating.score(["q"], [["a", "b", "c"]]) == [[0.5, 0.6, 0.0]] and truncating.truncated_steps == 1


def test_prm_messages_follow_the_official_recipe():
    messages = prm_messages("Q?", ["s1", "s2"])
    assert [m["role"] for m in messages] == ["system", "user", "assistant"]
    assert "\\boxed{}" in messages[0]["content"]
    assert messages[2]["content"] == "s1<extra_0>s2<extra_0>"


# ---------------------------------------------------------------- a PRM whose right answer is known
GOOD, BAD = "+", "-"  # the character a step ends with decides its score
P_GOOD = 0.9  # designed step probabilities: GOOD -> 0.9, BAD -> 0.1, anything else -> 0.5


def build_known_prm(out):
    """A one-layer Qwen2.5-Math-PRM-shaped checkpoint whose step score is set by the token just before
    each `<extra_0>` tag: p = 0.9 after "+", 0.1 after "-", 0.5 after any other token.

    How: sliding-window attention of width 2 with zero queries and keys, so the tag attends equally to
    itself and the token before it; values and output projection are the identity, the MLP is off. The
    embeddings are one-hot: "+" on dim 0, "-" on dim 1, the tag on dim 2, every other token on dim 3. At
    a tag the hidden state is therefore a fixed mix of the tag and the previous token's dim; the score
    head reads dims 0 and 1 (Linear, ReLU, Linear) into a logit difference of +-ln 9 (or 0). Saved as one
    model.safetensors (no index), the other layout `_load_score_head` reads."""
    import math

    from safetensors.torch import save_file
    from transformers import Qwen2Config, Qwen2Model

    tokenizer = chat_tokenizer()
    tokenizer.add_special_tokens({"additional_special_tokens": [STEP_TAG]})
    hidden, eps = 8, 1e-6
    config = Qwen2Config(vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=8, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=1024,
                         rms_norm_eps=eps, use_sliding_window=True, sliding_window=2, max_window_layers=0,
                         architectures=["Qwen2ForProcessRewardModel"], pad_token_id=tokenizer.pad_token_id)
    body = Qwen2Model(config)
    assert body.config.layer_types == ["sliding_attention"]
    good, bad, tag = (tokenizer.convert_tokens_to_ids(t) for t in (GOOD, BAD, STEP_TAG))
    with torch.no_grad():
        for p in body.parameters():
            p.zero_()
        body.embed_tokens.weight[:, 3] = 1.0
        for token, dim in ((good, 0), (bad, 1), (tag, 2)):
            body.embed_tokens.weight[token] = torch.nn.functional.one_hot(torch.tensor(dim), hidden).float()
        layer = body.layers[0]
        layer.input_layernorm.weight.fill_(1.0)
        layer.post_attention_layernorm.weight.fill_(1.0)
        layer.self_attn.v_proj.weight.copy_(torch.eye(hidden))
        layer.self_attn.o_proj.weight.copy_(torch.eye(hidden))
        body.norm.weight.fill_(1.0)
    # at a tag after "+": h = e2 + (s*e0 + s*e2)/2 with s = 1/rms(one-hot) = 1/sqrt(1/8 + eps); the final
    # RMSNorm scales it, leaving c on dim 0. The head maps dims (0, 1) to logit(pos) - logit(neg) = k*(d0 - d1).
    s = 1 / math.sqrt(1 / hidden + eps)
    a, b = s / 2, 1 + s / 2
    c = a / math.sqrt((a * a + b * b) / hidden + eps)
    k = math.log(P_GOOD / (1 - P_GOOD)) / c
    head = torch.nn.Sequential(torch.nn.Linear(hidden, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, 2))
    with torch.no_grad():
        for p in head.parameters():
            p.zero_()
        head[0].weight[0, 0] = head[0].weight[1, 1] = 1.0
        head[2].weight[1, :2] = torch.tensor([k / 2, -k / 2])
        head[2].weight[0, :2] = torch.tensor([-k / 2, k / 2])

    state = {f"model.{n}": v.contiguous() for n, v in body.state_dict().items()}
    state.update({f"score.{n}": v.contiguous() for n, v in head.state_dict().items()})
    save_file(state, str(out / "model.safetensors"), metadata={"format": "pt"})
    config.save_pretrained(out)
    tokenizer.save_pretrained(out)

    # the design holds in plain transformers (so a failure below is the PRM loader's, not this model's)
    text = tokenizer.apply_chat_template(prm_messages("q", ["a+", "b-", "c"]), tokenize=False)
    ids = tokenizer(text, add_special_tokens=False, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        h = Qwen2Model.from_pretrained(out).eval()(input_ids=ids).last_hidden_state[0]
        p = torch.softmax(head(h), -1)[..., 1][ids[0] == tag]
    assert p.tolist() == pytest.approx([P_GOOD, 1 - P_GOOD, 0.5], abs=1e-5), p
    return out


@pytest.fixture(scope="module")
def known_prm_dir(tmp_path_factory):
    return build_known_prm(tmp_path_factory.mktemp("known-prm"))


def expected(steps):
    return [P_GOOD if s.endswith(GOOD) else 1 - P_GOOD if s.endswith(BAD) else 0.5 for s in steps]


def test_qwen_math_prm_returns_the_known_per_step_scores(known_prm_dir):
    """QwenMathPRM scores each step from the hidden state at its own tag: the designed 0.9 / 0.1 / 0.5 per
    step, in step order, for every solution of a batch (padded, reordered by length, batch_size 2). A PRM
    that returns one constant for every step (the remote code under transformers 5), scores the wrong
    position, mixes up solutions or steps, or drops the trained head fails this."""
    prm = QwenMathPRM(str(known_prm_dir), device="cpu", batch_size=2)
    questions = ["Add 2 and 3.", "Is 9 prime?", "Compute 7*8, showing each step carefully.", "One step."]
    steps = [
        ["2 + 3 = 5, checked +", "so the answer is 5 -", "\\boxed{5} +"],
        ["9 = 3*3 -", "so 9 is not prime"],
        ["7*8 = 56 +", "7*8 = 7*7 + 7 = 56 +", "a slip: 7*7 = 48 -", "therefore \\boxed{56} -", "done"],
        ["a lone step +"],
    ]
    scores = prm.score(questions, steps)
    assert [len(s) for s in scores] == [len(s) for s in steps]
    for got, solution in zip(scores, steps):
        assert got == pytest.approx(expected(solution), abs=1e-4), solution
    flat = [round(p, 3) for s in scores for p in s]
    assert set(flat) == {0.9, 0.1, 0.5}  # not constant: three distinct, step-specific values
    assert prm.truncated_steps == 0


def test_known_scores_are_the_same_alone_and_in_a_batch(known_prm_dir):
    """Right padding in a batch must not move a step's score: each solution scored alone matches."""
    prm = QwenMathPRM(str(known_prm_dir), device="cpu", batch_size=4)
    steps = [["short +"], ["a much longer first step that pads the other -", "then +", "end"]]
    together = prm.score(["q1", "q2"], steps)
    alone = [prm.score([q], [s])[0] for q, s in zip(["q1", "q2"], steps)]
    assert together == [pytest.approx(a, abs=1e-6) for a in alone]
    assert together[1] == pytest.approx([0.1, 0.9, 0.5], abs=1e-4)
