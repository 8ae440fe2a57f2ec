"""What the ledger accepts: bounds shared by the HTTP API's schemas and the CLI/Python entry points.

Integers are bounded by the database's Integer columns (int4 on PostgreSQL), so no id, index or
version number can overflow a column. External references use a small documented character set,
so they never need escaping in a URL path, a terminal or a file name. Free text (the reason) may
hold any character but NUL and other control characters besides tab and newline.
"""
from __future__ import annotations

import re
from collections import Counter
from typing import Sequence

from ..errors import OblivioError

MAX_INT = 2**31 - 1  # PostgreSQL int4: ids, model versions, sample indices, classes
MAX_REF = 200
MAX_REASON = 2000
MAX_INDICES = 10_000  # samples named by one request; larger deletions are several requests
MAX_CLASSES = 1_000
REF_CHARS = "letters A-Z a-z, digits and . _ - : @ +"
REF_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:@+-]{0,199}$"
TEXT_PATTERN = r"^[^\x00-\x08\x0b\x0c\x0e-\x1f\x7f]*$"  # no NUL / control characters (tab, LF, CR allowed)

_REF = re.compile(REF_PATTERN)
_TEXT = re.compile(TEXT_PATTERN)


def check_ref(external_ref: str | None) -> str:
    """The external reference, stripped; an error unless it is 1-200 characters of ``REF_CHARS`` starting with a letter or digit."""
    ref = (external_ref or "").strip()
    if not ref:
        raise OblivioError("a request needs an external reference (e.g. your ticket id)")
    if len(ref) > MAX_REF:
        raise OblivioError(f"external reference is longer than {MAX_REF} characters")
    if not _REF.fullmatch(ref):
        raise OblivioError(f"external reference {ascii(ref)[:60]} has characters outside {REF_CHARS} "
                           "(or does not start with a letter or digit)")
    return ref


def check_text(value: str | None, what: str, limit: int = MAX_REASON) -> str | None:
    if value is None:
        return None
    if len(value) > limit:
        raise OblivioError(f"{what} is longer than {limit} characters")
    if not _TEXT.fullmatch(value):
        raise OblivioError(f"{what} contains NUL or control characters")
    return value


def check_ints(values: Sequence[int], what: str, limit: int) -> list[int]:
    """``values`` as ints in [0, MAX_INT], at most ``limit`` of them, without duplicates (linear time)."""
    if len(values) > limit:
        raise OblivioError(f"at most {limit} {what} per request, got {len(values)}")
    out = []
    for v in values:
        if isinstance(v, bool) or not isinstance(v, int):
            raise OblivioError(f"{what} must be integers, got {v!r}"[:200])
        if not 0 <= v <= MAX_INT:
            raise OblivioError(f"{what} out of range: {v} (they lie in 0..{MAX_INT})")
        out.append(int(v))
    dup = sorted(v for v, n in Counter(out).items() if n > 1)
    if dup:
        raise OblivioError(f"duplicated {what} {dup[:5]}")
    return out
