"""Models oblivio did not train: the user's statement of which training samples a model saw.

``oblivio import`` records a model trained elsewhere with an explicit *cut* of the dataset's training part into
the *pool* (the samples the model was trained on) and the *third-party* samples (never seen: dm and the audit
compare the forgotten samples with them). Samples in neither part are simply unused.

Index lists (``--trained-on``, ``--third-party``): a ``.npy`` integer array, a ``.json`` list, or text with one
entry a line (blank lines and ``#`` comments skipped). An entry is an index into the training part (0 .. N-1)
or, for an ``imagefolder`` dataset, an image's path relative to the folder (``train/coat/00012.png``) or
absolute.

The cut goes into the sidecar's training record as runs ``[[start, stop], ...]`` of sorted indices (compact for
folders and ranges, exact for any set), so every checkpoint of the lineage carries it and ``forget``, ``audit``
and the ledger rebuild the same split.
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Sequence

import numpy as np

from .errors import OblivioError

INTEGER = re.compile(r"[+-]?\d+")
NO_STATEMENT = ("say which samples the model never saw: --third-party FILE, or --trained-on FILE (the rest are "
                "third-party); dm and the audit compare with data the model never saw")


def to_runs(idx: np.ndarray) -> list[list[int]]:
    """Sorted unique indices as runs ``[[start, stop), ...]``: ``[0, 1, 2, 7]`` -> ``[[0, 3], [7, 8]]``."""
    idx = np.asarray(idx, dtype=np.int64)
    if idx.size == 0:
        return []
    breaks = np.flatnonzero(np.diff(idx) != 1) + 1
    starts, ends = idx[np.r_[0, breaks]], idx[np.r_[breaks - 1, idx.size - 1]] + 1
    return [[int(a), int(b)] for a, b in zip(starts, ends)]


def from_runs(runs: object, n: int, what: str) -> np.ndarray:
    """The sorted indices of ``runs`` (as ``to_runs`` writes them); a one-line error unless they are well formed
    and inside a training part of ``n`` samples."""
    ok = isinstance(runs, list) and all(
        isinstance(r, list) and len(r) == 2 and all(isinstance(v, int) and not isinstance(v, bool) for v in r)
        for r in runs)
    if ok:
        previous = 0
        for start, stop in runs:
            ok = ok and previous <= start < stop <= n
            previous = stop
    if not ok:
        raise OblivioError(f"checkpoint sidecar: training cut {what} must be increasing runs [start, stop) of indices "
                           f"into the {n} training samples")
    return np.concatenate([np.arange(a, b, dtype=np.int64) for a, b in runs]) if runs else np.zeros(0, np.int64)


def recorded_cut(training: dict, n: int) -> tuple[np.ndarray, np.ndarray] | None:
    """The explicit (pool, third-party) cut a training record holds (``oblivio import``), else None."""
    cut = training.get("cut")
    if cut is None:
        return None
    if not isinstance(cut, dict):
        raise OblivioError("checkpoint sidecar: training cut must be a mapping with 'pool' and 'third_party'")
    return from_runs(cut.get("pool"), n, "pool"), from_runs(cut.get("third_party"), n, "third_party")


def read_entries(path: Path, what: str) -> list[int | str]:
    """The entries of an index list (see the module docstring), before they are matched to the data."""
    path = Path(path)
    if not path.is_file():
        raise OblivioError(f"{what}: {path} is not a file" if path.exists() else f"{what}: {path} not found")
    try:
        if path.suffix == ".npy":
            a = np.load(path, allow_pickle=False)
            if a.ndim != 1 or not (np.issubdtype(a.dtype, np.integer) or a.size == 0):
                raise OblivioError(f"{what}: {path} must hold a one-dimensional integer array, found {a.dtype} "
                                   f"of shape {a.shape}")
            return [int(v) for v in a]
        text = path.read_text(encoding="utf-8-sig")
        if path.suffix == ".json":
            doc = json.loads(text)
            if not isinstance(doc, list) or not all(isinstance(v, (int, str)) and not isinstance(v, bool) for v in doc):
                raise OblivioError(f"{what}: {path} must hold a JSON list of indices or image paths")
            return doc
    except OblivioError:
        raise
    except (OSError, ValueError) as e:  # ValueError: a bad .npy header, JSON or UTF-8
        reason = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise OblivioError(f"{what}: cannot read {path} ({reason})") from None
    lines = (line.split("#", 1)[0].strip() for line in text.splitlines())
    return [int(s) if INTEGER.fullmatch(s) else s for s in lines if s]


def image_files(root: Path, test_fraction: float | None, y_train: np.ndarray) -> tuple[list[Path], list[Path]]:
    """The files of an image folder's training and test parts, in the ``imagefolder`` loader's order (checked
    against the loaded training labels ``y_train``)."""
    from .loaders import DEFAULT_TEST_FRACTION, _class_folders, seeded_split

    if (root / "train").is_dir() and (root / "test").is_dir():
        train, test = _class_folders(root / "train"), _class_folders(root / "test")
        names = sorted(train)
        files = [f for c in names for f in train[c]], [f for c in names for f in test[c]]
        labels = np.array([i for i, c in enumerate(names) for _ in train[c]], dtype=np.int64)
    else:
        by_class = _class_folders(root)
        names = sorted(by_class)
        every = [f for c in names for f in by_class[c]]
        y = np.array([i for i, c in enumerate(names) for _ in by_class[c]], dtype=np.int64)
        tr, te = seeded_split(y, names, DEFAULT_TEST_FRACTION if test_fraction is None else test_fraction, str(root))
        files, labels = ([every[i] for i in tr], [every[i] for i in te]), y[tr]
    if not np.array_equal(labels, np.asarray(y_train)):
        raise OblivioError(f"{root}: its files do not match the loaded images (changed meanwhile?); list indices "
                           "instead of image paths")
    return files


def resolve(entries: Sequence[int | str], what: str, n: int, root: Path | None,
            images: tuple[list[Path], list[Path]] | None) -> np.ndarray:
    """Sorted training-set indices of ``entries``; a one-line error for an index out of range, a path that is no
    training image of ``root`` (``images``: its training and test files; None for data without files) or a
    sample listed twice."""
    where: dict[Path, int] = {}
    out = []
    for entry in entries:
        if isinstance(entry, int):
            if not 0 <= entry < n:
                raise OblivioError(f"{what}: index {entry} is out of range; the training part has {n} samples "
                                   f"(0..{n - 1})")
            out.append(entry)
            continue
        if images is None or root is None:
            raise OblivioError(f"{what}: {entry[:80]!r} is not an index (image paths name samples of an "
                               "imagefolder dataset only)")
        if not where:
            where = {f.resolve(): i for i, f in enumerate(images[0])}
        path = (Path(entry) if Path(entry).is_absolute() else root / entry).resolve()
        if path not in where:
            test = {f.resolve() for f in images[1]}
            part = "is in the test part, not the training part" if path in test else "is no training image"
            raise OblivioError(f"{what}: {entry[:120]} {part} of {root}")
        out.append(where[path])
    idx = np.sort(np.asarray(out, dtype=np.int64))
    twice = idx[1:][idx[1:] == idx[:-1]]
    if twice.size:
        raise OblivioError(f"{what}: sample {int(twice[0])} is listed twice")
    return idx


def stated_cut(n: int, trained_on: np.ndarray | None, third_party: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """(pool, third-party) from the user's lists: a part not given is every training sample the other leaves."""
    everything = np.arange(n, dtype=np.int64)
    if trained_on is None and third_party is None:
        raise OblivioError(NO_STATEMENT)
    pool = trained_on if trained_on is not None else np.setdiff1d(everything, third_party)
    third = third_party if third_party is not None else np.setdiff1d(everything, trained_on)
    both = np.intersect1d(pool, third)
    if both.size:
        raise OblivioError(f"--trained-on and --third-party both list samples {both[:5].tolist()}: a sample the "
                           "model trained on is not third-party")
    if third.size == 0:
        raise OblivioError("no third-party samples: the lists leave no training sample the model never saw, and dm "
                           "and the audit need some (list them with --third-party FILE)")
    if pool.size == 0:
        raise OblivioError("no training samples: the lists leave nothing the model was trained on")
    return pool, third
