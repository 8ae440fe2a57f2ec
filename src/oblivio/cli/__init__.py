"""Command line: ``oblivio <command>``; each command lives in its own module in this package."""
from __future__ import annotations

import importlib
import pkgutil
import sys

from rich.markup import escape

from ..errors import OblivioError
from .app import app, console

for _mod in pkgutil.iter_modules(__path__):
    if _mod.name not in ("app", "__main__"):
        importlib.import_module(f"{__name__}.{_mod.name}")


def main() -> None:
    """Entry point: run the app, turning oblivio errors into one clear line and exit status 2."""
    try:
        app()
    except OblivioError as e:
        console.print(f"[bold red]error:[/] {escape(str(e))}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except OSError as e:  # a full disk, a vanished file: still one line, not a traceback
        where = f" {e.filename}" if getattr(e, "filename", None) else ""
        console.print(f"[bold red]error:[/]{escape(where)} {escape(e.strerror or str(e))}", highlight=False, soft_wrap=True)
        sys.exit(2)


__all__ = ["app", "main"]
