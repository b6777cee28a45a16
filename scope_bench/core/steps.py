"""Splitting a solution into reasoning steps, with exact character and token spans.

Steps are separated by a blank line (`"\\n\\n"`), as Qwen2.5-Math-PRM and the paper segment them.
Token spans come from the tokenizer's offsets, never from re-tokenising pieces, so the token count of
a verified prefix is exactly the number of tokens the policy produced for it.
"""

from __future__ import annotations

import re
from bisect import bisect_right
from collections.abc import Sequence
from itertools import pairwise

STEP_SEPARATOR = "\n\n"
_SEPARATOR_RUN = re.compile(r"\n\n+")


def step_char_spans(text: str) -> list[tuple[int, int]]:
    """`(start, end)` character span of each non-empty step; separators belong to no step."""
    spans, start = [], 0
    for sep in _SEPARATOR_RUN.finditer(text):
        if text[start : sep.start()].strip():
            spans.append((start, sep.start()))
        start = sep.end()
    if text[start:].strip():
        spans.append((start, len(text)))
    return spans


def split_steps(text: str) -> list[str]:
    """The steps of `text`, split on `"\\n\\n"`, empty (whitespace-only) segments dropped."""
    return [text[s:e] for s, e in step_char_spans(text)]


def step_token_spans(text: str, offsets: Sequence[tuple[int, int]]) -> list[tuple[int, int]]:
    """`[tok_start, tok_end)` token span of each step, from per-token character offsets.

    A step owns the tokens that end inside it or in the separator after it, so spans tile the
    response: the prefix of `k` steps is exactly `token_ids[:spans[k-1][1]]` and the tokens after it
    start the next step. `offsets` is what a fast tokenizer returns with `return_offsets_mapping`.
    """
    char_spans = step_char_spans(text)
    if not char_spans:
        return []
    ends = [end for _, end in offsets]
    if any(b < a for a, b in pairwise(ends)):
        raise ValueError("token offsets must be non-decreasing")
    token_spans, first = [], 0
    for next_start, _ in char_spans[1:]:
        last = bisect_right(ends, next_start)  # tokens ending at or before the next step's start
        token_spans.append((first, last))
        first = last
    token_spans.append((first, len(ends)))  # the last step keeps every remaining token
    return token_spans


def prefix_token_count(text: str, offsets: Sequence[tuple[int, int]], n_steps: int) -> int:
    """How many response tokens make up the first `n_steps` steps (0 for an empty prefix)."""
    if n_steps <= 0:
        return 0
    spans = step_token_spans(text, offsets)
    if n_steps > len(spans):
        raise ValueError(f"asked for {n_steps} steps of a response that has {len(spans)}")
    return spans[n_steps - 1][1]


def encode_with_offsets(tokenizer, text: str) -> tuple[list[int], list[tuple[int, int]]]:
    """Token ids of `text` and each token's character span, under a fast Hugging Face tokenizer."""
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    return list(enc["input_ids"]), [tuple(o) for o in enc["offset_mapping"]]


def decode_with_offsets(tokenizer, ids: list[int], *, skip_special_tokens: bool = True
                        ) -> tuple[str, list[tuple[int, int]]]:
    """Text of sampled `ids` and each token's character span in it (the reverse of
    `encode_with_offsets`, for samples whose tokenization need not be the canonical one).

    Tokens decoded one by one give the spans when they add up to the full decode. A character split
    over tokens (multi-byte UTF-8 in byte-level BPE) breaks that; then each token's end is where the
    text decoded so far stops (read incrementally over a few tokens of context, as vLLM's detokenizer
    does; exact decodes of every prefix where that does not rebuild the text), and a token holding
    part of a character spans that whole character, as the tokenizer's own offsets do."""
    options = {"skip_special_tokens": skip_special_tokens, "clean_up_tokenization_spaces": False}
    text = tokenizer.decode(ids, **options)
    pieces = tokenizer.batch_decode([[i] for i in ids], **options)
    if "".join(pieces) == text:
        offsets, pos = [], 0
        for piece in pieces:
            offsets.append((pos, pos + len(piece)))
            pos += len(piece)
        return text, offsets
    ends = _ends_incrementally(tokenizer, ids, text, options) or _ends_by_prefixes(tokenizer, ids, text, options)
    offsets, start = [], 0
    for t, (end, partial) in enumerate(ends):
        if end == start and partial:  # part of the next character it helps complete
            later = next((e for e, _ in ends[t + 1:] if e > start), start)
            offsets.append((start, later))
        else:
            offsets.append((start, end))
            start = end
    return text, offsets


CONTEXT_TOKENS = 6  # tokens decoded before the new ones, so a window starts as the full decode does


def _ends_incrementally(tokenizer, ids, text, options) -> list[tuple[int, bool]] | None:
    """What `_ends_by_prefixes` gives, decoding only the tokens since the last complete character
    plus a few of context (linear time); None when the windows do not rebuild `text`."""
    ends, end, pos, read, context = [], 0, 0, 0, ""
    for t in range(len(ids)):
        window = tokenizer.decode(ids[max(0, read - CONTEXT_TOKENS): t + 1], **options)
        if not window.startswith(context):
            return None
        new = window[len(context):]
        end = max(end, pos + _agreement(new, text[pos: pos + len(new)]))
        ends.append((end, pos + len(new) > end))
        if not new.endswith("\ufffd"):  # the decode so far ends on a whole character
            if end != pos + len(new):
                return None
            pos, read = end, t + 1
            context = tokenizer.decode(ids[max(0, read - CONTEXT_TOKENS): read], **options)
    return ends if end == len(text) else None  # every character reached (a row may end inside one)


def _ends_by_prefixes(tokenizer, ids, text, options) -> list[tuple[int, bool]]:
    """The same from the decode of every prefix: exact for any tokenizer, quadratic."""
    ends, end = [], 0
    for t in range(len(ids)):
        prefix = tokenizer.decode(ids[: t + 1], **options)
        end = max(end, _agreement(prefix, text))
        ends.append((end, len(prefix) > end))  # ends in a character it does not complete
    return ends


def _agreement(prefix: str, text: str) -> int:
    """Length of the longest common start of `prefix` and `text` (a partial character decodes to
    a replacement character, which ends the agreement)."""
    n = 0
    for a, b in zip(prefix, text):
        if a != b:
            break
        n += 1
    return n
