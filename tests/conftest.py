"""Shared fixtures: digits data, one split per scenario and an original MLP per split (trained once per session)."""
from __future__ import annotations

import os
import sys

# pytest-xdist's workers start with COLUMNS=80 and LINES=24 set, and rich fixes a console's size from them when the
# console is made (the CLI's, at import): without them the CLI reads COLUMNS when it prints, as in a plain run, so
# the tests that pass COLUMNS to a command get that width under `-n auto` too.
os.environ.pop("COLUMNS", None)
os.environ.pop("LINES", None)

import pytest  # noqa: E402
import torch  # noqa: E402

from oblivio import Backdoor, ClassForget, RandomSubset, TrainConfig, load_dataset, make_split, train  # noqa: E402

torch.set_num_threads(1)  # small models: one thread is as fast on an idle 2-core machine and far faster on a busy one

SCENARIOS = {
    "random": RandomSubset(fraction=0.1),
    "class": ClassForget((3,)),
    "backdoor": Backdoor(fraction=0.1, target=0),
}


@pytest.fixture(scope="session")
def digits():
    return load_dataset("digits")


@pytest.fixture(scope="session")
def splits(digits):
    """scenario name -> Split on digits with seed 0."""
    return {name: make_split(digits, scenario, seed=0) for name, scenario in SCENARIOS.items()}


_MODELS: dict = {}


@pytest.fixture(scope="session")
def original(splits):
    """A function scenario name -> (original MLP trained on split.train with seed 0); cached for the session."""

    def get(name: str):
        if name not in _MODELS:
            _MODELS[name] = train("mlp", splits[name].train, 10, TrainConfig(seed=0))[0]
        return _MODELS[name]

    return get


@pytest.fixture
def cli(monkeypatch, capsys):
    """Run ``oblivio ARGS`` in-process through ``main`` (one ``error:`` line and exit 2 on bad input) at 80
    columns; returns (exit status, stdout, stderr). The torch thread count is restored afterwards."""
    from oblivio.cli import main

    def run(*args) -> tuple[int, str, str]:
        monkeypatch.setattr(sys, "argv", ["oblivio", *map(str, args)])
        monkeypatch.setenv("COLUMNS", "80")
        threads, code = torch.get_num_threads(), 0
        try:
            main()
        except SystemExit as e:
            code = e.code or 0
        finally:
            torch.set_num_threads(threads)
        out = capsys.readouterr()
        return code, out.out, out.err

    return run
