"""What a run leaves on disk, shared by classifier and language-model runs: fault-injection points for the
crash tests, and whether an output checkpoint is this run's complete work (so a resumed run reuses it)."""
from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Callable

from ..errors import OblivioError

CRASH_ENV = "OBLIVIO_LEDGER_CRASH_AT"  # fault injection for tests: scheduled, unlearned, checkpoint, audited, commit


def crash_point(name: str) -> None:
    """Kill this process with SIGKILL if ``$OBLIVIO_LEDGER_CRASH_AT`` names this point (crash tests)."""
    if name in os.environ.get(CRASH_ENV, "").split(","):
        os.kill(os.getpid(), signal.SIGKILL)


def owned_output(path: Path, stamp: dict, stamp_of: Callable[[dict], dict | None],
                 load: Callable[[Path], object]) -> bool | None:
    """True: ``path`` holds this run's complete output; False: none or a torn one (overwrite); None: someone
    else's file. ``stamp_of(sidecar)`` reads the ledger stamp a run wrote; ``load(path)`` must load the output."""
    from ..checkpoint import read_sidecar

    if not path.exists():
        return False
    try:
        meta = read_sidecar(path)
    except OblivioError:
        return False
    if stamp_of(meta) != stamp:
        return None
    try:
        load(path)
    except OblivioError:
        return False
    return True
