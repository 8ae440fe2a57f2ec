"""Language models: make a causal LM forget facts about fictitious authors, TOFU-style.

``data`` generates the authors and their question-answer pairs (seeded, no download) and trains a
tokenizer on them; ``models`` builds a tiny GPT-2 / Llama from a ``transformers`` config (or loads a local
Hugging Face folder) and saves checkpoints as safetensors + sidecar; ``training`` fits it; ``methods`` holds
the unlearning methods behind their own registry; ``metrics`` scores them as TOFU and MUSE do; ``bench``
runs the grid. Needs the ``lm`` extra (``transformers``, ``tokenizers``); nothing outside this package
imports it.
"""
from __future__ import annotations


def require_lm() -> None:
    """Raise a one-line OblivioError when the ``lm`` extra is not installed."""
    from ..errors import OblivioError

    try:
        import tokenizers  # noqa: F401
        import transformers  # noqa: F401
    except ImportError as e:
        raise OblivioError(f"language models need the 'lm' extra: pip install 'oblivio[lm]' ({e})") from None
