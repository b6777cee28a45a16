"""Diversity of the k samples drawn for one prompt (the paper's Table 4), fast and exact.

Metrics for one prompt's samples (all on a 0-1 scale, higher = more diverse):

- ``distinct-n`` (n = 1, 2, 4): unique n-grams / all n-grams, pooled over the k samples. Tokens are
  whitespace-separated words (``str.split()``, case kept); n-grams never cross two samples. With no
  n-gram at all (every sample shorter than n words) the value is 0.0: an empty set is not diverse.
- ``1-self-bleu``: 1 - mean over samples of sacrebleu's ``sentence_bleu(sample_i, others) / 100``
  (13a tokenizer, ``exp`` smoothing, effective order: sacrebleu's sentence-level defaults).
- ``1-self-rouge``: 1 - mean ROUGE-L F1 over pairs of samples, with rouge-score's definition
  (``RougeScorer(['rougeL'])``: lowercase, alphanumeric tokens, no stemming). F1 is symmetric
  (``2pr/(p+r)`` with p and r swapped is the same float), so the k(k-1)/2 unordered pairs give the mean
  over ordered pairs.
- ``div-score``: mean of distinct-1, distinct-4, 1-self-bleu and 1-self-rouge (consistent with the
  paper's Table 4: (0.14 + 0.62 + 0.28 + 0.52) / 4 = 0.39).

With k = 1 there is no pair, so 1-self-bleu, 1-self-rouge and div-score are NaN (undefined), and the
per-benchmark summaries skip NaNs.

Speed: the straightforward way (``sentence_bleu`` k times, ``RougeScorer.score`` k(k-1) times with its
pure-Python O(mn) LCS table) takes minutes to an hour for 30 prompts x 32 samples. Here BLEU statistics
come from integer n-gram ids (numpy): the clipped count of a hypothesis n-gram against "the other k-1
samples" is ``min(c_i, max_{j != i} c_j)``, and that max is the top count over all samples, or the
second one when sample i holds the top. The score itself is sacrebleu's ``BLEU.compute_bleu`` on those
statistics, so smoothing, brevity penalty and effective order are sacrebleu's own. ROUGE-L uses the
bit-parallel LCS of Hyyro (2004) on Python integers, with all shorter-index samples packed in one
integer (one guard bit between them absorbs the carry), so one pass over sample i gives its LCS with
every earlier sample. Both equal the reference libraries (tests check to 1e-9; in practice 0 or 1 ulp).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from functools import lru_cache

import numpy as np

DISTINCT_ORDERS = (1, 2, 4)
METRICS = ("distinct-1", "distinct-2", "distinct-4", "1-self-bleu", "1-self-rouge", "div-score")
BLEU_MAX_ORDER = 4

_ROUGE_NON_ALNUM = re.compile(r"[^a-z0-9]+")
_ROUGE_SPACES = re.compile(r"\s+")
_ROUGE_VALID = re.compile(r"^[a-z0-9]+$")


# --- tokenizers -------------------------------------------------------------------------------


def bleu_tokens(text: str) -> list[str]:
    """Tokens exactly as sacrebleu's sentence_bleu sees them (13a tokenizer after ``rstrip``)."""
    return _tokenize_13a(text.rstrip()).split()


def rouge_tokens(text: str) -> list[str]:
    """Tokens exactly as rouge-score's default tokenizer makes them (no stemmer)."""
    words = _ROUGE_SPACES.split(_ROUGE_NON_ALNUM.sub(" ", text.lower()))
    return [w for w in words if _ROUGE_VALID.match(w)]


@lru_cache(maxsize=1)
def _fast_13a():
    """sacrebleu's 13a tokenizer with its first rule (pad each of a set of single ASCII symbols with
    spaces, most of the matches in math text) done by ``str.translate``: the same output (a one-symbol
    class replaced match by match is a character map) at half the cost.
    The symbol set and the other rules are read from sacrebleu's own tokenizer; if its internals ever
    differ from that shape, sacrebleu's tokenizer is used as is."""
    from sacrebleu.tokenizers.tokenizer_13a import Tokenizer13a

    slow = Tokenizer13a()
    try:
        rules = slow._post_tokenizer._re
        first, repl = rules[0]
        if repl != r" \1 " or not (first.pattern.startswith("([") and first.pattern.endswith("])")):
            return slow
        table = str.maketrans({chr(c): f" {chr(c)} " for c in range(128) if first.fullmatch(chr(c))})
    except (AttributeError, IndexError, TypeError, ValueError):
        return slow

    def tokenize(line: str) -> str:
        line = line.replace("<skipped>", "").replace("-\n", "").replace("\n", " ")
        if "&" in line:
            line = line.replace("&quot;", '"').replace("&amp;", "&").replace("&lt;", "<").replace("&gt;", ">")
        line = f" {line} ".translate(table)
        for pattern, repl in rules[1:]:
            line = pattern.sub(repl, line)
        return " ".join(line.split())

    return tokenize


def _tokenize_13a(line: str) -> str:
    return _fast_13a()(line)


# --- n-gram ids -------------------------------------------------------------------------------


def _ngram_ids(token_lists: Sequence[Sequence[str]], max_order: int):
    """Integer ids of every n-gram (n <= max_order) of every sample, equal ids iff equal n-grams.

    Returns ``(sample, {n: ids})`` where ``sample[p]`` is the sample of the n-gram starting at flat
    position p and ``ids[n]`` is -1 where no n-gram of order n starts at p (too close to the end).
    """
    vocab: dict[str, int] = {}
    flat = [vocab.setdefault(t, len(vocab)) for toks in token_lists for t in toks]
    lens = np.array([len(t) for t in token_lists], dtype=np.int64)
    tok = np.array(flat, dtype=np.int64)
    sample = np.repeat(np.arange(len(token_lists)), lens)
    remaining = np.concatenate([np.arange(n, 0, -1) for n in lens]) if len(tok) else tok  # tokens to end
    ids = {1: tok.copy()}
    base = max(len(vocab), 1)
    for n in range(2, max_order + 1):
        prev = ids[n - 1]
        cur = np.full(len(tok), -1, dtype=np.int64)
        ok = remaining >= n
        if ok.any():
            pos = np.nonzero(ok)[0]
            key = prev[pos] * base + tok[pos + n - 1]  # (n-1)-gram id, next token: unique, no hashing
            _, cur[pos] = np.unique(key, return_inverse=True)
        ids[n] = cur
    for n in range(1, max_order + 1):
        ids[n][remaining < n] = -1
    return sample, ids


# --- distinct-n -------------------------------------------------------------------------------


def distinct_n(samples: Sequence[str], orders: Sequence[int] = DISTINCT_ORDERS) -> dict[int, float]:
    """Unique / total n-grams over whitespace tokens, pooled across samples (0.0 when none)."""
    _, ids = _ngram_ids([s.split() for s in samples], max(orders))
    out = {}
    for n in orders:
        valid = ids[n][ids[n] >= 0]
        out[n] = float(len(np.unique(valid)) / len(valid)) if len(valid) else 0.0
    return out


# --- self-BLEU --------------------------------------------------------------------------------


def self_bleu_scores(samples: Sequence[str]) -> list[float]:
    """sacrebleu ``sentence_bleu(samples[i], samples[:i] + samples[i+1:]).score`` for every i (0-100)."""
    from sacrebleu.metrics.bleu import BLEU

    k = len(samples)
    if k < 2:
        return []
    token_lists = [bleu_tokens(s) for s in samples]
    lens = [len(t) for t in token_lists]
    sample, ids = _ngram_ids(token_lists, BLEU_MAX_ORDER)
    correct = np.zeros((k, BLEU_MAX_ORDER), dtype=np.int64)
    for n in range(1, BLEU_MAX_ORDER + 1):
        ok = ids[n] >= 0
        if not ok.any():
            continue
        # count of each (n-gram, sample) pair
        pair, count = np.unique(ids[n][ok] * k + sample[ok], return_counts=True)
        gram, owner = pair // k, pair % k
        # top and second count of each n-gram over samples (zero when fewer samples hold it)
        order = np.lexsort((-count, gram))
        g_sorted, c_sorted = gram[order], count[order]
        first = np.ones(len(order), dtype=bool)
        first[1:] = g_sorted[1:] != g_sorted[:-1]
        n_grams = int(gram.max()) + 1
        top1 = np.zeros(n_grams, dtype=np.int64)
        top2 = np.zeros(n_grams, dtype=np.int64)
        top1[g_sorted[first]] = c_sorted[first]
        second = np.zeros(len(order), dtype=bool)
        second[1:] = first[:-1] & ~first[1:]
        top2[g_sorted[second]] = c_sorted[second]
        # the references' count (max over merged references) excludes the hypothesis itself
        ref_count = np.where(count == top1[gram], top2[gram], top1[gram])
        matched = np.minimum(count, ref_count)
        correct[:, n - 1] = np.bincount(owner, weights=matched, minlength=k).astype(np.int64)
    scores = []
    for i in range(k):
        totals = [max(lens[i] - n + 1, 0) for n in range(1, BLEU_MAX_ORDER + 1)]
        ref_len = _closest_ref_len(lens[i], lens[:i] + lens[i + 1 :])
        bleu = BLEU.compute_bleu(
            [int(c) for c in correct[i]], totals, sys_len=lens[i], ref_len=ref_len,
            smooth_method="exp", effective_order=True, max_ngram_order=BLEU_MAX_ORDER,
        )
        scores.append(bleu.score)
    return scores


def _closest_ref_len(hyp_len: int, ref_lens: Sequence[int]) -> int:
    """sacrebleu's choice: the reference length closest to the hypothesis, the shorter on ties."""
    return min(ref_lens, key=lambda r: (abs(hyp_len - r), r))


# --- self-ROUGE-L -----------------------------------------------------------------------------


def pairwise_lcs(sequences: Sequence[Sequence]) -> np.ndarray:
    """LCS length of every pair of sequences (symmetric k x k matrix, diagonal = lengths).

    Bit-parallel LCS (Hyyro 2004): for a pattern A with position bitmasks M[c] and V = all ones,
    every symbol c of B does U = V & M[c]; V = (V + U) | (V - U); the LCS is the number of zero bits.
    All sequences j < i are packed in one integer, each followed by a guard bit that catches the
    carry out of its segment and is cleared each step, so one pass over sequence i serves them all.
    """
    k = len(sequences)
    out = np.zeros((k, k), dtype=np.int64)
    offsets, masks, pos = [], {}, 0
    for seq in sequences:
        offsets.append(pos)
        for t, sym in enumerate(seq):
            masks[sym] = masks.get(sym, 0) | (1 << (pos + t))
        pos += len(seq) + 1  # + guard bit
    keep = 0  # bits of all sequences before i, guards excluded
    for i, seq in enumerate(sequences):
        out[i, i] = len(seq)
        if i and keep:
            v = keep
            for sym in seq:
                m = masks.get(sym)
                if m is not None:
                    u = v & m
                    v = ((v + u) | (v - u)) & keep
            for j in range(i):
                m_j = len(sequences[j])
                seg = (v >> offsets[j]) & ((1 << m_j) - 1)
                out[i, j] = out[j, i] = m_j - seg.bit_count()
        keep |= ((1 << len(seq)) - 1) << offsets[i]
    return out


def rouge_l_f1(lcs: int, len_target: int, len_prediction: int) -> float:
    """rouge-score's ROUGE-L F1 from an LCS length (0 when either side has no token)."""
    if not len_target or not len_prediction:
        return 0.0
    precision, recall = lcs / len_prediction, lcs / len_target
    if precision + recall > 0:
        return 2 * precision * recall / (precision + recall)
    return 0.0


def self_rouge_l(samples: Sequence[str]) -> float:
    """Mean ROUGE-L F1 over the unordered pairs of samples (NaN for fewer than two samples)."""
    k = len(samples)
    if k < 2:
        return math.nan
    token_lists = [rouge_tokens(s) for s in samples]
    lcs = pairwise_lcs(token_lists)
    f1 = [
        rouge_l_f1(int(lcs[i, j]), len(token_lists[j]), len(token_lists[i]))
        for i in range(k) for j in range(i + 1, k)
    ]
    return math.fsum(f1) / len(f1)


# --- the public per-prompt metric set ----------------------------------------------------------


def diversity_metrics(samples: Sequence[str]) -> dict[str, float]:
    """Diversity of one prompt's k samples: distinct-1/2/4, 1-self-bleu, 1-self-rouge, div-score."""
    samples = list(samples)
    if not samples:
        raise ValueError("diversity_metrics needs at least one sample")
    for i, s in enumerate(samples):
        if not isinstance(s, str):
            raise TypeError(f"sample {i} is {type(s).__name__}, expected str")
    distinct = distinct_n(samples)
    bleu = self_bleu_scores(samples)
    one_minus_bleu = 1.0 - math.fsum(bleu) / len(bleu) / 100.0 if bleu else math.nan
    one_minus_rouge = 1.0 - self_rouge_l(samples)
    out = {f"distinct-{n}": distinct[n] for n in DISTINCT_ORDERS}
    out["1-self-bleu"] = one_minus_bleu
    out["1-self-rouge"] = one_minus_rouge
    out["div-score"] = (out["distinct-1"] + out["distinct-4"] + one_minus_bleu + one_minus_rouge) / 4
    return out


def summarize(values: Sequence[float]) -> dict[str, float]:
    """Median with p10 and p90 across prompts (numpy's linear interpolation), NaNs skipped."""
    arr = np.asarray([v for v in values if not math.isnan(v)], dtype=float)
    if not len(arr):
        return {"p50": math.nan, "p10": math.nan, "p90": math.nan, "n": 0}
    p10, p50, p90 = np.percentile(arr, [10, 50, 90])
    return {"p50": float(p50), "p10": float(p10), "p90": float(p90), "n": len(arr)}


def diversity_by_prompt(groups: dict, progress: bool = False) -> dict:
    """``{prompt_id: diversity_metrics(samples)}`` for ``{prompt_id: [sample, ...]}``."""
    from tqdm.auto import tqdm

    items = tqdm(groups.items(), desc="diversity", disable=not progress, total=len(groups))
    return {pid: diversity_metrics(samples) for pid, samples in items}


def summarize_diversity(per_prompt: dict) -> dict[str, dict[str, float]]:
    """Per metric, median [p10, p90] across prompts of ``diversity_by_prompt``'s output."""
    return {m: summarize([d[m] for d in per_prompt.values()]) for m in METRICS}
