"""Checkpoints: weights in safetensors plus a JSON sidecar, committed as one unit, loaded without pickle.

``model.safetensors`` holds the tensors; ``model.json`` beside it holds the architecture,
dataset, seed, split hashes, the weights' SHA-256 and versions.

Crash safety (the pair is one unit):

- A writer holds ``.model.safetensors.lock`` (``flock``) for as long as it works on the output
  (``oblivio forget`` takes it before unlearning), so a second writer fails at once with a clear
  error instead of racing.
- Under the lock it first recovers the output (``recover_checkpoint``): an interrupted commit is
  finished, stray temporary files (``.model.safetensors.*.tmp``, ``.model.json.*.tmp``) are deleted.
- The new weights, sidecar and any companion files (the forget split) are written completely to
  hidden temporary names; then ``io.commit_files`` writes a journal ``.model.safetensors.commit``
  naming them (the commit point), renames each onto its final name and deletes the journal.
  Killed before the commit point: the previous pair is untouched. Killed after: the next reader
  or writer rolls the commit forward. Either way the pair on disk is the old one or the new one.
- ``load_checkpoint`` reads the weights once, checks their SHA-256 against the sidecar and, on a
  mismatch while a commit is in flight or interrupted, waits for / finishes it and reads again,
  so a reader never accepts (nor wrongly rejects) a half-committed pair.
"""
from __future__ import annotations

import hashlib
import json
import os
import platform
import time
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

import torch
from safetensors.torch import load as load_bytes, save as save_bytes
from torch import nn

from .errors import OblivioError
from .io import atomic_files, journal_path, output_lock, recover_files, release_lock, try_lock
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


def file_sha256(path: str | os.PathLike) -> str:
    """SHA-256 (hex) of a file's bytes."""
    return _sha256(Path(path))


def checkpoint_files(path: str | os.PathLike, companions: tuple[str | os.PathLike, ...] = ()) -> list[Path]:
    """The files committed together for checkpoint ``path``: weights, sidecar, then companions."""
    return [Path(path), sidecar_path(path), *(Path(c) for c in companions)]


def split_companion(path: str | os.PathLike) -> Path:
    """Where ``oblivio forget`` keeps the forget split of checkpoint ``path``: ``<stem>.split.json``."""
    path = Path(path)
    return path.parent / f"{path.stem}.split.json"


def recover_checkpoint(path: str | os.PathLike) -> bool:
    """Finish an interrupted commit of ``path`` and delete its stray temp files (call under ``checkpoint_lock``)."""
    return recover_files(checkpoint_files(path, (split_companion(path),)))


@contextmanager
def checkpoint_lock(path: str | os.PathLike) -> Iterator[None]:
    """The exclusive writer lock of checkpoint ``path`` (re-entrant); recovers the output on entry."""
    with output_lock(path, what="--out"):
        recover_checkpoint(path)
        yield


def _recover_if_free(path: Path, wait: float = 0.0) -> bool:
    """Finish an interrupted commit of ``path`` when no writer holds it; False when one does."""
    fd = try_lock(path, wait=wait)
    if fd is None:
        return False
    try:
        recover_checkpoint(path)
    finally:
        release_lock(fd, path)
    return True


def model_hash(model: nn.Module) -> str:
    """SHA-256 (first 16 hex digits) of a model's state dict, independent of file layout."""
    h = hashlib.sha256()
    for k, v in sorted(model.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def check_checkpoint_path(path: str | os.PathLike, what: str = "checkpoint path") -> Path:
    """``path`` as a Path; an error naming ``what`` unless it ends in .safetensors."""
    path = Path(path)
    if path.suffix != ".safetensors":
        raise OblivioError(f"{what} must end in .safetensors, got {path.name}")
    return path


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
    companions: dict[str | os.PathLike, Any] | None = None,
) -> Path:
    """Write ``model`` to ``path`` (.safetensors) and its sidecar (.json) as one unit; return the path.

    ``companions`` maps further files to commit with the pair to functions writing them (given a
    temporary path). Raises ``OblivioError`` when another process holds the output's lock.

    ``split`` is the forget split's spec (``Split.spec()``), ``training`` how the original model
    was trained (``pipeline.training_spec``); both let an audit rebuild the exact data.
    """
    from . import __version__

    path = check_checkpoint_path(path)
    state = {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}
    companions = dict(companions or {})
    with checkpoint_lock(path), atomic_files(checkpoint_files(path, tuple(companions))) as tmp:
        # bytes into our own temp file: safetensors' save_file writes a temp file of its own beside the target
        # (".tmpXXXXXX"), which a kill leaves behind under a name the next writer does not clean up
        weights = save_bytes(state, metadata={"format": FORMAT})
        tmp[path].write_bytes(weights)
        meta = {
            "format": FORMAT,
            "arch": arch,
            "input_shape": list(input_shape),
            "num_classes": num_classes,
            "dataset": dataset,
            "seed": seed,
            "split": split,
            "training": training,
            "weights_sha256": hashlib.sha256(weights).hexdigest(),  # the bytes just written, not read back
            "model_hash": model_hash(model),
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "versions": {"oblivio": __version__, "torch": torch.__version__, "python": platform.python_version()},
            "extra": extra or {},
        }
        tmp[sidecar_path(path)].write_text(json.dumps(meta, indent=2))
        for dest, write in companions.items():
            write(tmp[Path(dest)])
    return path


def read_sidecar(path: str | os.PathLike) -> dict:
    side = sidecar_path(path)
    path = Path(path)
    if path.is_dir():
        raise OblivioError(f"checkpoint {path} is a directory; give the .safetensors file written by oblivio")
    if not path.is_file():
        raise OblivioError(f"checkpoint not found: {path}")
    if side.is_dir() or not side.is_file():
        raise OblivioError(f"checkpoint {path} has no sidecar {side.name}; it was not written by oblivio")
    try:
        meta = json.loads(side.read_text())
    except json.JSONDecodeError as e:
        raise OblivioError(f"sidecar {side} is not valid JSON: {e}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise OblivioError(f"cannot read sidecar {side}: {e}") from None
    if not isinstance(meta, dict):
        raise OblivioError(f"sidecar {side} must hold a JSON object, found {type(meta).__name__}: {json.dumps(meta)[:40]}")
    if meta.get("format") != FORMAT:
        raise OblivioError(f"sidecar {side} has unknown format {meta.get('format')!r}")
    for key, kind in (("weights_sha256", str), ("input_shape", list), ("num_classes", int)):
        if not isinstance(meta.get(key), kind) or isinstance(meta.get(key), bool):
            raise OblivioError(f"sidecar {side}: field {key!r} is missing or not a {kind.__name__}")
    shape = meta["input_shape"]
    if not shape or not all(isinstance(d, int) and not isinstance(d, bool) and 1 <= d <= 1 << 16 for d in shape):
        raise OblivioError(f"sidecar {side}: input_shape must be a list of positive integers, got {shape}")
    if not 1 <= meta["num_classes"] <= 1 << 20:
        raise OblivioError(f"sidecar {side}: num_classes must be a positive integer, got {meta['num_classes']}")
    seed = meta.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**32):
        raise OblivioError(f"sidecar {side}: seed must be an integer from 0 to {2**32 - 1}, got {seed!r}")
    return meta


def _read_pair(path: Path) -> tuple[dict, bytes]:
    """The sidecar and the weights' bytes of ``path``, consistent with each other.

    A hash mismatch while a commit is in flight (or was interrupted) is waited for / rolled
    forward and the pair read again; a mismatch that persists is an error.
    """
    for attempt in range(20):
        meta = read_sidecar(path)
        try:
            raw = path.read_bytes()
        except OSError as e:
            raise OblivioError(f"cannot read checkpoint {path}: {e}") from None
        if hashlib.sha256(raw).hexdigest() == meta["weights_sha256"]:
            return meta, raw
        if not journal_path(path).exists() and attempt >= 2:
            break
        if not _recover_if_free(path, wait=0.5):  # free lock + journal: its writer died mid-commit, finish it
            time.sleep(0.05)
    raise OblivioError(f"checkpoint {path} does not match its sidecar: the weights' SHA-256 differs")


def load_checkpoint(
    path: str | os.PathLike, model: nn.Module | None = None, device: torch.device | str | None = None
) -> tuple[nn.Module, dict]:
    """Load a checkpoint into ``model`` (or a fresh model of the sidecar's architecture); return (model, sidecar).

    Weights are stored device-free; ``device`` (``auto``, ``cpu``, ``cuda``, ``cuda:N``) moves the model
    there after loading (None: the CPU, or where ``model`` is). Refuses weights whose hash, keys or
    shapes do not match the sidecar or the model.
    """
    path = Path(path)
    if journal_path(path).exists():  # an interrupted commit: finish it when no writer holds the output
        _recover_if_free(path)
    meta, raw = _read_pair(path)
    try:
        state = load_bytes(raw)
    except Exception as e:  # safetensors raises its own error types for corrupt files
        raise OblivioError(f"cannot read checkpoint {path}: {e}") from None
    if model is None:
        if not meta.get("arch"):
            raise OblivioError(f"checkpoint {path} holds a custom architecture; pass the model to load it into")
        try:
            model = build_model(meta["arch"], meta["input_shape"], meta["num_classes"])
        except OblivioError:
            raise
        except (TypeError, ValueError, KeyError, RuntimeError) as e:
            raise OblivioError(f"sidecar of {path} describes a model that cannot be built: {e}") from None
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


def recorded_recipe(meta: dict) -> dict:
    """What the methods may know of the original's training recipe, from a checkpoint's sidecar: ``augment``
    (its augmentation spec) and ``train_epochs``; from the original's ``train_config``, or carried on by an
    unlearned checkpoint's record (``unlearning.recipe``). Keys whose value is unknown are left out."""
    extra = meta.get("extra") or {}
    config = extra.get("train_config") or {}
    carried = (extra.get("unlearning") or {}).get("recipe") or {}
    recipe = {"augment": config.get("augment") or carried.get("augment")
              or (extra.get("unlearning") or {}).get("augment"),
              "train_epochs": config.get("epochs") or carried.get("train_epochs")}
    return {k: v for k, v in recipe.items() if v is not None}
