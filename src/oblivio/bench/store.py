"""The resume cache of a benchmark run: one small JSON file per finished cell, one checkpoint per trained model.

Files are named by a hash of everything that decides their content, and written atomically,
so an interrupted run leaves only whole files and a rerun skips what is already there.
"""
from __future__ import annotations

import hashlib
import inspect
import json
from pathlib import Path
from typing import Any, Callable

from torch import nn

from ..checkpoint import load_checkpoint, read_sidecar, save_checkpoint
from ..io import atomic_write_text
from ..methods import get_method
from .config import stable_hash


def code_hash(obj: Any) -> str:
    """Hash of the source file defining ``obj``, so a changed method or metric invalidates its cached cells."""
    try:
        source = Path(inspect.getsourcefile(obj)).read_bytes()
    except (TypeError, OSError):
        return "unknown"
    return hashlib.sha256(source).hexdigest()[:12]


def method_code_hash(name: str) -> str:
    return code_hash(type(get_method(name)))


class Store:
    """Cells under ``<out>/cells/<key>.json``, models under ``<out>/models/<key>.safetensors``."""

    def __init__(self, out: Path, resume: bool = True):
        self.out = Path(out)
        self.resume = resume
        self.computed = 0
        self.cached = 0

    @staticmethod
    def key(spec: dict) -> str:
        return stable_hash(spec, 20)

    def cell_path(self, key: str) -> Path:
        return self.out / "cells" / f"{key}.json"

    def model_path(self, key: str) -> Path:
        return self.out / "models" / f"{key}.safetensors"

    def cell(self, key: str, compute: Callable[[], dict], force: bool = False) -> dict:
        """The cached cell ``key``, or (when absent, or ``force``) ``compute()``'s result written to the cache."""
        path = self.cell_path(key)
        if self.resume and not force and path.is_file():
            try:
                doc = json.loads(path.read_text())
                self.cached += 1
                return doc
            except json.JSONDecodeError:
                pass  # a foreign or damaged file: compute it again
        doc = compute() | {"key": key}
        atomic_write_text(path, json.dumps(doc, indent=1, default=str))
        self.computed += 1
        return doc

    def has_model(self, key: str) -> bool:
        return self.resume and self.model_path(key).is_file()

    def model(self, key: str, build: Callable[[], tuple[nn.Module, float]], **meta: Any) -> tuple[nn.Module, float]:
        """The cached model ``key`` and the seconds it took to make, or ``build()``'s result saved as a checkpoint."""
        path = self.model_path(key)
        if self.has_model(key):
            return self.load_model(path), self.model_seconds(key)
        model, seconds = build()
        self.save_model(key, model, seconds, **meta)
        return model, seconds

    def save_model(self, key: str, model: nn.Module, seconds: float, *, arch: str, input_shape, num_classes: int,
                   dataset: str, seed: int) -> None:
        save_checkpoint(self.model_path(key), model, arch=arch, input_shape=tuple(input_shape),
                        num_classes=num_classes, dataset=dataset, seed=seed, extra={"seconds": seconds})

    @staticmethod
    def load_model(path: Path) -> nn.Module:
        return load_checkpoint(path)[0]

    def model_seconds(self, key: str) -> float:
        return float(read_sidecar(self.model_path(key))["extra"]["seconds"])
