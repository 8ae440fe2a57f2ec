"""Hugging Face data on local disk: a ``save_to_disk`` folder (``hf-disk``) and Parquet files (``parquet``).

Both are registered in ``oblivio.data``'s registry and read with the ``datasets`` library (``pip install
'oblivio[hf]'``), from local files only: ``hf-disk`` with ``datasets.load_from_disk``, ``parquet`` with pyarrow
into an in-memory ``datasets.Dataset`` (the features ``datasets`` stores in a Parquet file's metadata, such as
``Image`` and ``ClassLabel``, are kept). Nothing is downloaded and no cache is written.

- Splits: ``train`` + ``test`` (a ``DatasetDict``'s splits; Parquet files named ``train*``/``test*`` or in
  ``train/``/``test/`` folders) are the split; otherwise the ``train`` split (or all rows) is cut by a seeded
  test part stratified by class (``test_fraction``, default 0.2), as for ``imagefolder``.
- Inputs: an ``image`` column (default: the one column of ``Image`` feature) of PIL images (converted to the
  mode most have, ``L`` or ``RGB``, one size; pixels scaled to [0, 1]) or of arrays ((H, W); (H, W, C) when the
  last axis has 1, 3 or 4 values and the first not 1 or 3, else (C, H, W); flat (D,); uint8 scaled by 1/255,
  other types as they are); without one, every column but the label is a numeric feature and each row becomes
  a (1, 1, D) input (other columns are refused).
- Labels (``label``, default ``label``): a ``ClassLabel`` keeps its ids and names; strings and integers are
  ranked like ``csv`` labels (sorted; integers by value) and their names kept in ``DatasetInfo.class_names``.

Every bad input is one ``OblivioError`` line.
"""
from __future__ import annotations

import json
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from .data import Dataset, DatasetInfo, _checked, register_dataset
from .errors import OblivioError
from .loaders import DEFAULT_TEST_FRACTION, GRAY_MODES, _class_ids, _test_fraction, seeded_split

SPLITS = ("train", "test")


@contextmanager
def _quiet() -> Iterator[Any]:
    """The ``datasets`` module with its progress bars off (restored afterwards); a one-line error without it."""
    try:
        import datasets
    except ImportError:
        raise OblivioError("Hugging Face data needs the datasets package: pip install 'oblivio[hf]'") from None
    was = datasets.are_progress_bars_disabled()
    datasets.disable_progress_bars()
    try:
        yield datasets
    finally:
        if not was:
            datasets.enable_progress_bars()


def _first_line(e: Exception) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0][:200]


def _column(ds, column: str, fmt: str | None = None):
    """Every value of one column (only that column decoded): a list, or a NumPy / Arrow array for ``fmt``."""
    return ds.select_columns([column]).with_format(fmt)[:][column]


def _columns(ds) -> str:
    return ", ".join(ds.column_names)[:200] or "none"


# ---------------------------------------------------------------- labels


def _labels(parts: dict, column: str, source: str) -> tuple[dict[str, np.ndarray], list[str]]:
    """Class ids per part and the class names: a ClassLabel's own, else strings/integers ranked as csv does."""
    from datasets import ClassLabel, Value

    feature = parts[next(iter(parts))].features[column]
    if isinstance(feature, ClassLabel):
        names = [str(n) for n in feature.names]
        ids = {}
        for part, ds in parts.items():
            y = _column(ds, column, "numpy")
            bad = np.nonzero((y < 0) | (y >= len(names)))[0]
            if len(bad):
                raise OblivioError(f"{source}: row {bad[0]} of {part}: label {int(y[bad[0]])} is not one of the "
                                   f"{len(names)} classes of column {column!r} (an unlabelled row?)")
            ids[part] = y.astype(np.int64)
        return ids, names
    kind = feature.dtype if isinstance(feature, Value) else type(feature).__name__
    if not (isinstance(feature, Value) and (kind in ("string", "large_string", "bool") or "int" in kind)):
        raise OblivioError(f"{source}: label column {column!r} holds {kind} values; labels must be class names, "
                           f"integers or a ClassLabel")
    values = {}
    for part, ds in parts.items():
        raw = _column(ds, column, "arrow")
        if raw.null_count:
            row = int(np.nonzero(raw.is_null().to_numpy(zero_copy_only=False))[0][0])
            raise OblivioError(f"{source}: row {row} of {part}: empty label in column {column!r}")
        values[part] = [str(v) for v in raw.to_pylist()]
    y, names = _class_ids([v for part in parts for v in values[part]])
    ids, start = {}, 0
    for part in parts:
        ids[part], start = y[start:start + len(values[part])], start + len(values[part])
    return ids, names


# ---------------------------------------------------------------- inputs


def _image_column(ds, image: str | None, label: str, source: str) -> str | None:
    """The image column: the one named, else the one of ``Image`` feature (None: tabular data)."""
    from datasets import Image

    if image is not None:
        image = str(image)
        if image not in ds.column_names:
            raise OblivioError(f"{source}: no image column {image!r}; its columns: {_columns(ds)}")
        if image == label:
            raise OblivioError(f"{source}: column {image!r} cannot be both the image and the label column")
        return image
    found = [c for c, f in ds.features.items() if isinstance(f, Image) and c != label]
    if len(found) > 1:
        raise OblivioError(f"{source}: {len(found)} image columns ({', '.join(found)}); choose one with "
                           f"--data-option image=COLUMN")
    return found[0] if found else None


def _pil_images(parts: dict, column: str, source: str) -> np.ndarray:
    """The PIL images of ``column`` in every part as uint8 (N, C, H, W), one mode (the majority's), one size."""
    images = [(part, i, im) for part, ds in parts.items() for i, im in enumerate(_column(ds, column))]
    first = images[0]
    other = next((x for x in images if x[2] is None or x[2].size != first[2].size), None)
    if other is not None and other[2] is None:
        raise OblivioError(f"{source}: row {other[1]} of {other[0]}: no image in column {column!r}")
    if other is not None:
        (p0, i0, a), (p1, i1, b) = first, other
        raise OblivioError(f"{source}: images differ in size: row {i0} of {p0} is {a.size[0]}x{a.size[1]}, row {i1} "
                           f"of {p1} is {b.size[0]}x{b.size[1]}; resize them to one size first")
    gray = sum(im.mode in GRAY_MODES for _, _, im in images)
    mode = "L" if gray > len(images) - gray else "RGB"
    w, h = first[2].size
    out = np.empty((len(images), 1 if mode == "L" else 3, h, w), dtype=np.uint8)
    for n, (_, _, im) in enumerate(images):
        a = np.asarray(im.convert(mode))
        out[n] = a[None] if mode == "L" else a.transpose(2, 0, 1)
    return out


def _innermost_dtype(feature) -> str:
    while not hasattr(feature, "dtype") and hasattr(feature, "feature"):
        feature = feature.feature
    return str(getattr(feature, "dtype", "unknown"))


def _array_images(parts: dict, column: str, source: str) -> tuple[np.ndarray, float]:
    """Arrays of ``column`` as (N, C, H, W) and their scale (255 for uint8, else 1)."""
    arrays = []
    for part, ds in parts.items():
        a = _column(ds, column, "numpy")
        shapes = [np.shape(v) for v in a] if a.dtype == object else []
        i = next((i for i, s in enumerate(shapes) if s != shapes[0]), None)
        if i is not None:  # ragged: rows of different shapes
            raise OblivioError(f"{source}: arrays in column {column!r} differ in shape: row 0 of {part} is "
                               f"{shapes[0]}, row {i} is {shapes[i]}; give one shape")
        if a.dtype.kind not in "biuf":
            raise OblivioError(f"{source}: column {column!r} holds {_innermost_dtype(ds.features[column])} "
                               f"values, not images or numeric arrays")
        arrays.append(a)
    shapes = {a.shape[1:] for a in arrays}
    if len(shapes) > 1:
        raise OblivioError(f"{source}: arrays in column {column!r} differ in shape between train and test: "
                           f"{' and '.join(str(s) for s in shapes)}")
    x = np.concatenate(arrays)
    if x.ndim == 2:  # flat vectors
        x = x[:, None, None, :]
    elif x.ndim == 3:  # (H, W)
        x = x[:, None]
    elif x.ndim == 4 and x.shape[-1] in (1, 3, 4) and x.shape[1] not in (1, 3):  # (H, W, C), else (C, H, W)
        x = x.transpose(0, 3, 1, 2)
    elif x.ndim != 4:
        raise OblivioError(f"{source}: column {column!r} holds arrays of shape {x.shape[1:]}; expected (H, W), "
                           f"(H, W, C), (C, H, W) or flat (D,)")
    scale = 255.0 if _innermost_dtype(parts[next(iter(parts))].features[column]) == "uint8" else 1.0
    return x, scale


def _table(parts: dict, label: str, source: str) -> np.ndarray:
    """Every column but ``label`` as numeric features, (N, 1, 1, D) float32."""
    from datasets import Value

    ds = parts[next(iter(parts))]
    columns = [c for c in ds.column_names if c != label]
    if not columns:
        raise OblivioError(f"{source}: no feature columns besides the label column {label!r}")
    for c in columns:
        f = ds.features[c]
        kind = f.dtype if isinstance(f, Value) else type(f).__name__
        if not (isinstance(f, Value) and (kind == "bool" or "int" in kind or "float" in kind)):
            raise OblivioError(f"{source}: column {c!r} holds {kind} values, not numbers; tabular features must be "
                               f"numeric (or name an image or array column: --data-option image=COLUMN)")
    out = []
    for part, d in parts.items():
        batch = d.select_columns(columns).with_format("arrow")[:]
        cols = []
        for c in columns:
            if batch[c].null_count:
                row = int(np.nonzero(batch[c].is_null().to_numpy(zero_copy_only=False))[0][0])
                raise OblivioError(f"{source}: row {row} of {part}, column {c!r}: missing value")
            v = batch[c].to_numpy(zero_copy_only=False).astype(np.float32)
            bad = np.nonzero(~np.isfinite(v))[0]
            if len(bad):
                raise OblivioError(f"{source}: row {bad[0]} of {part}, column {c!r}: {v[bad[0]]} is not a finite "
                                   f"number")
            cols.append(v)
        out.append(np.stack(cols, axis=1))
    return np.concatenate(out)[:, None, None, :]


# ---------------------------------------------------------------- the common path


def _build(parts: dict, name: str, source: str, image: str | None, label: str,
           test_fraction: float | None) -> Dataset:
    """A Dataset from ``{"train": ds, "test": ds}`` (the split) or ``{"all": ds}`` (cut by a seeded split)."""
    split_given = "test" in parts
    if split_given and test_fraction is not None:
        raise OblivioError(f"{source}: test_fraction does not apply, its train and test splits are the split")
    fraction = None if split_given else _test_fraction(
        DEFAULT_TEST_FRACTION if test_fraction is None else test_fraction, source)
    first = parts[next(iter(parts))]
    for part, ds in parts.items():
        if ds.features != first.features:
            raise OblivioError(f"{source}: the train and test splits have different columns or types "
                               f"({_columns(first)} / {_columns(ds)})")
        if len(ds) == 0:
            raise OblivioError(f"{source}: the {part} split is empty" if split_given else f"{source}: no rows")
    label = str(label)
    if label not in first.column_names:
        raise OblivioError(f"{source}: no label column {label!r}; its columns: {_columns(first)}; name it with "
                           f"--data-option label=COLUMN")
    column = _image_column(first, image, label, source)
    ids, names = _labels(parts, label, source)
    y = np.concatenate([ids[p] for p in parts])
    if len(names) < 2:
        raise OblivioError(f"{source}: one class ({names[0]!r}) in column {label!r}; a classifier needs at least 2")
    from datasets import Image

    if column is None:
        x, scale = _table(parts, label, source), 1.0
    elif isinstance(first.features[column], Image):
        x, scale = _pil_images(parts, column, source), 255.0
    else:
        x, scale = _array_images(parts, column, source)
    if split_given:
        n = len(parts["train"])
        train, test = np.arange(n), np.arange(n, len(y))
    else:
        train, test = seeded_split(y, names, fraction, source, what="rows")
    info = DatasetInfo(name, len(names), tuple(x.shape[1:]), class_names=tuple(names))
    return _checked(info, x[train], y[train], x[test], y[test], scale, source)


def _pick(splits: dict, source: str) -> dict:
    """``{"train", "test"}`` when both exist, else ``{"all": train}`` or the one split (others named in errors)."""
    if all(s in splits for s in SPLITS):
        return {s: splits[s] for s in SPLITS}
    if "train" in splits:
        return {"all": splits["train"]}
    if len(splits) == 1:
        return {"all": next(iter(splits.values()))}
    raise OblivioError(f"{source}: splits {', '.join(sorted(splits)) or '(none)'} but no 'train' split; "
                       f"name the training split train (and the test split test)")


def _folder(root, dataset: str, what: str) -> Path:
    if root is None:
        raise OblivioError(f"{dataset} needs --data-dir {what}")
    path = Path(root)
    if not path.exists():
        raise OblivioError(f"{dataset}: {path} not found")
    return path


def _empty_split(directory: Path) -> str | None:
    """The name of a split ``save_to_disk`` wrote without data files ("" for a lone Dataset), else None."""
    for state in sorted(directory.glob("*/state.json")) + [directory / "state.json"]:
        try:
            if json.loads(state.read_text()).get("_data_files") == []:
                return state.parent.name if state.parent != directory else ""
        except (OSError, ValueError, AttributeError):
            continue
    return None


@register_dataset("hf-disk")
def load_hf_disk(root=None, image: str | None = None, label: str = "label",
                 test_fraction: float | None = None) -> Dataset:
    """A folder written by ``datasets.Dataset.save_to_disk`` or ``DatasetDict.save_to_disk``.

    ``image``: the image (or array) column (default: the one ``Image`` column, else tabular features);
    ``label``: the label column; ``test_fraction``: the seeded test part without train/test splits.
    """
    directory = _folder(root, "hf-disk", "DIR (a folder written by Dataset.save_to_disk)")
    source = str(directory)
    if not directory.is_dir():
        raise OblivioError(f"{directory} is not a folder; hf-disk needs a folder written by save_to_disk")
    with _quiet() as datasets:
        try:
            loaded = datasets.load_from_disk(str(directory))
        except FileNotFoundError:
            raise OblivioError(f"{directory} is not a datasets folder: no dataset_info.json (Dataset.save_to_disk) "
                               f"or dataset_dict.json (DatasetDict.save_to_disk)") from None
        except Exception as e:  # noqa: BLE001 - corrupt Arrow files or JSON: pyarrow and datasets raise many types
            empty = _empty_split(directory)
            if empty is not None:  # datasets cannot load a split saved without rows
                raise OblivioError(f"{directory}: the {empty} split is empty" if empty else
                                   f"{directory}: no rows") from None
            raise OblivioError(f"{directory}: cannot read the datasets folder ({_first_line(e)})") from None
        splits = dict(loaded) if isinstance(loaded, datasets.DatasetDict) else {"all": loaded}
        return _build(_pick(splits, source), directory.name or "hf-disk", source, image, label, test_fraction)


def _split_of(file: Path, root: Path) -> str | None:
    """``train``/``test`` for a Parquet file named ``train*``/``test*`` or lying in a ``train``/``test`` folder."""
    parts = file.relative_to(root).parts if file != root else (file.name,)
    for s in SPLITS:
        if file.name.startswith(s) or s in parts[:-1]:
            return s
    return None


def _read_parquet(files: list[Path], source: str):
    """The rows of ``files`` as one in-memory ``datasets.Dataset`` (features from the files' metadata)."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from datasets import Dataset as HFDataset, Image

    tables = []
    for f in files:
        try:
            tables.append(pq.read_table(f))
        except (pa.ArrowException, OSError) as e:
            raise OblivioError(f"{f}: not a readable Parquet file ({_first_line(e)})") from None
    other = next((i for i, t in enumerate(tables) if t.schema.remove_metadata() != tables[0].schema.remove_metadata()),
                 None)
    if other is not None:
        a, b = (", ".join(tables[i].column_names)[:100] for i in (0, other))
        raise OblivioError(f"{source}: {files[0].name} and {files[other].name} have different columns or types "
                           f"({a} / {b})")
    table = pa.concat_tables([t.replace_schema_metadata(tables[0].schema.metadata) for t in tables])
    try:
        ds = HFDataset(table)
    except Exception as e:  # noqa: BLE001 - malformed feature metadata in the file
        raise OblivioError(f"{source}: cannot read its columns ({_first_line(e)})") from None
    for c, f in ds.features.items():  # image structs written without datasets' metadata (pandas, polars)
        if isinstance(f, dict) and set(f) == {"bytes", "path"}:
            ds = ds.cast_column(c, Image())
    return ds


@register_dataset("parquet")
def load_parquet(root=None, image: str | None = None, label: str = "label",
                 test_fraction: float | None = None) -> Dataset:
    """One Parquet file, or a folder of them (``train*``/``test*`` files, or ``train/``/``test/`` folders, split).

    Options as ``hf-disk``'s: ``image``, ``label``, ``test_fraction``.
    """
    path = _folder(root, "parquet", "FILE.parquet or a folder of .parquet files")
    source = str(path)
    if path.is_dir():
        files = sorted(f for f in path.rglob("*.parquet")
                       if not any(p.startswith(".") for p in f.relative_to(path).parts))
        if not files:
            raise OblivioError(f"{path}: no .parquet files in the folder")
        by_split: dict[str, list[Path]] = {}
        for f in files:
            by_split.setdefault(_split_of(f, path) or "other", []).append(f)
        if "train" in by_split and "test" in by_split:
            groups = {s: by_split[s] for s in SPLITS}
        else:
            groups = {"all": by_split.get("train") or files}
    else:
        groups = {"all": [path]}
    with _quiet():
        parts = {s: _read_parquet(fs, source) for s, fs in groups.items()}
        return _build(parts, path.stem if path.is_file() else path.name or "parquet", source, image, label,
                      test_fraction)

