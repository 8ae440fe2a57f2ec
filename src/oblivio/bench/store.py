"""The resume cache of a benchmark run: one small JSON file per finished cell, one checkpoint per trained model.

Files are named by a hash of everything that decides their content, and written atomically,
so an interrupted run leaves only whole files and a rerun skips what is already there.
"""
from __future__ import annotations

import ast
import hashlib
import inspect
import json
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from ..checkpoint import load_checkpoint, save_checkpoint
from ..errors import OblivioError
from ..io import OutputLocked, atomic_write_text
from ..methods import get_method
from .config import BenchConfig, stable_hash


def code_hash(*objs: Any) -> str:
    """Hash of the code of the source files defining ``objs``, so changed code invalidates the cells it produced
    (and the tuning studies it named). Docstrings and comments are left out: editing them changes no result."""
    h = hashlib.sha256()
    for obj in objs:
        try:
            h.update(_code_only(Path(inspect.getsourcefile(obj)).read_text()).encode())
        except (TypeError, OSError):
            h.update(repr(obj).encode())
    return h.hexdigest()[:12]


def _code_only(source: str) -> str:
    """``source``'s syntax tree without docstrings (comments never reach the tree); the source itself if it
    does not parse."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return source
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str):
                node.body = node.body[1:] or [ast.Pass()]
    return ast.dump(tree)


def method_code_hash(name: str) -> str:
    """Hash of a method's module and the shared method code (base, common) it builds on."""
    from ..methods import base, common

    return code_hash(type(get_method(name)), base, common)


def model_base(cfg: BenchConfig, device: torch.device) -> dict:
    """What every cached model's key shares: the config's data/model/recipe, the oblivio version, the
    training code (a changed recipe retrains the originals) and, off the CPU, the device kind."""
    from .. import __version__, batching, training

    base = cfg.base_spec() | {"oblivio": __version__, "train_code": code_hash(training, batching)}
    if device.type != "cpu":  # GPU numbers differ from CPU ones in the last bits: separate caches
        base |= {"device": device.type, "deterministic": cfg.deterministic}
    return base


def _jsonable(obj: Any) -> Any:
    return json.loads(json.dumps(obj, default=str))


class Store:
    """Cells under ``<out>/cells/<key>.json``, models under ``<out>/models/<key>.safetensors``.

    ``computed`` and ``cached`` count the cells of this run made afresh and read from the cache;
    ``rebuilt`` the cached models that could not be loaded (damaged) and were built again.
    Without ``resume``, files written since ``since`` (a ``time.time()``; by this run's other
    workers) are still reused, so a model is built once per run whichever process needs it.
    """

    def __init__(self, out: Path, resume: bool = True, since: float | None = None):
        self.out = Path(out)
        self.resume = resume
        self.since = since
        self.computed = 0
        self.cached = 0
        self.rebuilt = 0

    @staticmethod
    def key(spec: dict) -> str:
        return stable_hash(spec, 20)

    def cell_path(self, key: str) -> Path:
        return self.out / "cells" / f"{key}.json"

    def model_path(self, key: str) -> Path:
        return self.out / "models" / f"{key}.safetensors"

    def _reusable(self, path: Path) -> bool:
        if not path.is_file():
            return False
        return self.resume or (self.since is not None and path.stat().st_mtime >= self.since)

    def has_cell(self, key: str) -> bool:
        """Whether the cell ``key`` would be read from the cache (see ``cached_cell``)."""
        return self._reusable(self.cell_path(key))

    def cell(self, key: str, compute: Callable[[], dict]) -> dict:
        """The cached cell ``key``, or ``compute()``'s result written to the cache."""
        doc = self.cached_cell(key)
        return doc if doc is not None else self.save_cell(key, compute())

    def cached_cell(self, key: str) -> dict | None:
        """The cached cell ``key`` when resuming and it is there (counted as cached), else None."""
        path = self.cell_path(key)
        if self._reusable(path):
            try:
                doc = json.loads(path.read_text())
                self.cached += 1
                return doc
            except json.JSONDecodeError:
                pass  # a foreign or damaged file: compute it again
        return None

    def save_cell(self, key: str, doc: dict, count: bool = True) -> dict:
        """Write a freshly computed cell (counted as computed unless ``count`` is False); return it with its key."""
        doc = doc | {"key": key}
        atomic_write_text(self.cell_path(key), json.dumps(doc, indent=1, default=str))
        self.computed += count
        return doc

    def model(self, key: str, build: Callable[[], tuple[nn.Module, dict]], **meta: Any) -> tuple[nn.Module, dict]:
        """The cached model ``key`` and its record (``seconds``, ``info``), or ``build()``'s result saved as a checkpoint."""
        path = self.model_path(key)
        if self._reusable(path):
            try:
                model, sidecar = load_checkpoint(path)
                return model, sidecar["extra"]
            except OblivioError:
                self.rebuilt += 1  # a damaged or foreign file: build the model again and replace it
        model, record = build()
        record = _jsonable(record)
        try:
            save_checkpoint(path, model, arch=meta["arch"], input_shape=tuple(meta["input_shape"]),
                            num_classes=meta["num_classes"], dataset=meta["dataset"], seed=meta["seed"], extra=record)
        except OutputLocked:
            pass  # another worker is writing the same key (same inputs, same model): its file will do
        return model, record
