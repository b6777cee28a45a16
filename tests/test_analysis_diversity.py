"""Diversity metrics against the reference libraries (sacrebleu, rouge-score) on real and edge-case texts."""

import json
import math
import random
from collections import Counter

import numpy as np
import pytest

from scope_bench.analysis.diversity import (
    bleu_tokens,
    distinct_n,
    diversity_metrics,
    pairwise_lcs,
    rouge_tokens,
    self_bleu_scores,
    self_rouge_l,
    summarize,
)
from scope_bench.paths import SHARED_DATA_DIR

sacrebleu = pytest.importorskip("sacrebleu")
rouge_scorer = pytest.importorskip("rouge_score.rouge_scorer")

MATH500 = SHARED_DATA_DIR / "benchmarks" / "qwen" / "math500.jsonl"
TOL = 1e-9


@pytest.fixture(scope="module")
def solutions():
    if not MATH500.exists():
        pytest.skip(f"real texts absent: {MATH500} (shared data not checked out)")
    return [json.loads(line)["solution"] for line in MATH500.open()]


def ref_self_bleu(samples):
    """1 - mean sentence BLEU of each sample against the k-1 others (0-1 scale)."""
    k = len(samples)
    return 1 - sum(sacrebleu.sentence_bleu(samples[i], samples[:i] + samples[i + 1:]).score
                   for i in range(k)) / k / 100


def ref_self_rouge(samples):
    """1 - mean ROUGE-L F1 over ordered pairs, rouge-score's scorer."""
    scorer = rouge_scorer.RougeScorer(["rougeL"])
    f = [scorer.score(samples[j], samples[i])["rougeL"].fmeasure
         for i in range(len(samples)) for j in range(len(samples)) if i != j]
    return 1 - sum(f) / len(f)


def ref_distinct(samples, n):
    grams = [tuple(t[i:i + n]) for s in samples for t in [s.split()] for i in range(len(t) - n + 1)]
    return len(set(grams)) / len(grams) if grams else 0.0


def check_against_reference(samples):
    got = diversity_metrics(samples)
    assert got["1-self-bleu"] == pytest.approx(ref_self_bleu(samples), abs=TOL)
    assert got["1-self-rouge"] == pytest.approx(ref_self_rouge(samples), abs=TOL)
    for n in (1, 2, 4):
        assert got[f"distinct-{n}"] == pytest.approx(ref_distinct(samples, n), abs=TOL)
    expected_div = (got["distinct-1"] + got["distinct-4"] + got["1-self-bleu"] + got["1-self-rouge"]) / 4
    assert got["div-score"] == pytest.approx(expected_div, abs=1e-12)
    return got


def test_real_math500_groups_match_reference_libraries(solutions):
    rng = random.Random(0)
    for trial in range(12):
        k = rng.choice([2, 3, 5, 8])
        samples = rng.sample(solutions, k)
        if trial % 3 == 0:  # duplicates within a group, as policy samples often are
            samples[-1] = samples[0]
        check_against_reference(samples)


def test_per_sample_bleu_equals_sentence_bleu(solutions):
    samples = random.Random(1).sample(solutions, 6)
    ours = self_bleu_scores(samples)
    ref = [sacrebleu.sentence_bleu(samples[i], samples[:i] + samples[i + 1:]).score for i in range(6)]
    assert np.max(np.abs(np.array(ours) - np.array(ref))) <= TOL


def test_tokenizers_match_the_libraries(solutions):
    from rouge_score import tokenizers
    from sacrebleu.metrics.bleu import BLEU

    rouge_tok = tokenizers.DefaultTokenizer(use_stemmer=False)
    bleu = BLEU(tokenize="13a")
    for text in solutions[:50] + [
        "Ünïcode ÇASE, İstanbul — 3.14 and -5! “quoted” x²≤y…", "  trailing  \n",
        "line-\nbreak &amp; &quot;q&quot; &lt;tag&gt; <skipped> 3.5, x. 1-2 a,b .5 ,6 {x}_{y}^{z} \\frac{1}{2}",
    ]:
        assert rouge_tokens(text) == rouge_tok.tokenize(text)
        assert bleu_tokens(text) == bleu._preprocess_segment(text).split()


def test_single_sample_has_no_pairs():
    got = diversity_metrics(["x = 1 so y = 2"])
    assert math.isnan(got["1-self-bleu"]) and math.isnan(got["1-self-rouge"]) and math.isnan(got["div-score"])
    assert got["distinct-1"] == pytest.approx(6 / 7)  # 7 words, "=" twice


def test_identical_samples_are_not_diverse():
    text = "We compute $2 + 3 = 5$.\n\nHence the answer is $\\boxed{5}$."
    got = check_against_reference([text] * 4)
    assert got["1-self-bleu"] == pytest.approx(0.0, abs=1e-9)
    assert got["1-self-rouge"] == 0.0
    assert got["distinct-1"] == pytest.approx(ref_distinct([text], 1) / 4)


@pytest.mark.parametrize("samples", [
    ["", ""],
    ["", "", ""],
    ["", "the answer is 5"],
    ["a", "a b", "a b c"],               # shorter than 4 tokens: effective order
    ["x", "y"],                          # no match at all
    ["!!! ???", "...", "the cat sat"],   # no ROUGE tokens in some samples
    ["Le Chat est ICI.", "le chat est ici", "LE CHAT"],
])
def test_edge_cases_match_reference(samples):
    check_against_reference(samples)


def test_empty_samples_values():
    got = diversity_metrics(["", ""])
    assert got["distinct-1"] == 0.0 and got["1-self-bleu"] == 1.0 and got["1-self-rouge"] == 1.0


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="at least one"):
        diversity_metrics([])
    with pytest.raises(TypeError, match="sample 1"):
        diversity_metrics(["a", None])


def lcs_dp(a, b):
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b):
            cur.append(prev[j] + 1 if x == y else max(prev[j + 1], cur[j]))
        prev = cur
    return prev[-1]


def test_bit_parallel_lcs_equals_dynamic_programming():
    rng = random.Random(3)
    # lengths across machine-word and digit boundaries, small alphabets for long common runs
    seqs = [[rng.randint(0, rng.choice([2, 5, 40])) for _ in range(rng.choice([0, 1, 29, 30, 64, 65, 150]))]
            for _ in range(9)]
    got = pairwise_lcs(seqs)
    for i in range(len(seqs)):
        for j in range(len(seqs)):
            assert got[i, j] == (len(seqs[i]) if i == j else lcs_dp(seqs[i], seqs[j])), (i, j)


def test_rouge_f1_is_symmetric_so_unordered_pairs_suffice(solutions):
    scorer = rouge_scorer.RougeScorer(["rougeL"])
    a, b = solutions[10], solutions[11]
    assert scorer.score(a, b)["rougeL"].fmeasure == scorer.score(b, a)["rougeL"].fmeasure
    assert 1 - self_rouge_l([a, b]) == pytest.approx(ref_self_rouge([a, b]), abs=TOL)


def test_distinct_pools_samples_without_crossing_them():
    # "b c" only appears across the boundary of the two samples, so it must not count
    got = distinct_n(["a b", "c d"], orders=(1, 2))
    assert got == {1: 1.0, 2: 1.0}
    grams = Counter([("a", "b"), ("a", "b")])
    assert distinct_n(["a b", "a b"], orders=(2,))[2] == len(grams) / 2


def test_summary_is_median_and_percentiles_skipping_nan():
    vals = [0.1, 0.5, float("nan"), 0.3, 0.9]
    s = summarize(vals)
    clean = [0.1, 0.5, 0.3, 0.9]
    assert s["p50"] == pytest.approx(np.median(clean))
    assert s["p10"] == pytest.approx(np.percentile(clean, 10)) and s["p90"] == pytest.approx(np.percentile(clean, 90))
    assert s["n"] == 4
    assert math.isnan(summarize([float("nan")])["p50"])
