"""lm-eval interop that runs (issue 12, item 6): the tasks exported over the local copies, run by
lm-eval's own evaluator (`simple_evaluate`, its HF model, greedy), give the same responses, per-problem
grades and accuracies as `scope-bench eval` on the same model and problems.

The model answers every prompt with the same text, "The answer is C. \\boxed{9}", by construction
(a bigram table, below), so that the grades are not all zero: on the first four problems that is
right for MATH-500's fourth (gold 9) and ARC-Challenge's first and third (gold C), wrong elsewhere.
"""

import importlib.util
import json

import pytest

from scope_bench.eval import evaluate, export_lm_eval
from scope_bench.paths import SHARED_DATA_DIR

BENCH = SHARED_DATA_DIR / "benchmarks"
ANSWER = "The answer is C. \\boxed{9}"
LIMIT = 4
pytestmark = [pytest.mark.skipif(importlib.util.find_spec("lm_eval") is None, reason="lm-eval is not installed"),
              pytest.mark.skipif(not BENCH.exists(), reason=f"shared benchmark data not at {BENCH}")]


def build_answering_model(path, answer: str):
    """A Qwen2 checkpoint whose greedy continuation of any prompt is `answer`, then end of turn.

    Embeddings are one-hot and the layers add nothing (zero output projections), so the logits are
    a function of the current token only: a bigram table that chains the answer's tokens, sends any
    other token to the answer's first and the answer's last to <|im_end|>. Its tokens must differ.
    """
    import torch
    from _tiny_model import build_tiny_model
    from transformers import AutoTokenizer, Qwen2Config, Qwen2ForCausalLM

    build_tiny_model(path)  # for its tokenizer and chat template; the weights are replaced below
    tok = AutoTokenizer.from_pretrained(path)
    chain = tok(answer, add_special_tokens=False)["input_ids"]
    assert len(set(chain)) == len(chain), f"the answer's tokens repeat: {tok.convert_ids_to_tokens(chain)}"
    vocab, end = len(tok), tok.convert_tokens_to_ids("<|im_end|>")
    hidden = -(-vocab // 8) * 8  # 4 heads of an even size (rotary embeddings)
    config = Qwen2Config(vocab_size=vocab, hidden_size=hidden, intermediate_size=8, num_hidden_layers=1,
                         num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=2048,
                         tie_word_embeddings=False, eos_token_id=end, pad_token_id=tok.pad_token_id)
    model = Qwen2ForCausalLM(config)
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
        model.model.norm.weight.fill_(1.0)
        model.model.embed_tokens.weight[:, :vocab] = torch.eye(vocab)
        table = model.lm_head.weight  # (next token, current token)
        table[chain[0], :vocab] = 1.0
        table[chain[0], chain] = 0.0
        for cur, nxt in zip(chain, chain[1:] + [end]):
            table[nxt, cur] = 1.0
    model.generation_config.eos_token_id = [end, tok.pad_token_id]
    model.save_pretrained(path)
    return path


def test_lm_eval_gives_the_same_grades_as_scope_bench(tmp_path):
    import lm_eval
    from lm_eval.tasks import TaskManager

    model = build_answering_model(tmp_path / "model", ANSWER)
    export_lm_eval(tmp_path / "tasks", "math500,arc_c", data_dir=BENCH)
    theirs = lm_eval.simple_evaluate(
        model="hf", model_args=f"pretrained={model},dtype=float32,device=cpu", batch_size=1,
        tasks=["scope_math500", "scope_arc_c"], task_manager=TaskManager(include_path=str(tmp_path / "tasks")),
        limit=LIMIT, gen_kwargs={"do_sample": False, "temperature": 0.0, "max_gen_toks": 32},
        apply_chat_template=True, system_instruction="You are a helpful assistant.", log_samples=True)
    ours = evaluate(str(model), "math500,arc_c", backend="hf", out_dir=tmp_path / "eval", data_dir=BENCH,
                    limit=LIMIT, temperature=0.0, max_tokens=32, backend_kwargs={"batch_size": 1, "device": "cpu"},
                    progress=False)
    records = [json.loads(line) for line in (tmp_path / "eval/results.jsonl").read_text().splitlines()]
    for task, expected in (("math500", [0, 0, 0, 1]), ("arc_c", [1, 0, 1, 0])):
        samples = sorted(theirs["samples"][f"scope_{task}"], key=lambda s: s["doc_id"])
        their_rows = [(s["doc"]["id"], s["filtered_resps"][0][0], int(s["acc"])) for s in samples]
        our_rows = [(r["problem_id"], r["response"], r["correct"]) for r in records if r["task"] == task]
        assert their_rows == our_rows
        assert [c for _, _, c in our_rows] == expected and {t for _, t, _ in our_rows} == {ANSWER}
        accuracy = theirs["results"][f"scope_{task}"]["acc,all_repeats"]
        assert accuracy * 100 == pytest.approx(ours["tasks"][task]["score"]) == 100 * sum(expected) / LIMIT
