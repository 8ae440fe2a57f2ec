"""Checkpoints: weights in safetensors plus a JSON sidecar, written atomically, loaded without pickle.

``model.safetensors`` holds the tensors; ``model.json`` beside it holds the architecture,
dataset, seed, split hashes, the weights' SHA-256 and versions.
"""
from __future__ import annotations

import hashlib
import json
import os
import platform
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from .errors import OblivioError
from .io import atomic_path, atomic_write_text
from .models import build_model

FORMAT = "oblivio-checkpoint/1"


def sidecar_path(path: str | os.PathLike) -> Path:
    return Path(path).with_suffix(".json")


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def model_hash(model: nn.Module) -> str:
    """SHA-256 (first 16 hex digits) of a model's state dict, independent of file layout."""
    h = hashlib.sha256()
    for k, v in sorted(model.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def save_checkpoint(
    path: str | os.PathLike,
    model: nn.Module,
    *,
    arch: str | None,
    input_shape: tuple[int, ...],
    num_classes: int,
    dataset: str | None = None,
    seed: int | None = None,
    split: dict | None = None,
    training: dict | None = None,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write ``model`` to ``path`` (.safetensors) and its sidecar (.json), each atomically; return the path.

    ``split`` is the forget split's spec (``Split.spec()``), ``training`` how the original model
    was trained (``pipeline.training_spec``); both let an audit rebuild the exact data.
    """
    from . import __version__

    path = Path(path)
    if path.suffix != ".safetensors":
        raise OblivioError(f"checkpoint path must end in .safetensors, got {path.name}")
    state = {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}
    with atomic_path(path) as tmp:
        save_file(state, str(tmp), metadata={"format": FORMAT})
        digest = _sha256(tmp)
    meta = {
        "format": FORMAT,
        "arch": arch,
        "input_shape": list(input_shape),
        "num_classes": num_classes,
        "dataset": dataset,
        "seed": seed,
        "split": split,
        "training": training,
        "weights_sha256": digest,
        "model_hash": model_hash(model),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "versions": {"oblivio": __version__, "torch": torch.__version__, "python": platform.python_version()},
        "extra": extra or {},
    }
    atomic_write_text(sidecar_path(path), json.dumps(meta, indent=2))
    return path


def read_sidecar(path: str | os.PathLike) -> dict:
    side = sidecar_path(path)
    if not Path(path).is_file():
        raise OblivioError(f"checkpoint not found: {path}")
    if not side.is_file():
        raise OblivioError(f"checkpoint {path} has no sidecar {side.name}; it was not written by oblivio")
    try:
        meta = json.loads(side.read_text())
    except json.JSONDecodeError as e:
        raise OblivioError(f"sidecar {side} is not valid JSON: {e}") from None
    if meta.get("format") != FORMAT:
        raise OblivioError(f"sidecar {side} has unknown format {meta.get('format')!r}")
    return meta


def load_checkpoint(
    path: str | os.PathLike, model: nn.Module | None = None, device: torch.device | str | None = None
) -> tuple[nn.Module, dict]:
    """Load a checkpoint into ``model`` (or a fresh model of the sidecar's architecture); return (model, sidecar).

    Weights are stored device-free; ``device`` (``auto``, ``cpu``, ``cuda``, ``cuda:N``) moves the model
    there after loading (None: the CPU, or where ``model`` is). Refuses weights whose hash, keys or
    shapes do not match the sidecar or the model.
    """
    meta = read_sidecar(path)
    if _sha256(Path(path)) != meta["weights_sha256"]:
        raise OblivioError(f"checkpoint {path} does not match its sidecar: the weights' SHA-256 differs")
    if model is None:
        if not meta.get("arch"):
            raise OblivioError(f"checkpoint {path} holds a custom architecture; pass the model to load it into")
        model = build_model(meta["arch"], meta["input_shape"], meta["num_classes"])
    try:
        state = load_file(str(path))
    except Exception as e:  # safetensors raises its own error types for corrupt files
        raise OblivioError(f"cannot read checkpoint {path}: {e}") from None
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = [k for k in expected if k in state and tuple(expected[k].shape) != tuple(state[k].shape)]
    if missing or unexpected or wrong:
        detail = "; ".join(
            part
            for part in (
                f"missing {missing[:3]}" if missing else "",
                f"unexpected {unexpected[:3]}" if unexpected else "",
                f"shape differs for {wrong[:3]}" if wrong else "",
            )
            if part
        )
        raise OblivioError(f"checkpoint {path} does not match the model ({meta.get('arch')}): {detail}")
    model.load_state_dict(state)
    model.eval()
    if device is not None:
        from .training import place

        place(model, device)
    return model, meta
