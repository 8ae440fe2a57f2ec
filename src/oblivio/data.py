"""Datasets: one registry of loaders, each returning train/test tensors and metadata.

Every dataset is returned as float32 images scaled to [0, 1] with shape (N, C, H, W)
and int64 labels, so models, scenarios and triggers see one format.
"""
from __future__ import annotations

import gzip
import hashlib
import inspect
import os
import pickle
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from .errors import OblivioError
from .streamed import StreamedImages
from .validation import validate_arrays

FASHION_MNIST_ENV = "OBLIVIO_FASHION_MNIST_DIR"
FASHION_MNIST_DEFAULT_DIR = "/usr/share/datasets/fashion-mnist"
CIFAR_ENV = "OBLIVIO_CIFAR_DIR"


@dataclass(frozen=True)
class DatasetInfo:
    """What a model needs to know about a dataset."""

    name: str
    num_classes: int
    input_shape: tuple[int, int, int]
    class_names: tuple[str, ...] | None = None  # class id -> name, where the source names its classes


@dataclass
class Dataset:
    """Train and test tensors of one dataset plus its metadata (``StreamedImages`` for data read from disk on demand)."""

    info: DatasetInfo
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor

    def __post_init__(self) -> None:
        for part, x, y in (("train", self.x_train, self.y_train), ("test", self.x_test, self.y_test)):
            if x.ndim != 4:
                raise OblivioError(f"{self.info.name}: {part} images must have shape (N, C, H, W), got {tuple(x.shape)}")
            if len(x) != len(y):
                raise OblivioError(f"{self.info.name}: {part} has {len(x)} images but {len(y)} labels")
            if tuple(x.shape[1:]) != self.info.input_shape:
                raise OblivioError(
                    f"{self.info.name}: {part} images have shape {tuple(x.shape[1:])}, expected {self.info.input_shape}"
                )
        if len(self.y_train) == 0:
            raise OblivioError(f"{self.info.name}: the training set is empty")
        if self.info.class_names is not None and len(self.info.class_names) != self.info.num_classes:
            raise OblivioError(f"{self.info.name}: {len(self.info.class_names)} class names for "
                               f"{self.info.num_classes} classes")
        labels = torch.cat([self.y_train, self.y_test])
        if labels.min() < 0 or labels.max() >= self.info.num_classes:
            raise OblivioError(
                f"{self.info.name}: labels must lie in [0, {self.info.num_classes - 1}], "
                f"found {int(labels.min())}..{int(labels.max())}"
            )

    @property
    def num_classes(self) -> int:
        return self.info.num_classes

    def fingerprint(self) -> str:
        """A short hash of the training data, to tell datasets apart in records."""
        h = hashlib.sha256()
        if isinstance(self.x_train, StreamedImages):  # the same bytes as the stacked tensor's, a chunk at a time
            for chunk in self.x_train.chunks():
                h.update(chunk.numpy().tobytes())
        else:
            h.update(self.x_train.numpy().tobytes())
        h.update(self.y_train.numpy().tobytes())
        return h.hexdigest()[:16]

    def subset(self, n_train: int | None = None, n_test: int | None = None, seed: int = 0) -> "Dataset":
        """A smaller copy with the first n_train/n_test samples of a seeded permutation."""
        for what, n in (("n_train", n_train), ("n_test", n_test)):
            if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
                raise OblivioError(f"{what} must be a positive integer (None = every sample), got {n!r}")
        g = torch.Generator().manual_seed(seed)
        tr = torch.randperm(len(self.y_train), generator=g)[: n_train or len(self.y_train)].sort().values
        te = torch.randperm(len(self.y_test), generator=g)[: n_test or len(self.y_test)].sort().values
        return Dataset(self.info, self.x_train[tr], self.y_train[tr], self.x_test[te], self.y_test[te])


_LOADERS: dict[str, Callable[..., Dataset]] = {}


def register_dataset(name: str) -> Callable[[Callable[..., Dataset]], Callable[..., Dataset]]:
    """Decorator adding a loader to the dataset registry."""

    def wrap(fn: Callable[..., Dataset]) -> Callable[..., Dataset]:
        _LOADERS[name] = fn
        return fn

    return wrap


def available_datasets() -> list[str]:
    return sorted(_LOADERS)


def dataset_options(name: str) -> list[str]:
    """The keyword options a registered loader takes besides ``root`` (e.g. ``test_fraction``)."""
    if name not in _LOADERS:
        raise OblivioError(f"unknown dataset {name!r}; choose one of: {', '.join(available_datasets())}")
    params = inspect.signature(_LOADERS[name]).parameters.values()
    return [p.name for p in params if p.name != "root" and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]


def load_dataset(name: str, root: str | os.PathLike | None = None, **options) -> Dataset:
    """Load a registered dataset by name (``digits``, ``fashion-mnist``, ``cifar10``, ``cifar100``, ``npz``,
    ``imagefolder``, ``csv``); ``options`` are the loader's keywords, an unknown one is a one-line error."""
    known = dataset_options(name)
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise OblivioError(f"dataset {name} has no option {unknown[0]!r}; "
                           + (f"its options: {', '.join(known)}" if known else "it takes none"))
    return _LOADERS[name](root=root, **options)


def _images(x: np.ndarray, scale: float) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32) / scale)


def _labels(y: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.asarray(y).astype(np.int64))


def _checked(info: DatasetInfo, x_tr, y_tr, x_te, y_te, scale: float, source: str, keys=None) -> Dataset:
    """A Dataset from arrays after ``validation.validate_arrays`` (finite, integer labels in range, lengths)."""
    arrays, _ = validate_arrays({"train": (x_tr, y_tr), "test": (x_te, y_te)}, source=source,
                                num_classes=info.num_classes, keys=keys)
    (x_tr, y_tr), (x_te, y_te) = arrays["train"], arrays["test"]
    return Dataset(info, _images(x_tr, scale), _labels(y_tr), _images(x_te, scale), _labels(y_te))


@register_dataset("digits")
def load_digits(root=None, test_fraction: float = 0.2) -> Dataset:
    """scikit-learn's bundled 8x8 digits (1,797 images), split 80/20 stratified with a fixed seed."""
    from sklearn.datasets import load_digits as sk_digits
    from sklearn.model_selection import train_test_split

    d = sk_digits()
    x = d.images.reshape(-1, 1, 8, 8)
    x_tr, x_te, y_tr, y_te = train_test_split(x, d.target, test_size=test_fraction, stratify=d.target, random_state=0)
    info = DatasetInfo("digits", 10, (1, 8, 8))
    if root is not None:
        raise OblivioError("digits is bundled with scikit-learn and takes no --data-dir; drop it (or pick another dataset)")
    return _checked(info, x_tr, y_tr, x_te, y_te, 16.0, "digits")


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file (optionally gzipped), the format of MNIST and Fashion-MNIST."""
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rb") as f:
        raw = f.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise OblivioError(f"{path}: not an IDX file")
    dtype = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}.get(raw[2])
    if dtype is None:
        raise OblivioError(f"{path}: unknown IDX element type 0x{raw[2]:02x}")
    ndim = raw[3]
    shape = struct.unpack(f">{ndim}I", raw[4 : 4 + 4 * ndim])
    data = np.frombuffer(raw, dtype=dtype, offset=4 + 4 * ndim)
    if data.size != int(np.prod(shape)):
        raise OblivioError(f"{path}: truncated IDX file ({data.size} values, header says {int(np.prod(shape))})")
    return data.reshape(shape)


def _find(directory: Path, stem: str) -> Path | None:
    for name in (stem + ".gz", stem):
        if (directory / name).exists():
            return directory / name
    return None


@register_dataset("fashion-mnist")
def load_fashion_mnist(root=None) -> Dataset:
    """Fashion-MNIST from its IDX files (Debian: ``apt-get install dataset-fashion-mnist``)."""
    directory = Path(root or os.environ.get(FASHION_MNIST_ENV) or FASHION_MNIST_DEFAULT_DIR)
    stems = ["train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"]
    paths = [_find(directory, s) for s in stems]
    if any(p is None for p in paths):
        missing = [s for s, p in zip(stems, paths) if p is None]
        raise OblivioError(
            f"Fashion-MNIST files not found in {directory} (missing {', '.join(missing)}); install them with "
            f"'apt-get install dataset-fashion-mnist' or point --data-dir / ${FASHION_MNIST_ENV} at the IDX files"
        )
    x_tr, y_tr, x_te, y_te = (read_idx(p) for p in paths)
    info = DatasetInfo("fashion-mnist", 10, (1, 28, 28))
    if x_tr.ndim != 3 or x_te.ndim != 3:
        raise OblivioError(f"{directory}: Fashion-MNIST images must be (N, 28, 28), got {x_tr.shape} and {x_te.shape}")
    return _checked(info, x_tr[:, None], y_tr, x_te[:, None], y_te, 255.0, str(directory),
                    keys={"train": (paths[0].name, paths[1].name), "test": (paths[2].name, paths[3].name)})


def _unpickle(path: Path) -> dict:
    """Read one CIFAR batch; CIFAR's own format is a pickle of plain arrays and lists."""
    with open(path, "rb") as f:
        return pickle.load(f, encoding="latin1")  # noqa: S301 - the user's own local dataset file


def _cifar(root, name: str, train_files: list[str], test_file: str, label_key: str, classes: int) -> Dataset:
    directory = Path(root or os.environ.get(CIFAR_ENV) or f"./{name}")
    paths = [directory / f for f in train_files + [test_file]]
    missing = [p.name for p in paths if not p.exists()]
    if missing:
        raise OblivioError(
            f"{name} batch files not found in {directory} (missing {', '.join(missing)}); "
            f"pass the extracted python-version directory with --data-dir or ${CIFAR_ENV} (oblivio never downloads)"
        )
    batches = [_unpickle(p) for p in paths]

    def stack(bs):
        x = np.concatenate([np.asarray(b["data"], dtype=np.uint8).reshape(-1, 3, 32, 32) for b in bs])
        y = np.concatenate([np.asarray(b[label_key]) for b in bs])
        return x, y

    try:
        x_tr, y_tr = stack(batches[:-1])
        x_te, y_te = stack(batches[-1:])
    except (KeyError, TypeError, ValueError) as e:
        raise OblivioError(f"{directory}: not a {name} python-version batch directory ({type(e).__name__}: {e})") from None
    return _checked(DatasetInfo(name, classes, (3, 32, 32)), x_tr, y_tr, x_te, y_te, 1.0, str(directory),
                    keys={"train": ("data", label_key), "test": ("data", label_key)})


@register_dataset("cifar10")
def load_cifar10(root=None) -> Dataset:
    """CIFAR-10 from the python-pickle batch directory (``cifar-10-batches-py``)."""
    return _cifar(root, "cifar10", [f"data_batch_{i}" for i in range(1, 6)], "test_batch", "labels", 10)


@register_dataset("cifar100")
def load_cifar100(root=None) -> Dataset:
    """CIFAR-100 from the python-pickle directory (``cifar-100-python``), fine labels."""
    return _cifar(root, "cifar100", ["train"], "test", "fine_labels", 100)


def _as_images(x: np.ndarray) -> torch.Tensor:
    t = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    if t.ndim == 2:  # flat features -> (N, 1, 1, D)
        t = t[:, None, None, :]
    elif t.ndim == 3:  # grayscale (N, H, W)
        t = t[:, None]
    return t


def _numpy(a) -> np.ndarray:
    return a.detach().cpu().numpy() if isinstance(a, torch.Tensor) else np.asarray(a)


def from_arrays(x_train, y_train, x_test, y_test, name: str = "custom", num_classes: int | None = None,
                *, source: str | None = None, keys: dict | None = None) -> Dataset:
    """Wrap user arrays/tensors (images as (N,C,H,W), (N,H,W) or flat (N,D)) as a Dataset.

    Every array is checked first (``oblivio.validation``): finite pixels, integer labels in
    ``[0, num_classes)`` (inferred as max + 1 when not given, every class needing a sample), matching
    lengths, one image shape. ``source``/``keys`` name the file and arrays in error messages.
    """
    arrays, k = validate_arrays(
        {"train": (_numpy(x_train), _numpy(y_train)), "test": (_numpy(x_test), _numpy(y_test))},
        source=source or (name if name != "custom" else None), num_classes=num_classes, keys=keys,
    )
    (x_tr, y_tr), (x_te, y_te) = arrays["train"], arrays["test"]
    xs = [_as_images(x_tr), _as_images(x_te)]
    return Dataset(DatasetInfo(name, k, tuple(xs[0].shape[1:])), xs[0], _labels(y_tr), xs[1], _labels(y_te))


def _npz_reason(e: Exception) -> str:
    """Why numpy refused a file, in one line, without numpy's advice to load it with ``allow_pickle=True``:
    a file that only loads that way holds pickled Python objects, and oblivio never unpickles data."""
    text = str(e)
    if "pickle" in text.lower():
        return "it is not a NumPy array file, or it holds pickled Python objects, which oblivio never loads"
    return text.splitlines()[0] if text else type(e).__name__


@register_dataset("npz")
def load_npz(root=None, path: str | os.PathLike | None = None, test_fraction: float = 0.2) -> Dataset:
    """A user's ``.npz`` with ``x``/``y`` (split seeded) or ``x_train``/``y_train``/``x_test``/``y_test``.

    An optional scalar ``num_classes`` array declares the class count (else max label + 1).
    """
    path = Path(path or root or "")
    if path.is_dir():
        raise OblivioError(f"{path} is a directory; the npz dataset needs a .npz file (--data-dir file.npz)")
    if not path.is_file():
        raise OblivioError(f"npz file not found: {path}")
    try:
        z = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        raise OblivioError(f"{path}: not a readable .npz file ({_npz_reason(e)})") from None
    if not isinstance(z, np.lib.npyio.NpzFile):
        raise OblivioError(f"{path}: a single .npy array, not an .npz archive with x/y arrays")
    with z:
        try:
            keys = set(z.files)
            declared = None
            if "num_classes" in keys:
                value = z["num_classes"]
                if value.shape != () or value.dtype.kind not in "iu":
                    raise OblivioError(f"{path}: num_classes must be a scalar integer, got {value!r}")
                declared = int(value)
            if {"x_train", "y_train", "x_test", "y_test"} <= keys:
                return from_arrays(z["x_train"], z["y_train"], z["x_test"], z["y_test"], name=path.stem,
                                   num_classes=declared, source=str(path))
            if {"x", "y"} <= keys:
                from sklearn.model_selection import train_test_split

                arrays, k = validate_arrays({"all": (z["x"], z["y"])}, source=str(path), num_classes=declared,
                                            keys={"all": ("x", "y")})
                x, y = arrays["all"]
                if len(y) < 2:
                    raise OblivioError(f"{path}: x/y hold {len(y)} sample(s); at least 2 are needed to split train and test")
                x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=test_fraction, random_state=0)
                return from_arrays(x_tr, y_tr, x_te, y_te, name=path.stem, num_classes=declared or k, source=str(path))
        except (ValueError, OSError, EOFError) as e:  # zip members that are not valid .npy arrays
            raise OblivioError(f"{path}: cannot read arrays ({_npz_reason(e)})") from None
    raise OblivioError(f"{path}: expected arrays 'x' and 'y' (or x_train/y_train/x_test/y_test), found {sorted(keys)}")


def load_from_spec(spec: dict) -> Dataset:
    """Load a dataset from the ``{"name", "root", "n_train", "n_test", "seed"}`` dict stored in sidecars
    (plus ``path`` for a file, and ``options``, the loader's keywords, where they were given)."""
    extra = {"path": spec["path"]} if spec.get("path") else {}
    options = spec.get("options") or {}
    if not isinstance(options, dict):
        raise OblivioError(f"dataset spec: options must be a mapping of the loader's keywords, got {options!r}")
    data = load_dataset(spec["name"], root=spec.get("root"), **extra, **options)
    if spec.get("n_train") is not None or spec.get("n_test") is not None:
        data = data.subset(spec.get("n_train"), spec.get("n_test"), seed=spec.get("subset_seed", 0))
    return data


from . import loaders as _loaders  # noqa: E402,F401 - registers imagefolder and csv (they use the names above)
from . import hf_loaders as _hf_loaders  # noqa: E402,F401 - registers hf-disk and parquet (datasets imported on use)
