"""Command line: ``oblivio <command>``; each command lives in its own module in this package."""
from __future__ import annotations

import importlib
import os
import pkgutil
import sys

from rich.markup import escape

from ..errors import OblivioError
from .app import app, console, err_console, use_threads

for _mod in pkgutil.iter_modules(__path__):
    if _mod.name not in ("app", "__main__"):
        importlib.import_module(f"{__name__}.{_mod.name}")


def main() -> None:
    """Entry point: run the app, turning errors into one clear line on stderr and exit status 2.

    Torch's thread count is set to ``default_threads()`` first (a command's ``--threads`` overrides it).
    Anything unforeseen also ends in one line (``OBLIVIO_DEBUG=1`` shows the traceback instead).
    """
    use_threads(None)
    try:
        app()
    except OblivioError as e:
        _fail(str(e))
    except OSError as e:  # a full disk, a vanished file: still one line, not a traceback
        where = f" {e.filename}:" if getattr(e, "filename", None) else ""
        _fail(f"{where} {e.strerror or e}".strip())
    except (MemoryError, OverflowError) as e:
        _fail(f"too large for this machine ({type(e).__name__}: {_first_line(e)})")
    except Exception as e:  # noqa: BLE001 - the last net: a traceback is not an error message
        if os.environ.get("OBLIVIO_DEBUG"):
            raise
        _fail(f"{type(e).__name__}: {_first_line(e)} (unexpected; OBLIVIO_DEBUG=1 shows the traceback)")


def _first_line(e: Exception) -> str:
    return (str(e).strip().splitlines() or [""])[0]


def _fail(message: str) -> None:
    err_console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    sys.exit(2)


__all__ = ["app", "main"]
