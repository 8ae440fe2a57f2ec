"""Loaders for data oblivio did not make: an image folder (``imagefolder``) and a CSV table (``csv``).

Both are registered in ``oblivio.data``'s registry and keep the data in memory as the other loaders do.

- ``imagefolder``: ``ROOT/<class name>/*.png|jpg|jpeg`` (the common ImageFolder layout, subfolders of a
  class included), or ``ROOT/train/<class name>/...`` + ``ROOT/test/<class name>/...``; read with Pillow,
  converted to one mode (``L`` or ``RGB``: the majority's, or ``mode=``), one size required.
- ``csv``: a header row, a label column (``label=``, default ``label``) and numeric feature columns.

Class names are sorted (numerically when every CSV label is an integer) and their ranks are the class ids;
they are kept in ``DatasetInfo.class_names``. Without train/test folders the test part is a seeded split
(``test_fraction``, default 0.2), stratified by class. Every bad input is one ``OblivioError`` line.
"""
from __future__ import annotations

import csv
import math
import os
from pathlib import Path

import numpy as np

from .data import Dataset, DatasetInfo, _checked, register_dataset
from .errors import OblivioError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
GRAY_MODES = {"1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"}
MODES = {"L": "L", "GRAY": "L", "GREY": "L", "RGB": "RGB"}
DEFAULT_TEST_FRACTION = 0.2


def _test_fraction(value, source: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < 1:
        raise OblivioError(f"{source}: test_fraction must be a number between 0 and 1 (exclusive), got {value!r}")
    return float(value)


def seeded_split(y: np.ndarray, names: list[str], test_fraction: float, source: str,
                 what: str = "images") -> tuple[np.ndarray, np.ndarray]:
    """Train and test indices of a split stratified by class with seed 0, or a one-line error when there are
    too few samples for every class to appear in both parts."""
    from sklearn.model_selection import train_test_split

    counts = np.bincount(y, minlength=len(names))
    if counts.min() < 2:
        c = int(np.argmin(counts))
        raise OblivioError(f"{source}: too few {what}: class {names[c]!r} has {counts[c]}; a seeded train/test split "
                           f"needs at least 2 per class")
    n = len(y)
    n_test = math.ceil(test_fraction * n)
    if n_test < len(names) or n - n_test < len(names):
        raise OblivioError(f"{source}: too few {what}: {n} in {len(names)} classes give a test part of {n_test} and a "
                           f"train part of {n - n_test}, each needing one per class; add {what} or change test_fraction")
    train, test = train_test_split(np.arange(n), test_size=n_test, stratify=y, random_state=0)
    return np.sort(train), np.sort(test)


# ---------------------------------------------------------------- image folders


def _images_in(folder: Path) -> list[Path]:
    found = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        found += [Path(dirpath) / f for f in sorted(filenames)
                  if not f.startswith(".") and f.lower().endswith(IMAGE_SUFFIXES)]
    return found


def _class_folders(directory: Path) -> dict[str, list[Path]]:
    """Class name -> its image files (sorted), for the class folders of ``directory``."""
    classes = sorted(p for p in directory.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        loose = [p for p in directory.iterdir() if p.is_file() and p.name.lower().endswith(IMAGE_SUFFIXES)]
        hint = f" (its {len(loose)} images lie in it directly: move them into one folder per class)" if loose else ""
        raise OblivioError(f"{directory}: no class folders; expected {directory}/<class name>/*.png|jpg|jpeg{hint}")
    files = {}
    for folder in classes:
        files[folder.name] = _images_in(folder)
        if not files[folder.name]:
            raise OblivioError(f"{folder}: empty class folder (no .png, .jpg or .jpeg image); add images or remove it")
    return files


def _unreadable(path: Path, e: Exception) -> OblivioError:
    from PIL import UnidentifiedImageError

    if isinstance(e, UnidentifiedImageError):
        reason = "Pillow does not recognise it as an image"
    else:
        reason = (str(e).strip().splitlines() or [type(e).__name__])[0]
    return OblivioError(f"{path}: unreadable image ({reason})")


def _decode(path: Path, mode: str) -> np.ndarray:
    """One image file as a uint8 array (C, H, W) in ``mode``."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            a = np.asarray(im.convert(mode))
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        raise _unreadable(path, e) from None
    return a[None] if a.ndim == 2 else a.transpose(2, 0, 1)


class ImageFileReader:
    """Reads image ``i`` of ``files`` as a float tensor in [0, 1] (what a streamed image folder holds)."""

    def __init__(self, files: list[Path], mode: str):
        self.files, self.mode = [str(f) for f in files], mode

    def __call__(self, i: int):
        import torch

        return torch.from_numpy(np.ascontiguousarray(_decode(Path(self.files[i]), self.mode), dtype=np.float32) / 255.0)


def _image_headers(files: list[Path], mode: str | None, source: str) -> tuple[str, tuple[int, int, int]]:
    """The mode every image is read in and the (C, H, W) shape; checks one size (headers only, nothing decoded)."""
    from PIL import Image

    sizes, gray = [], 0
    for f in files:
        try:
            with Image.open(f) as im:
                sizes.append(im.size)
                gray += im.mode in GRAY_MODES
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
            raise _unreadable(f, e) from None
    first = sizes[0]
    other = next((i for i, s in enumerate(sizes) if s != first), None)
    if other is not None:
        raise OblivioError(f"{source}: images differ in size: {files[0]} is {first[0]}x{first[1]}, {files[other]} is "
                           f"{sizes[other][0]}x{sizes[other][1]}; resize them to one size first")
    mode = mode or ("L" if gray > len(files) - gray else "RGB")
    return mode, (1 if mode == "L" else 3, first[1], first[0])


def _stream_choice(stream, shape: tuple[int, int, int], n: int, source: str) -> bool:
    """Whether to stream: ``true`` / ``false``, or ``auto`` (when the decoded images would not fit the memory budget)."""
    if isinstance(stream, str) and stream.lower() in ("auto", "true", "false"):
        stream = {"auto": None, "true": True, "false": False}[stream.lower()]
    if stream is None:
        from .streamed import memory_budget

        return n * int(np.prod(shape)) * 4 > memory_budget()
    if not isinstance(stream, bool):
        raise OblivioError(f"{source}: stream must be true, false or auto, got {stream!r}")
    return stream


def _image_mode(mode) -> str | None:
    if mode is None or (isinstance(mode, str) and mode.lower() == "auto"):
        return None
    if not isinstance(mode, str) or mode.upper() not in MODES:
        raise OblivioError(f"imagefolder: mode must be L (grayscale), RGB or auto, got {mode!r}")
    return MODES[mode.upper()]


@register_dataset("imagefolder")
def load_image_folder(root=None, mode: str | None = None, test_fraction: float | None = None,
                      stream: bool | str = "auto") -> Dataset:
    """Images in ``root/<class name>/`` (seeded stratified test split) or ``root/train/`` + ``root/test/``.

    ``mode``: ``L`` or ``RGB`` (default: the mode most images have). Pixels are scaled to [0, 1].
    ``stream``: read images from disk batch by batch instead of holding them in memory (``auto``: when the
    decoded images would exceed ``streamed.memory_budget()``); the numbers are the same either way.
    """
    if root is None:
        raise OblivioError("imagefolder needs a folder: --data-dir ROOT (ROOT/<class name>/*.png|jpg|jpeg)")
    directory = Path(root)
    if not directory.exists():
        raise OblivioError(f"image folder not found: {directory}")
    if not directory.is_dir():
        raise OblivioError(f"{directory} is not a folder; imagefolder needs ROOT/<class name>/*.png|jpg|jpeg")
    mode = _image_mode(mode)
    parts = {p: directory / p for p in ("train", "test") if (directory / p).is_dir()}
    if len(parts) == 1:
        (has,) = parts
        lacks = "test" if has == "train" else "train"
        raise OblivioError(f"{directory} has a {has}/ folder but no {lacks}/ folder; give both (each with one folder "
                           f"per class) or put the class folders in {directory} itself")
    if parts:
        if test_fraction is not None:
            raise OblivioError(f"{directory}: test_fraction does not apply, its train/ and test/ folders are the split")
        train_files, test_files = _class_folders(parts["train"]), _class_folders(parts["test"])
        if set(train_files) != set(test_files):
            only_train = sorted(set(train_files) - set(test_files))
            only_test = sorted(set(test_files) - set(train_files))
            detail = "; ".join(s for s in (f"only in train/: {', '.join(only_train)}" if only_train else "",
                                           f"only in test/: {', '.join(only_test)}" if only_test else "") if s)
            raise OblivioError(f"{directory}: train/ and test/ hold different class folders ({detail})")
        names = sorted(train_files)
        files = [f for c in names for f in train_files[c]] + [f for c in names for f in test_files[c]]
        y = np.array([i for i, c in enumerate(names) for _ in train_files[c]]
                     + [i for i, c in enumerate(names) for _ in test_files[c]], dtype=np.int64)
        n_train = sum(len(v) for v in train_files.values())
        train, test = np.arange(n_train), np.arange(n_train, len(files))
    else:
        by_class = _class_folders(directory)
        names = sorted(by_class)
        files = [f for c in names for f in by_class[c]]
        y = np.array([i for i, c in enumerate(names) for _ in by_class[c]], dtype=np.int64)
    if len(names) < 2:
        raise OblivioError(f"{directory}: one class folder ({names[0]}); a classifier needs at least 2 classes")
    if not parts:
        fraction = _test_fraction(DEFAULT_TEST_FRACTION if test_fraction is None else test_fraction, str(directory))
        train, test = seeded_split(y, names, fraction, str(directory))
    mode, shape = _image_headers(files, mode, str(directory))
    info = DatasetInfo(directory.name or "imagefolder", len(names), shape, class_names=tuple(names))
    if _stream_choice(stream, shape, len(files), str(directory)):
        import torch

        from .streamed import StreamedImages

        x = StreamedImages(ImageFileReader(files, mode), len(files), shape)
        labels = torch.from_numpy(y)
        return Dataset(info, x[train], labels[train], x[test], labels[test])
    x = np.empty((len(files), *shape), dtype=np.uint8)
    for i, f in enumerate(files):
        x[i] = _decode(f, mode)
    return _checked(info, x[train], y[train], x[test], y[test], 255.0, str(directory))


# ---------------------------------------------------------------- CSV


def _class_ids(labels: list[str]) -> tuple[np.ndarray, list[str]]:
    """Class ids (ranks of the sorted distinct labels; numeric order when every label is an integer) and names."""
    distinct = set(labels)
    try:
        order = sorted(distinct, key=int)
    except ValueError:
        order = sorted(distinct)
    index = {name: i for i, name in enumerate(order)}
    return np.array([index[v] for v in labels], dtype=np.int64), order


@register_dataset("csv")
def load_csv(root=None, path: str | os.PathLike | None = None, label: str = "label",
             test_fraction: float = DEFAULT_TEST_FRACTION) -> Dataset:
    """A CSV table: a header row, a ``label`` column (class names or integers) and numeric feature columns.

    Rows are split into train and test with a seeded stratified split (``test_fraction``). Features are used as
    they are (no scaling); each row becomes a (1, 1, D) input.
    """
    file = Path(path or root or "")
    if str(file) in ("", "."):
        raise OblivioError("csv needs a file: --data-dir FILE.csv")
    if file.is_dir():
        raise OblivioError(f"{file} is a directory; the csv dataset needs a .csv file (--data-dir FILE.csv)")
    if not file.is_file():
        raise OblivioError(f"csv file not found: {file}")
    label = str(label)
    fraction = _test_fraction(test_fraction, str(file))
    try:
        with open(file, newline="", encoding="utf-8-sig") as f:
            reader = csv.reader(f)
            header = next(reader, None)
            if header is None:
                raise OblivioError(f"{file}: empty file; expected a header row naming the columns")
            header = [h.strip() for h in header]
            dupes = sorted({h for h in header if header.count(h) > 1})
            if dupes:
                raise OblivioError(f"{file}: the header names column {dupes[0]!r} more than once")
            if label not in header:
                raise OblivioError(f"{file}: no label column {label!r} in the header ({', '.join(header)[:200]}); "
                                   f"name it with the label option (--data-option label=COLUMN)")
            at = header.index(label)
            features = [h for i, h in enumerate(header) if i != at]
            if not features:
                raise OblivioError(f"{file}: no feature columns besides the label column {label!r}")
            rows, labels = [], []
            for row in reader:
                if not row or all(not v.strip() for v in row):
                    continue  # blank line
                if len(row) != len(header):
                    raise OblivioError(f"{file}: line {reader.line_num} has {len(row)} values, the header has "
                                       f"{len(header)}")
                value = row[at].strip()
                if not value:
                    raise OblivioError(f"{file}: line {reader.line_num}: empty label in column {label!r}")
                labels.append(value)
                values = []
                for name, cell in zip(features, row[:at] + row[at + 1:]):
                    try:
                        v = float(cell)
                    except ValueError:
                        v = None
                    if v is None or not math.isfinite(v):
                        raise OblivioError(f"{file}: line {reader.line_num}, column {name!r}: {cell.strip()[:40]!r} "
                                           f"is not a finite number")
                    values.append(v)
                rows.append(values)
    except UnicodeDecodeError as e:
        raise OblivioError(f"{file}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    except csv.Error as e:
        raise OblivioError(f"{file}: not a readable CSV file ({e})") from None
    if not rows:
        raise OblivioError(f"{file}: no data rows under the header")
    y, names = _class_ids(labels)
    if len(names) < 2:
        raise OblivioError(f"{file}: one class ({names[0]!r}) in column {label!r}; a classifier needs at least 2")
    train, test = seeded_split(y, names, fraction, str(file), what="rows")
    x = np.asarray(rows, dtype=np.float32)[:, None, None, :]
    info = DatasetInfo(file.stem, len(names), tuple(x.shape[1:]), class_names=tuple(names))
    return _checked(info, x[train], y[train], x[test], y[test], 1.0, str(file))
