"""Safe file writes: a crash never leaves a half-written checkpoint, report or record.

- ``atomic_path`` / ``atomic_write_text``: one file, written to a hidden temporary name beside it
  and renamed over it in one step.
- ``atomic_files``: several files that belong together (checkpoint weights + sidecar + split,
  audit.json + report.html) committed as a unit through a journal, see ``commit_files``.
- ``output_lock``: an exclusive ``flock`` on ``.<name>.lock`` so two writers of one output fail clearly.
- ``check_writable``: the output location is usable (a writable directory with free space, not
  a directory where a file is expected) -- checked before any long work starts.

Every file is created with the permissions of the user's umask (``tempfile.mkstemp`` alone
would make them 0600).
"""
from __future__ import annotations

import errno
import fcntl
import json
import os
import shutil
import tempfile
import time
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Iterable, Iterator

from .errors import OblivioError

TMP_SUFFIX = ".tmp"
WRITE_CHECK_PREFIX = ".oblivio-write-check."  # the probe ``check_writable`` creates and deletes at once


class OutputLocked(OblivioError):
    """Another process holds the lock of an output (see ``output_lock``)."""

JOURNAL_SUFFIX = ".commit"


def current_umask() -> int:
    """The process umask (read by setting and restoring it)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _chmod_default(path: str | os.PathLike) -> None:
    os.chmod(path, 0o666 & ~current_umask())


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(directory: Path) -> None:
    """Make renames in ``directory`` durable (no-op where directories cannot be opened)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _reason(e: OSError) -> str:
    """A short reader's reason for a failed write."""
    return {errno.ENOSPC: "no space left on the device", errno.EROFS: "read-only file system",
            errno.EACCES: "permission denied", errno.EDQUOT: "disk quota exceeded"}.get(e.errno, e.strerror or str(e))


def _os_error(path: Path, e: OSError) -> OblivioError:
    return OblivioError(f"cannot write {path}: {_reason(e)}")


def _temp_beside(path: Path) -> Path:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TMP_SUFFIX, dir=path.parent)
    os.close(fd)
    _chmod_default(tmp)
    return Path(tmp)


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path`` in one rename."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = _temp_beside(path)
    except OSError as e:
        raise _os_error(path, e) from None
    try:
        yield tmp
        _chmod_default(tmp)
        os.replace(tmp, path)
    except OSError as e:
        raise _os_error(path, e) from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


# -- several files as one unit --------------------------------------------------------------------

def journal_path(first: str | os.PathLike) -> Path:
    """The commit record of a group of files, named after its first file: ``.<name>.commit``."""
    first = Path(first)
    return first.parent / f".{first.name}{JOURNAL_SUFFIX}"


def commit_files(pairs: list[tuple[Path, Path]], journal: Path) -> None:
    """Move each finished temporary file onto its destination, all or none from a reader's view after recovery.

    Protocol: (1) every temp file is complete and fsynced; (2) the journal, listing the
    (temp, destination) pairs, is written atomically -- the commit point; (3) each temp is renamed
    onto its destination; (4) the journal is removed. A crash before (2) leaves the previous files
    untouched (the temps are strays, removed by ``recover_files``); a crash after (2) is rolled
    forward by ``recover_files``, which finishes the renames.
    """
    for tmp, _ in pairs:
        _chmod_default(tmp)  # a writer may have replaced the temp file (e.g. by a rename) with its own mode
        _fsync_file(tmp)
    record = [[tmp.name, dest.name] for tmp, dest in pairs]
    atomic_write_text(journal, json.dumps(record))
    fsync_dir(journal.parent)
    for tmp, dest in pairs:
        os.replace(tmp, dest)
    fsync_dir(journal.parent)
    journal.unlink()


def recover_files(dests: Iterable[str | os.PathLike], journal: Path | None = None) -> bool:
    """Finish an interrupted ``commit_files`` (roll forward) and delete stray temp files of ``dests``.

    Call it only while holding ``output_lock`` for the group (or when no writer can be running).
    Returns True when a commit was rolled forward.
    """
    dests = [Path(d) for d in dests]
    journal = journal or journal_path(dests[0])
    rolled = False
    if journal.is_file():
        try:
            record = json.loads(journal.read_text())
        except (OSError, json.JSONDecodeError):
            record = []  # written atomically, so never partial; unreadable means foreign: drop it
        for tmp_name, dest_name in record:
            tmp = journal.parent / tmp_name
            if tmp.is_file():
                os.replace(tmp, journal.parent / dest_name)
                rolled = True
        fsync_dir(journal.parent)
        journal.unlink()
    strays = [(dest.parent, f".{dest.name}.*{TMP_SUFFIX}") for dest in dests + [journal]]
    strays += [(d, f"{WRITE_CHECK_PREFIX}*{TMP_SUFFIX}") for d in {dest.parent for dest in dests}]  # a killed probe
    for directory, pattern in strays:
        for stray in directory.glob(pattern):
            try:
                stray.unlink()
            except OSError:
                pass
    return rolled


@contextmanager
def atomic_files(paths: Iterable[str | os.PathLike], journal: Path | None = None) -> Iterator[dict[Path, Path]]:
    """Yield ``{destination: temporary path}``; when the block ends without error, commit them as one unit."""
    dests = [Path(p) for p in paths]
    journal = journal or journal_path(dests[0])
    tmps: dict[Path, Path] = {}
    try:
        for dest in dests:
            dest.parent.mkdir(parents=True, exist_ok=True)
            tmps[dest] = _temp_beside(dest)
    except OSError as e:
        for t in tmps.values():
            t.unlink(missing_ok=True)
        raise _os_error(dests[0].parent, e) from None
    try:
        yield tmps
        commit_files([(tmps[d], d) for d in dests], journal)
    except OSError as e:
        raise _os_error(dests[0].parent, e) from None
    finally:
        if not journal.exists():  # committed, or never reached the commit point: drop leftovers
            for t in tmps.values():
                if t.exists():
                    t.unlink()


# -- one writer per output ------------------------------------------------------------------------
# The lock file exists only while held: the holder deletes it before unlocking, and a taker checks
# that the file it locked is still the one at the path (else it locked a deleted file and retries).

_HELD: dict[str, tuple[int, int]] = {}  # lock path -> (fd, depth): re-entrant within one process


def lock_path(path: str | os.PathLike) -> Path:
    path = Path(path)
    return path.parent / f".{path.name}.lock"


def _acquire(lock: Path) -> int | None:
    """One non-blocking try: the locked fd, or None when another process holds ``lock``."""
    for _ in range(100):
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        try:
            same = os.fstat(fd).st_ino == os.stat(lock).st_ino
        except FileNotFoundError:
            same = False
        if same:
            return fd
        os.close(fd)  # the previous holder deleted it while we opened it: take the new file
    return None


def _release(lock: Path, fd: int) -> None:
    try:
        lock.unlink()
    except OSError:
        pass
    fcntl.flock(fd, fcntl.LOCK_UN)
    os.close(fd)


@contextmanager
def output_lock(path: str | os.PathLike, what: str = "output") -> Iterator[None]:
    """Hold an exclusive lock for writing ``path`` (re-entrant in this process); a second process fails clearly."""
    lock = lock_path(path)
    key = str(lock.absolute())
    if key in _HELD:
        fd, depth = _HELD[key]
        _HELD[key] = (fd, depth + 1)
        try:
            yield
        finally:
            fd, depth = _HELD[key]
            _HELD[key] = (fd, depth - 1)
        return
    try:
        lock.parent.mkdir(parents=True, exist_ok=True)
        fd = _acquire(lock)
    except OSError as e:
        raise _os_error(lock, e) from None
    if fd is None:
        raise OutputLocked(
            f"{path} is being written by another oblivio process (lock {lock.name} held); "
            f"wait for it to finish or choose another {what}"
        )
    _HELD[key] = (fd, 1)
    try:
        yield
    finally:
        del _HELD[key]
        _release(lock, fd)


def try_lock(path: str | os.PathLike, wait: float = 0.0) -> int | None:
    """The exclusive lock of ``path`` without blocking (polling up to ``wait`` seconds): an fd, or None."""
    lock = lock_path(path)
    if str(lock.absolute()) in _HELD:
        return None
    deadline = time.monotonic() + wait
    while True:
        try:
            fd = _acquire(lock)
        except OSError:
            return None
        if fd is not None or time.monotonic() >= deadline:
            return fd
        time.sleep(0.05)


def release_lock(fd: int, path: str | os.PathLike) -> None:
    """Release a lock taken with ``try_lock``."""
    _release(lock_path(path), fd)


# -- checks before work ---------------------------------------------------------------------------

def check_writable(path: str | os.PathLike, *, kind: str = "file", need_bytes: int = 0, what: str = "output") -> Path:
    """Refuse, before any work, an output ``path`` that cannot be written.

    ``kind`` "file": ``path`` must not be a directory; "dir": it must not be a file. The nearest
    existing parent must be a writable directory (probed by creating a file there, which also
    catches read-only mounts) with at least ``need_bytes`` free.
    """
    path = Path(path)
    if kind == "file" and path.is_dir():
        raise OblivioError(f"{what} {path} is a directory; give a file path")
    if kind == "dir" and path.exists() and not path.is_dir():
        raise OblivioError(f"{what} {path} is a file; give a directory (it will hold several files)")
    directory = path if kind == "dir" else path.parent
    existing = directory
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise OblivioError(f"{what} {path}: {existing} is a file, not a directory")
    try:
        fd, probe = tempfile.mkstemp(prefix=WRITE_CHECK_PREFIX, suffix=TMP_SUFFIX, dir=existing)
        os.close(fd)
        with suppress(FileNotFoundError):  # a writer's recover_files may have swept it already
            os.unlink(probe)
    except OSError as e:
        raise OblivioError(f"{what} {path}: cannot write in {existing}: "
                           f"{_reason(e)}") from None
    if need_bytes:
        free = shutil.disk_usage(existing).free
        if free < need_bytes:
            raise OblivioError(f"{what} {path}: only {free / 1e6:.1f} MB free in {existing}, "
                               f"about {need_bytes / 1e6:.1f} MB needed")
    return path
