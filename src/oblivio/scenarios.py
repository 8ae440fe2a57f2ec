"""Forgetting scenarios and the split of training data they induce.

The training set is split once, from a seed, into a *train pool* (what the original model
learns from) and a held-out *third-party pool* (same domain, never trained on). A scenario
then picks the *forget* set inside the train pool; the rest is the *retain* set:

    train set = third-party pool  +  train pool ( = retain + forget )

Scenarios: ``RandomSubset`` (fraction, count or explicit indices), ``ClassForget`` (whole
classes) and ``Backdoor`` (a BadNets patch stamped on a poisoned fraction relabelled to a
target class; the forget set is the poisoned samples).
"""
from __future__ import annotations

import hashlib
import json
import os
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch.utils.data import TensorDataset

from .data import Dataset, DatasetInfo
from .errors import OblivioError
from .io import atomic_write_text
from .streamed import StreamedImages, StreamedPart

CORNERS = ("bottom-right", "bottom-left", "top-right", "top-left")


@dataclass(frozen=True)
class RandomSubset:
    """Forget a random subset of training samples: a fraction, a count, or explicit indices.

    Explicit indices address the full training set of the dataset (0 .. N - 1); an index in the
    held-out third-party pool is refused, since the model never trained on it.
    """

    fraction: float | None = None
    count: int | None = None
    indices: tuple[int, ...] | None = None
    kind: str = field(default="random", init=False)

    def __post_init__(self) -> None:
        given = [v is not None for v in (self.fraction, self.count, self.indices)]
        if sum(given) != 1:
            raise OblivioError("random scenario: give exactly one of fraction, count or indices")
        if self.fraction is not None and not 0 < self.fraction < 1:
            raise OblivioError(f"random scenario: fraction must lie in (0, 1), got {self.fraction}")
        if self.count is not None and self.count <= 0:
            raise OblivioError(f"random scenario: empty forget set (count={self.count})")
        if self.indices is not None:
            object.__setattr__(self, "indices", tuple(int(i) for i in self.indices))
            if not self.indices:
                raise OblivioError("random scenario: empty forget set (no indices given)")
            if len(set(self.indices)) != len(self.indices):  # linear: a Counter, not count() per index
                dup = sorted(i for i, n in Counter(self.indices).items() if n > 1)[:5]
                raise OblivioError(f"random scenario: duplicated forget indices {dup}")


@dataclass(frozen=True)
class ClassForget:
    """Forget one or several whole classes."""

    classes: tuple[int, ...]
    kind: str = field(default="class", init=False)

    def __post_init__(self) -> None:
        classes = (self.classes,) if isinstance(self.classes, int) else tuple(int(c) for c in self.classes)
        object.__setattr__(self, "classes", classes)
        if not classes:
            raise OblivioError("class scenario: no class given to forget")
        if len(set(classes)) != len(classes):
            raise OblivioError(f"class scenario: duplicated classes {list(classes)}")


@dataclass(frozen=True)
class Backdoor:
    """BadNets: stamp a square patch on a poisoned fraction of training samples, relabelled to ``target``.

    ``patch_size`` defaults to about 1/7 of the image side (2 px on 8x8, 4 px on 28x28 and 32x32).
    On one-row inputs (tabular features, stored as 1 x F images) the trigger is a run of
    ``patch_size`` features (default about 1/7 of them, at least 2) at the row's left or right end,
    all set to ``value``; pick a ``value`` outside the features' normal range.
    """

    fraction: float = 0.1
    target: int = 0
    patch_size: int | None = None
    value: float = 1.0
    position: str = "bottom-right"
    kind: str = field(default="backdoor", init=False)

    def __post_init__(self) -> None:
        if not 0 < self.fraction < 1:
            raise OblivioError(f"backdoor scenario: poison fraction must lie in (0, 1), got {self.fraction}")
        if self.position not in CORNERS:
            raise OblivioError(f"backdoor scenario: unknown position {self.position!r}; choose one of {', '.join(CORNERS)}")
        if self.patch_size is not None and self.patch_size <= 0:
            raise OblivioError(f"backdoor scenario: patch size must be positive, got {self.patch_size}")

    def patch_for(self, input_shape: Sequence[int]) -> tuple[int, int]:
        """(rows, columns) of the trigger on inputs of ``input_shape`` (1 row on one-row inputs)."""
        h, w = input_shape[-2:]
        size = self.patch_size or max(2, (w if h == 1 else min(h, w)) // 7)
        rows = 1 if h == 1 else size
        if rows > h or size > w:
            what = f"{size} features does not fit the input's {w}" if h == 1 else \
                f"{size}x{size} px is larger than the {h}x{w} image"
            raise OblivioError(f"backdoor scenario: a trigger of {what}")
        return rows, size

    def stamp(self, x: torch.Tensor) -> torch.Tensor:
        """Return a copy of images ``x`` (N, C, H, W) with the trigger patch applied."""
        r, s = self.patch_for(x.shape[1:])
        x = x.clone()
        rows = slice(0, r) if self.position.startswith("top") else slice(x.shape[-2] - r, x.shape[-2])
        cols = slice(0, s) if self.position.endswith("left") else slice(x.shape[-1] - s, x.shape[-1])
        x[..., rows, cols] = self.value
        return x


Scenario = RandomSubset | ClassForget | Backdoor


def scenario_from_dict(d: dict) -> Scenario:
    """Rebuild a scenario from ``asdict(scenario)`` (as stored in split files)."""
    d = dict(d)
    kind = d.pop("kind", None)
    cls = {"random": RandomSubset, "class": ClassForget, "backdoor": Backdoor}.get(kind)
    if cls is None:
        raise OblivioError(f"unknown scenario kind {kind!r}; choose random, class or backdoor")
    if d.get("indices") is not None:
        d["indices"] = tuple(d["indices"])
    if "classes" in d:
        d["classes"] = tuple(d["classes"])
    return cls(**d)


def _hash(idx: np.ndarray) -> str:
    return hashlib.sha256(np.asarray(idx, dtype=np.int64).tobytes()).hexdigest()[:16]


@dataclass
class Split:
    """A dataset cut into retain / forget / third-party / test for one scenario.

    Indices address the full training set. ``x_train``/``y_train`` hold the training set as the
    original model saw it (with poisoned samples for a backdoor).
    """

    info: DatasetInfo
    scenario: Scenario
    seed: int
    third_party_fraction: float
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    pool_idx: np.ndarray
    forget_idx: np.ndarray
    third_party_idx: np.ndarray
    x_test_triggered: torch.Tensor | None = None
    y_test_triggered: torch.Tensor | None = None

    @property
    def retain_idx(self) -> np.ndarray:
        return np.setdiff1d(self.pool_idx, self.forget_idx, assume_unique=True)

    def _part(self, idx: np.ndarray) -> TensorDataset | StreamedPart:
        t = torch.as_tensor(idx, dtype=torch.long)
        if isinstance(self.x_train, StreamedImages):  # read batch by batch, never stacked
            return StreamedPart(self.x_train[t], self.y_train[t])
        return TensorDataset(self.x_train[t], self.y_train[t])

    def subset(self, idx: np.ndarray) -> TensorDataset:
        """The training samples at ``idx`` (indices into the full training set), as the model saw them."""
        return self._part(np.asarray(idx, dtype=np.int64))

    @property
    def train(self) -> TensorDataset:
        """What the original model is trained on: retain + forget."""
        return self._part(self.pool_idx)

    @property
    def retain(self) -> TensorDataset:
        return self._part(self.retain_idx)

    @property
    def forget(self) -> TensorDataset:
        return self._part(self.forget_idx)

    @property
    def third_party(self) -> TensorDataset:
        return self._part(self.third_party_idx)

    @property
    def test(self) -> TensorDataset | StreamedPart:
        if isinstance(self.x_test, StreamedImages):
            return StreamedPart(self.x_test, self.y_test)
        return TensorDataset(self.x_test, self.y_test)

    @property
    def test_triggered(self) -> TensorDataset | None:
        """Triggered test images of non-target classes, with their true labels (backdoor only)."""
        if self.x_test_triggered is None:
            return None
        return TensorDataset(self.x_test_triggered, self.y_test_triggered)

    @property
    def forget_classes(self) -> tuple[int, ...] | None:
        return self.scenario.classes if isinstance(self.scenario, ClassForget) else None

    @property
    def backdoor_target(self) -> int | None:
        return self.scenario.target if isinstance(self.scenario, Backdoor) else None

    def hashes(self) -> dict[str, str]:
        """Short SHA-256 digests of each index set, to prove two runs used the same split."""
        return {
            "pool": _hash(self.pool_idx),
            "forget": _hash(self.forget_idx),
            "retain": _hash(self.retain_idx),
            "third_party": _hash(self.third_party_idx),
        }

    def spec(self) -> dict:
        """Everything needed to rebuild this split from the dataset."""
        return {
            "dataset": self.info.name,
            "scenario": asdict(self.scenario),
            "seed": self.seed,
            "third_party_fraction": self.third_party_fraction,
            "hashes": self.hashes(),
        }

    def save(self, path: str | os.PathLike) -> None:
        """Write the split (spec, hashes and indices) as JSON, atomically."""
        doc = self.spec() | {
            "pool_idx": self.pool_idx.tolist(),
            "forget_idx": self.forget_idx.tolist(),
            "third_party_idx": self.third_party_idx.tolist(),
        }
        atomic_write_text(Path(path), json.dumps(doc))

    def sizes(self) -> dict[str, int]:
        return {
            "retain": len(self.retain_idx),
            "forget": len(self.forget_idx),
            "third_party": len(self.third_party_idx),
            "test": len(self.y_test),
        }


def check_third_party_fraction(fraction: float, what: str = "third-party fraction") -> float:
    """``fraction`` as a float; an error naming ``what`` unless it lies in (0, 1)."""
    if not 0 < fraction < 1:
        raise OblivioError(f"{what} must lie in (0, 1), got {fraction}")
    return float(fraction)


def _pool_and_third_party(n: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    check_third_party_fraction(fraction)
    perm = np.random.default_rng([seed, 0]).permutation(n)
    k = max(1, int(round(fraction * n)))
    return np.sort(perm[k:]), np.sort(perm[:k])


def make_split(
    data: Dataset, scenario: Scenario, seed: int = 0, third_party_fraction: float = 0.1,
    cut: tuple[np.ndarray, np.ndarray] | None = None,
) -> Split:
    """Cut ``data`` into retain / forget / third-party / test for ``scenario``, deterministically from ``seed``.

    The pool / third-party cut depends only on the seed and fraction, so the same original
    model serves every random or class request made with that seed. ``cut``: explicit sorted
    (pool, third-party) training-set indices instead (a model's user stated them, ``oblivio import``);
    ``third_party_fraction`` is then only recorded.
    """
    pool, third = cut if cut is not None else _pool_and_third_party(len(data.y_train), third_party_fraction, seed)
    rng = np.random.default_rng([seed, 1])
    x_train, y_train = data.x_train, data.y_train
    x_trig = y_trig = None
    k = data.info.num_classes
    y_pool = data.y_train.numpy()[pool]

    if isinstance(scenario, RandomSubset):
        if scenario.indices is not None:
            forget = np.asarray(scenario.indices, dtype=np.int64)
            n_train = len(data.y_train)
            bad = forget[(forget < 0) | (forget >= n_train)]
            if bad.size:
                raise OblivioError(
                    f"random scenario: forget indices out of range {bad[:5].tolist()}; the training set has {n_train} samples (0..{n_train - 1})"
                )
            held = forget[np.isin(forget, third)]
            if held.size:
                raise OblivioError(
                    f"random scenario: indices {held[:5].tolist()} are in the held-out third-party pool, which the model never trained on"
                )
            unseen = forget[~np.isin(forget, pool)]
            if unseen.size:  # an explicit cut may leave samples in neither part
                raise OblivioError(f"random scenario: indices {unseen[:5].tolist()} are not in the training pool, "
                                   "which the model never trained on")
            if forget.size >= pool.size:
                raise OblivioError("random scenario: forgetting every training sample leaves nothing to retain")
            forget = np.sort(forget)
        else:
            n = scenario.count if scenario.count is not None else int(round(scenario.fraction * len(pool)))
            if n <= 0:
                raise OblivioError(f"random scenario: empty forget set (fraction {scenario.fraction} of {len(pool)} samples)")
            if n >= len(pool):
                raise OblivioError(f"random scenario: forget set of {n} leaves nothing to retain (pool has {len(pool)})")
            forget = np.sort(pool[rng.choice(len(pool), size=n, replace=False)])
    elif isinstance(scenario, ClassForget):
        bad = [c for c in scenario.classes if not 0 <= c < k]
        if bad:
            raise OblivioError(f"class scenario: unknown class {bad[0]}; {data.info.name} has classes 0..{k - 1}")
        forget = pool[np.isin(y_pool, scenario.classes)]
        if forget.size == 0:
            raise OblivioError(f"class scenario: empty forget set, no training sample of class {list(scenario.classes)}")
        if forget.size == pool.size:
            raise OblivioError("class scenario: forgetting every class leaves nothing to retain")
    elif isinstance(scenario, Backdoor):
        if not 0 <= scenario.target < k:
            raise OblivioError(f"backdoor scenario: unknown target class {scenario.target}; {data.info.name} has classes 0..{k - 1}")
        scenario.patch_for(data.info.input_shape)
        candidates = pool[y_pool != scenario.target]
        n = int(round(scenario.fraction * len(pool)))
        if n <= 0:
            raise OblivioError(f"backdoor scenario: empty forget set (fraction {scenario.fraction} of {len(pool)} samples)")
        forget = np.sort(rng.choice(candidates, size=min(n, len(candidates)), replace=False))
        t = torch.as_tensor(forget)
        if isinstance(data.x_train, StreamedImages):
            raise OblivioError("backdoor scenario: it stamps a trigger into training images held in memory, and this "
                               "dataset is streamed from disk; load it without streaming (stream=false) on a machine "
                               "with the memory")
        x_train, y_train = data.x_train.clone(), data.y_train.clone()
        x_train[t] = scenario.stamp(x_train[t])
        y_train[t] = scenario.target
        keep = data.y_test != scenario.target
        x_trig, y_trig = scenario.stamp(data.x_test[keep]), data.y_test[keep].clone()
    else:
        raise OblivioError(f"unknown scenario {scenario!r}")

    return Split(
        info=data.info,
        scenario=scenario,
        seed=seed,
        third_party_fraction=third_party_fraction,
        x_train=x_train,
        y_train=y_train,
        x_test=data.x_test,
        y_test=data.y_test,
        pool_idx=pool,
        forget_idx=forget,
        third_party_idx=third,
        x_test_triggered=x_trig,
        y_test_triggered=y_trig,
    )


def load_split(path: str | os.PathLike, data: Dataset) -> Split:
    """Rebuild a saved split from its spec and check that the indices match what was saved."""
    try:
        doc = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise OblivioError(f"cannot read split file {path}: {e}") from None
    if doc.get("dataset") != data.info.name:
        raise OblivioError(f"split {path} was made for dataset {doc.get('dataset')!r}, not {data.info.name!r}")
    split = make_split(data, scenario_from_dict(doc["scenario"]), doc["seed"], doc["third_party_fraction"])
    if split.hashes() != doc["hashes"]:
        raise OblivioError(f"split {path} does not match the data: its index hashes differ (was the dataset changed?)")
    return split
