"""Validation of every dataset entering oblivio (loaders, ``from_arrays``, ``.npz`` files).

One call, ``validate_arrays``, checks a train/test pair of image and label arrays before any
tensor is built: non-empty, matching x/y lengths, image shapes consistent between train and
test, finite pixel values, integer labels (integral floats are accepted; fractional floats,
strings, booleans and objects are refused), labels in ``[0, num_classes)``. Errors are one line
naming the source (file), the array key and the first bad index.
"""
from __future__ import annotations

from typing import Mapping

import numpy as np

from .errors import OblivioError

IMAGE_NDIMS = (2, 3, 4)  # flat (N, D), grayscale (N, H, W), or (N, C, H, W)


def _where(source: str | None, key: str) -> str:
    return f"{source}: {key}" if source else key


def _first(mask: np.ndarray) -> int:
    """Index (along the first axis) of the first sample where ``mask`` is true."""
    flat = mask.reshape(len(mask), -1).any(axis=1) if mask.ndim > 1 else mask
    return int(np.argmax(flat))


def check_images(x, key: str, source: str | None = None) -> np.ndarray:
    """``x`` as a float array of shape (N, ...) with N >= 1 and only finite values, or a one-line error."""
    where = _where(source, key)
    arr = np.asarray(x)
    if arr.dtype.kind not in "biuf":
        raise OblivioError(f"{where}: images must be numbers, got dtype {arr.dtype}")
    if arr.ndim not in IMAGE_NDIMS:
        raise OblivioError(f"{where}: images must have 2, 3 or 4 dimensions (N, ...), got shape {arr.shape}")
    if len(arr) == 0:
        raise OblivioError(f"{where}: no samples (empty array of shape {arr.shape})")
    if arr.dtype.kind == "f":
        bad = ~np.isfinite(arr)
        if bad.any():
            i = _first(bad)
            raise OblivioError(f"{where}: sample {i} has a NaN or infinite value ({int(bad.reshape(len(bad), -1).any(1).sum())} such samples)")
    return arr


def check_labels(y, key: str, source: str | None = None, num_classes: int | None = None) -> np.ndarray:
    """``y`` as an int64 vector, or a one-line error (non-integer, negative or >= ``num_classes``)."""
    where = _where(source, key)
    arr = np.asarray(y)
    if arr.ndim == 2 and arr.shape[1] == 1:
        arr = arr[:, 0]
    if arr.ndim != 1:
        raise OblivioError(f"{where}: labels must be a vector of class indices, got shape {arr.shape}")
    if len(arr) == 0:
        raise OblivioError(f"{where}: no labels (empty array)")
    if arr.dtype.kind == "b" or arr.dtype.kind not in "iuf":
        raise OblivioError(f"{where}: labels must be integer class indices, got dtype {arr.dtype} (e.g. {arr[0]!r} at index 0)")
    if arr.dtype.kind == "f":
        bad = ~np.isfinite(arr) | (arr != np.round(arr))
        if bad.any():
            i = int(np.argmax(bad))
            raise OblivioError(f"{where}: labels must be integers; index {i} holds {arr[i]!r}")
    labels = arr.astype(np.int64)
    neg = labels < 0
    if neg.any():
        i = int(np.argmax(neg))
        raise OblivioError(f"{where}: labels must be >= 0; index {i} holds {labels[i]}")
    if num_classes is not None:
        over = labels >= num_classes
        if over.any():
            i = int(np.argmax(over))
            raise OblivioError(
                f"{where}: label {labels[i]} at index {i} is out of range for {num_classes} classes (0..{num_classes - 1})"
            )
    return labels


def validate_arrays(
    arrays: Mapping[str, tuple[object, object]],
    *,
    source: str | None = None,
    num_classes: int | None = None,
    keys: Mapping[str, tuple[str, str]] | None = None,
) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], int]:
    """Check ``{"train": (x, y), "test": (x, y)}``; return the checked arrays and the class count.

    ``keys`` names each part's arrays for messages (default ``x_<part>``/``y_<part>``). The class
    count is ``num_classes`` when given (every label must be below it), else max label + 1.
    """
    if num_classes is not None and (isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)) or num_classes < 1):
        raise OblivioError(f"{source or 'dataset'}: num_classes must be a positive integer, got {num_classes!r}")
    checked: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for part, (x, y) in arrays.items():
        kx, ky = (keys or {}).get(part, (f"x_{part}", f"y_{part}"))
        xa = check_images(x, kx, source)
        ya = check_labels(y, ky, source, num_classes)
        if len(xa) != len(ya):
            raise OblivioError(f"{_where(source, kx)} has {len(xa)} samples but {ky} has {len(ya)} labels")
        checked[part] = (xa, ya)
    shapes = {part: xa.shape[1:] for part, (xa, _) in checked.items()}
    if len(set(shapes.values())) > 1:
        detail = ", ".join(f"{part} {shape}" for part, shape in shapes.items())
        raise OblivioError(f"{source or 'dataset'}: images differ in shape between parts: {detail}")
    if num_classes is not None:
        return checked, int(num_classes)
    k = max(int(ya.max()) for _, ya in checked.values()) + 1
    present = np.zeros(k, dtype=bool)
    for _, ya in checked.values():
        present[ya] = True
    if not present.all():
        # an inferred class count must not grow from a stray label (a 42 in 10-class data would build 43 classes)
        gap = int(np.argmin(present))
        above = next(c for c in range(gap, k) if present[c])
        for part, (_, ya) in checked.items():
            hit = np.nonzero(ya == above)[0]
            if len(hit):
                ky = (keys or {}).get(part, (f"x_{part}", f"y_{part}"))[1]
                raise OblivioError(
                    f"{_where(source, ky)}: label {above} at index {int(hit[0])} leaves class {gap} without any sample; "
                    f"labels must be 0..K-1 (declare num_classes to allow classes without samples)"
                )
    return checked, k


# -- options: one type-and-range check for every method's Config (and TrainConfig) -------------------

import dataclasses  # noqa: E402 - the option checks below are the module's second concern, kept together
import math  # noqa: E402
import re  # noqa: E402
import types  # noqa: E402
import typing  # noqa: E402
from typing import Any  # noqa: E402

RANGE_KEYS = ("gt", "ge", "lt", "le", "choices")

# Name conventions giving an option its range when its field has no range metadata. Checked in
# order; the first matching pattern wins. Every float must be finite; ints not named here must be
# >= 0 (counts); other floats are only checked for finiteness (dm's threshold=-1 means "never").
CONVENTIONS: tuple[tuple[str, dict], ...] = (
    (r"(^|_)lr$", {"gt": 0}),
    (r"(^|_)batch_size$", {"ge": 1, "le": 1 << 20}),
    (r"^(epochs|steps|max_steps)$", {"ge": 1, "le": 100_000}),
    (r"(^|_)(temperature|T)$", {"gt": 0}),
    (r"(fraction|ratio|share)$", {"ge": 0, "le": 1}),
    (r"^momentum$", {"ge": 0, "lt": 1}),
    (r"(^|_)(weight_decay|weight|reg|dampening)$", {"ge": 0}),
    (r"^optimizer$", {"choices": ("sgd", "adam")}),
)
MAX_COUNT = 10_000_000  # any other integer option: a count no run could use more of
DEFAULT_COUNT_RANGE = {"ge": 0, "le": MAX_COUNT}
MAX_SEED = 2**32 - 1  # numpy's legacy and torch's generators take any seed below this


def check_seed(value: Any, where: str) -> int:
    """``value`` as a seed in 0..2^32-1, or a one-line error naming ``where``."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not 0 <= int(value) <= MAX_SEED:
        raise OblivioError(f"{where} must be an integer from 0 to {MAX_SEED}, got {value!r}")
    return int(value)


class _Bad(Exception):
    """A value that does not fit a type; the message says what was expected."""


def _type_name(tp: Any) -> str:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        return " or ".join("null" if a is type(None) else _type_name(a) for a in args)
    if origin in (tuple, list):
        plural = {int: "integers", float: "numbers", str: "strings", bool: "booleans"}
        return f"a list of {plural.get(args[0], 'values') if args else 'values'}"
    return {int: "an integer", float: "a number", bool: "true or false", str: "a string"}.get(tp, getattr(tp, "__name__", str(tp)))


def _unless_text(value: Any, parse: Any, expected: str) -> Any:
    """``value``, with a string parsed by ``parse``; a bool (an int to Python) or unparsable text is refused."""
    if isinstance(value, bool):
        raise _Bad(expected)
    if isinstance(value, str):
        try:
            return parse(value.strip())
        except ValueError:
            raise _Bad(expected) from None
    return value


def _coerce(value: Any, tp: Any) -> Any:
    """``value`` converted to the annotated type ``tp`` (int <- integral float or numeric string, etc.)."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is Any or tp is typing.Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for a in args:
            if a is not type(None):
                try:
                    return _coerce(value, a)
                except _Bad:
                    pass
        raise _Bad(_type_name(tp))
    if origin in (tuple, list):
        if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
            raise _Bad(_type_name(tp))
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                raise _Bad(f"a list of {len(args)} values")
            try:
                items = [_coerce(v, a) for v, a in zip(value, args)]
            except _Bad:
                raise _Bad(_type_name(tp)) from None
        else:
            try:
                items = [_coerce(v, args[0]) if args else v for v in value]
            except _Bad:
                raise _Bad(_type_name(tp)) from None
        return tuple(items) if origin is tuple else items
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise _Bad("true or false")
    if tp is int:
        value = _unless_text(value, int, "an integer")
        if isinstance(value, (int, np.integer)):
            return int(value)
        if isinstance(value, (float, np.floating)) and math.isfinite(value) and float(value).is_integer():
            return int(value)
        raise _Bad("an integer")
    if tp is float:
        value = _unless_text(value, float, "a number")
        if isinstance(value, (int, float, np.integer, np.floating)):
            if not math.isfinite(float(value)):
                raise _Bad("a finite number")
            return float(value)
        raise _Bad("a number")
    if tp is str:
        if isinstance(value, str):
            return value
        raise _Bad("a string")
    if isinstance(tp, type) and not isinstance(value, tp):
        raise _Bad(_type_name(tp))
    return value


def option_range(field: dataclasses.Field, tp: Any) -> dict:
    """The range of one option: its field metadata (``gt``/``ge``/``lt``/``le``/``choices``), else the name convention."""
    declared = {k: field.metadata[k] for k in RANGE_KEYS if k in field.metadata}
    if declared or field.metadata.get("unchecked"):
        return declared
    for pattern, rule in CONVENTIONS:
        if re.search(pattern, field.name):
            return dict(rule)
    base = [a for a in (typing.get_args(tp) or (tp,)) if a is not type(None)]
    counts = any(a is int or (typing.get_args(a) and typing.get_args(a)[0] is int) for a in base)
    return dict(DEFAULT_COUNT_RANGE) if counts else {}


def _range_error(value: Any, rule: dict) -> str | None:
    if "choices" in rule and value not in rule["choices"]:
        return f"must be one of {', '.join(map(str, rule['choices']))}"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    for key, op, word in (("gt", lambda a, b: a > b, ">"), ("ge", lambda a, b: a >= b, ">="),
                          ("lt", lambda a, b: a < b, "<"), ("le", lambda a, b: a <= b, "<=")):
        if key in rule and rule[key] is not None and not op(value, rule[key]):
            return f"must be {word} {rule[key]}"
    return None


def check_options(owner: str, config_cls: type, values: dict[str, Any]) -> dict[str, Any]:
    """Check and coerce ``values`` (option name -> value) against the dataclass ``config_cls``.

    Types come from the field annotations (an int option refuses 2.5 and "abc" but takes 2.0 and
    "2"; a float refuses NaN/inf; an ``X | None`` option takes null). Ranges come from field
    metadata, e.g. ``field(default=0.5, metadata={"gt": 0, "le": 1})`` or ``{"choices": (...)}``
    (``{"unchecked": True}`` turns the range off), else from the name conventions in
    ``CONVENTIONS``. Errors are one line: ``<owner>: option <name> must be ..., got <value>``.
    """
    fields = {f.name: f for f in dataclasses.fields(config_cls)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise OblivioError(f"{owner} has no option {', '.join(unknown)}; its options are: {', '.join(sorted(fields))}")
    try:
        hints = typing.get_type_hints(config_cls)
    except Exception:  # noqa: BLE001 - unresolvable annotations: check ranges only
        hints = {}
    checked: dict[str, Any] = {}
    for name, value in values.items():
        tp = hints.get(name, Any)
        try:
            coerced = _coerce(value, tp)
        except _Bad as e:
            raise OblivioError(f"{owner}: option {name} must be {e}, got {value!r}") from None
        rule = option_range(fields[name], tp)
        items = coerced if isinstance(coerced, (tuple, list)) else (coerced,)
        for item in items:
            problem = _range_error(item, rule)
            if problem:
                shown = value if len(items) == 1 and not isinstance(coerced, (tuple, list)) else item
                raise OblivioError(f"{owner}: option {name} {problem}, got {shown!r}")
        checked[name] = coerced
    return checked
