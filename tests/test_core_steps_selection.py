"""Steps, verified prefix and selection (eqs. 1-4) against values computed by hand."""

import math

import numpy as np
import pytest

from scope_bench.core import (
    error_prefix_length,
    prefix_token_count,
    selection_scores,
    split_steps,
    step_char_spans,
    step_token_spans,
    verified_prefix_length,
)


def char_offsets(text, size=3):
    """Offsets of a fake tokenizer that cuts text into fixed-size pieces."""
    return [(i, min(i + size, len(text))) for i in range(0, len(text), size)]


def test_split_steps_drops_empty_segments():
    assert split_steps("a = 1\n\nb = 2\n\n\n\n  \n\nc") == ["a = 1", "b = 2", "c"]
    assert split_steps("") == []
    assert split_steps("\n\n\n\n") == []
    assert split_steps("one step\nwith a single newline") == ["one step\nwith a single newline"]


def test_char_spans_point_at_the_steps():
    text = "first\n\nsecond\n\n\nthird"
    assert [text[s:e] for s, e in step_char_spans(text)] == split_steps(text)


def test_token_spans_tile_the_response():
    text = "ab\n\ncd\n\nef"
    offsets = [(0, 2), (2, 4), (4, 6), (6, 8), (8, 10)]  # "ab" "\n\n" "cd" "\n\n" "ef"
    assert step_token_spans(text, offsets) == [(0, 2), (2, 4), (4, 5)]
    assert prefix_token_count(text, offsets, 0) == 0
    assert prefix_token_count(text, offsets, 2) == 4


def test_token_straddling_a_boundary_goes_to_the_next_step():
    text = "ab\n\ncd"
    offsets = [(0, 2), (2, 5), (5, 6)]  # the token "\n\nc" ends inside step 2
    assert step_token_spans(text, offsets) == [(0, 1), (1, 3)]


def test_token_spans_with_a_real_tokenizer_are_exact():
    tokenizers = pytest.importorskip("tokenizers")
    from transformers import PreTrainedTokenizerFast

    tok = tokenizers.Tokenizer(tokenizers.models.BPE(unk_token=None))
    tok.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = tokenizers.decoders.ByteLevel()
    trainer = tokenizers.trainers.BpeTrainer(vocab_size=300, initial_alphabet=tokenizers.pre_tokenizers.ByteLevel.alphabet())
    corpus = ["3 + 4 = 7\n\n7 * 2 = 14\n\nThe answer is 14."] * 20
    tok.train_from_iterator(corpus, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok)
    text = "3 + 4 = 7\n\n7 * 2 = 15\n\nThe answer is 15."
    enc = fast(text, add_special_tokens=False, return_offsets_mapping=True)
    spans = step_token_spans(text, enc["offset_mapping"])
    assert len(spans) == 3 and spans[-1][1] == len(enc["input_ids"])
    prefix_ids = enc["input_ids"][: spans[0][1]]
    assert fast.decode(prefix_ids).startswith("3 + 4 = 7")
    assert "15" not in fast.decode(prefix_ids)


def test_verified_prefix_length_eq1():
    assert verified_prefix_length([0.9, 0.8, 0.3, 0.9]) == 2
    assert verified_prefix_length([0.5, 0.5], tau=0.5) == 2  # >= tau passes
    assert verified_prefix_length([0.2, 0.9]) == 0
    assert verified_prefix_length([]) == 0
    assert verified_prefix_length([0.7, 0.6], tau=0.65) == 1


def test_failed_rollout_whose_steps_all_pass_loses_its_last_step():
    assert error_prefix_length([0.9, 0.9, 0.9]) == 2
    assert error_prefix_length([0.9, 0.1, 0.9]) == 1
    assert error_prefix_length([]) == 0
    assert error_prefix_length([0.99]) == 0


@pytest.mark.parametrize("bad", [[float("nan")], [float("inf")], [1.5], [-0.1]])
def test_bad_scores_raise(bad):
    with pytest.raises(ValueError, match="step score 0"):
        verified_prefix_length(bad)


@pytest.mark.parametrize("tau", [0.0, 1.0, -1, 2])
def test_tau_outside_unit_interval_raises(tau):
    with pytest.raises(ValueError, match="tau"):
        verified_prefix_length([0.9], tau=tau)


def test_selection_scores_by_hand():
    k, K, tk, T = [2, 1, 0], [4, 2, 3], [30, 10, 0], [60, 20, 40]
    mu_K, var_K = 3.0, 2 / 3  # population statistics of K
    mu_T, var_T = 40.0, 800 / 3
    expected = [
        math.exp(-((Ki - mu_K) ** 2) / (2 * var_K)) * math.exp(-((Ti - mu_T) ** 2) / (2 * var_T)) * (ki / Ki + tki / Ti)
        for ki, Ki, tki, Ti in zip(k, K, tk, T)
    ]
    np.testing.assert_allclose(selection_scores(k, K, tk, T), expected, rtol=1e-12)


def test_selection_scores_with_given_stats_and_zero_variance():
    scores = selection_scores([1, 2], [4, 4], [10, 10], [40, 40], step_stats=(4.0, 0.0), token_stats=(40.0, 0.0))
    np.testing.assert_allclose(scores, [0.25 + 0.25, 0.5 + 0.25])
    given = selection_scores([1], [4], [10], [40], step_stats=(2.0, 1.0), token_stats=(40.0, 4.0))
    np.testing.assert_allclose(given, [math.exp(-2.0) * 0.5])


def test_selection_prefers_typical_lengths_over_outliers():
    # the same verified share, but the second rollout is far longer than the batch
    scores = selection_scores([2, 20], [4, 40], [20, 200], [40, 400], step_stats=(5.0, 4.0), token_stats=(50.0, 100.0))
    assert scores[0] > scores[1]


def test_selection_empty_rollout_scores_zero_and_bad_input_raises():
    np.testing.assert_allclose(selection_scores([0], [0], [0], [0]), [0.0])
    assert selection_scores([], [], [], []).shape == (0,)
    with pytest.raises(ValueError, match="equal lengths"):
        selection_scores([1], [2, 3], [1], [2])
    with pytest.raises(ValueError, match="prefix length"):
        selection_scores([3], [2], [1], [2])
