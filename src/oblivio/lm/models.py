"""Causal language models: a small GPT-2 or Llama built from a ``transformers`` config (untrained), any causal
LM in a local Hugging Face folder, and checkpoints as safetensors + JSON sidecar.

Checkpoints reuse ``oblivio.checkpoint`` (atomic commit, lock, SHA-256 check): the sidecar's ``input_shape``
is ``[n_positions]``, ``num_classes`` the vocabulary size, and ``extra["lm"]`` the model config, the corpus spec
and the splits; the tokenizer is committed with the pair as ``<stem>.tokenizer.json``. Nothing is downloaded:
a Hugging Face folder is read with ``local_files_only``.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from ..errors import OblivioError
from .data import LMTokenizer

# sizes: "test" memorises a few authors in seconds (tests), "cpu" the bench's corpus in under a minute on two
# cores, "gpu" a larger model for a GPU
SIZES: dict[str, dict[str, int]] = {
    "test": {"n_layer": 1, "n_embd": 48, "n_head": 2},
    "cpu": {"n_layer": 2, "n_embd": 64, "n_head": 4},
    "gpu": {"n_layer": 8, "n_embd": 512, "n_head": 8},
}
ARCHS = ("gpt2", "llama")
N_POSITIONS = 96


def build_lm(arch: str = "gpt2", size: str = "cpu", vocab_size: int = 512, n_positions: int = N_POSITIONS,
             seed: int = 0, config: dict | None = None, eos_id: int = 1, pad_id: int = 0):
    """An untrained causal LM of ``arch`` and ``size`` (or the full ``config`` dict of a saved one), seeded."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

    if arch not in ARCHS:
        raise OblivioError(f"unknown language-model architecture {arch!r}; choose from {', '.join(ARCHS)}")
    if config is None:
        if size not in SIZES:
            raise OblivioError(f"unknown model size {size!r}; choose from {', '.join(SIZES)}")
        s = SIZES[size]
        if arch == "gpt2":
            config = dict(vocab_size=vocab_size, n_positions=n_positions, n_embd=s["n_embd"], n_layer=s["n_layer"],
                          n_head=s["n_head"], resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=eos_id,
                          eos_token_id=eos_id, pad_token_id=pad_id)
        else:
            config = dict(vocab_size=vocab_size, max_position_embeddings=n_positions, hidden_size=s["n_embd"],
                          intermediate_size=4 * s["n_embd"], num_hidden_layers=s["n_layer"],
                          num_attention_heads=s["n_head"], num_key_value_heads=s["n_head"], bos_token_id=eos_id,
                          eos_token_id=eos_id, pad_token_id=pad_id)
    torch.manual_seed(seed)
    cfg = (GPT2Config if arch == "gpt2" else LlamaConfig)(**config)
    model = (GPT2LMHeadModel if arch == "gpt2" else LlamaForCausalLM)(cfg)
    model.eval()
    return model


def model_config(model) -> dict:
    """The config dict ``build_lm(config=...)`` rebuilds ``model`` from (architecture-specific keys only)."""
    return {k: v for k, v in model.config.to_diff_dict().items()
            if k not in ("architectures", "transformers_version", "model_type", "dtype", "torch_dtype")}


def arch_of(model) -> str:
    kind = getattr(model.config, "model_type", "")
    return kind if kind in ARCHS else kind or "unknown"


def n_positions(model) -> int:
    c = model.config
    return int(getattr(c, "n_positions", None) or getattr(c, "max_position_embeddings", None) or N_POSITIONS)


def tokenizer_companion(path: str | os.PathLike) -> Path:
    path = Path(path)
    return path.parent / f"{path.stem}.tokenizer.json"


def save_lm(path: str | os.PathLike, model, tokenizer: LMTokenizer, *, seed: int | None = None,
            extra: dict[str, Any] | None = None) -> Path:
    """Write ``model`` (safetensors + sidecar) and ``tokenizer`` (``<stem>.tokenizer.json``) as one unit."""
    from ..checkpoint import check_checkpoint_path, save_checkpoint

    path = check_checkpoint_path(path, "--out")
    text = tokenizer.to_json()
    lm = {"arch": arch_of(model), "config": model_config(model), **(extra or {})}
    return save_checkpoint(path, model, arch=None, input_shape=(n_positions(model),),
                           num_classes=int(model.config.vocab_size), dataset="fictitious-authors", seed=seed,
                           extra={"lm": lm}, companions={tokenizer_companion(path): lambda p: Path(p).write_text(text)})


def load_lm(path: str | os.PathLike):
    """(model, tokenizer, lm-sidecar dict) from an oblivio LM checkpoint (``.safetensors``) or a local Hugging
    Face folder holding a causal LM and its tokenizer; anything else is a one-line error."""
    from .. import lm

    lm.require_lm()
    path = Path(path)
    if path.is_dir():
        return _load_hf_folder(path)
    from ..checkpoint import load_checkpoint, read_sidecar

    meta = read_sidecar(path)
    info = (meta.get("extra") or {}).get("lm")
    if not isinstance(info, dict) or info.get("arch") not in ARCHS or not isinstance(info.get("config"), dict):
        raise OblivioError(f"{path} is not an oblivio language-model checkpoint (its sidecar has no 'lm' section)")
    tok_path = tokenizer_companion(path)
    if not tok_path.is_file():
        raise OblivioError(f"language-model checkpoint {path} has no tokenizer {tok_path.name}")
    tokenizer = LMTokenizer.from_json(tok_path.read_text())
    try:
        model = build_lm(info["arch"], config=info["config"])
    except (TypeError, ValueError) as e:
        raise OblivioError(f"sidecar of {path} describes a model that cannot be built: {e}") from None
    model, meta = load_checkpoint(path, model)
    return model, tokenizer, info | {"seed": meta.get("seed"), "model_hash": meta.get("model_hash")}


def _load_hf_folder(path: Path):
    """A causal LM from a local Hugging Face folder (``config.json`` + weights + tokenizer), never downloading."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
    from transformers import MODEL_FOR_CAUSAL_LM_MAPPING

    cfg_file = path / "config.json"
    if not cfg_file.is_file():
        raise OblivioError(f"{path} is not a causal language model: no config.json (a Hugging Face model folder)")
    try:
        config = AutoConfig.from_pretrained(path, local_files_only=True)
    except (OSError, ValueError, json.JSONDecodeError) as e:
        raise OblivioError(f"{path} is not a causal language model: {str(e).splitlines()[0]}") from None
    if type(config) not in MODEL_FOR_CAUSAL_LM_MAPPING:
        raise OblivioError(f"{path} is not a causal language model ({config.model_type} has no causal-LM head)")
    try:
        model = AutoModelForCausalLM.from_pretrained(path, local_files_only=True)
        hf_tok = AutoTokenizer.from_pretrained(path, local_files_only=True)
    except (OSError, ValueError) as e:
        raise OblivioError(f"cannot load the causal language model in {path}: {str(e).splitlines()[0]}") from None
    model.eval()
    return model, LMTokenizer(None, hf=hf_tok), {"arch": arch_of(model), "config": {}, "hf_folder": str(path)}
