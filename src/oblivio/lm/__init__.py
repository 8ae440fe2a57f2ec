"""Language models: make a causal LM forget facts about fictitious authors, TOFU-style.

``data`` generates the authors and their question-answer pairs (seeded, no download) and trains a
tokenizer on them; ``models`` builds a tiny GPT-2 / Llama from a ``transformers`` config (or loads a local
Hugging Face folder) and saves checkpoints as safetensors + sidecar; ``training`` fits it; ``methods`` holds
the unlearning methods behind their own registry; ``metrics`` scores them as TOFU and MUSE do; ``bench``
runs the grid. Needs the ``lm`` extra (``transformers``, ``tokenizers``); nothing outside this package
imports it.
"""
from __future__ import annotations

import os
from pathlib import Path


def is_lm_sidecar(meta: dict) -> bool:
    """True when a checkpoint's sidecar describes an oblivio language model (its ``lm`` section)."""
    return isinstance((meta.get("extra") or {}).get("lm"), dict)


def is_lm_checkpoint(path: str | os.PathLike) -> bool:
    """True when ``path`` is an oblivio language-model checkpoint (read from its sidecar; imports no transformers)."""
    from ..checkpoint import read_sidecar
    from ..errors import OblivioError

    if not Path(path).is_file():
        return False
    try:
        return is_lm_sidecar(read_sidecar(path))
    except OblivioError:
        return False


def require_lm() -> None:
    """Raise a one-line OblivioError when the ``lm`` extra is not installed."""
    from ..errors import OblivioError

    try:
        import tokenizers  # noqa: F401
        import transformers  # noqa: F401
    except ImportError as e:
        raise OblivioError(f"language models need the 'lm' extra: pip install 'oblivio[lm]' ({e})") from None
