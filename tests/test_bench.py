"""oblivio bench: a tiny digits grid end to end through the CLI, resume from cache, and sequential requests."""
from __future__ import annotations

import pytest
import yaml
from typer.testing import CliRunner

import oblivio.bench.report as runner_report
import oblivio.bench.runner as runner
from oblivio.bench import parse_config, read_csv, run_benchmark
from oblivio.cli import app
from oblivio.errors import OblivioError
from oblivio.verification import NothingForgotten

METRICS = ("UA", "RA", "TA", "MIA", "AUC", "avg_gap", "seconds", "time_ratio")
TINY = {
    "name": "tiny",
    "dataset": {"name": "digits"},
    "model": "mlp",
    "train": {"epochs": 3},
    "seeds": [0],
    "threads": 1,
    "scenarios": {"random": {"fraction": 0.1}},
    "methods": [{"dm": {"max_steps": 20}}, "ssd"],
    "sequential": {"requests": 2, "fraction": 0.02, "methods": ["ssd"]},
}


def _numbers(rows: list[dict]) -> list[tuple]:
    """(method, rounded UA, RA, TA, MIA, AUC) per row, from result rows or CSV strings."""
    return [(r["method"], *(round(float(r[k]), 6) for k in ("UA", "RA", "TA", "MIA", "AUC"))) for r in rows]


@pytest.fixture(scope="module")
def first_run(tmp_path_factory):
    """Run the tiny grid once through the CLI; return (config path, output dir, CLI output)."""
    root = tmp_path_factory.mktemp("bench")
    config = root / "tiny.yaml"
    config.write_text(yaml.safe_dump(TINY))
    out = root / "out"
    result = CliRunner().invoke(app, ["bench", "--config", str(config), "--out", str(out), "--no-progress"])
    assert result.exit_code == 0, result.output
    return config, out, result.output


def test_cli_writes_tables_and_csv_with_original_and_retrain(first_run):
    _, out, output = first_run
    assert "random" in output and "retrain" in output and "config_hash" in output
    rows = read_csv(out / "runs.csv")
    assert [(r["scenario"], r["method"], r["seed"]) for r in rows] == [
        ("random", m, "0") for m in ("original", "retrain", "retrain (other seed)", "dm", "ssd")
    ]
    for r in rows:
        for col in METRICS:
            float(r[col])  # every metric is a number
    retrain = next(r for r in rows if r["method"] == "retrain")
    assert float(retrain["avg_gap"]) == 0.0 and float(retrain["time_ratio"]) == 1.0
    assert float(next(r for r in rows if r["method"] == "original")["UA"]) < float(retrain["UA"]) + 50
    summary = read_csv(out / "summary.csv")
    assert {r["method"]: r["n"] for r in summary} == {"original": "1", "retrain": "1", "retrain (other seed)": "1",
                                                      "dm": "1", "ssd": "1"}
    noise = next(r for r in rows if r["method"] == "retrain (other seed)")
    assert float(noise["avg_gap"]) > 0  # two honest retrains differ: the noise floor is not zero
    md = (out / "results.md").read_text()
    assert "| retrain |" in md and "Avg. Gap" in md and "config_hash" in md and "torch" in md
    assert (out / "runs.csv").read_text().startswith("# benchmark: tiny")


def test_sequential_reports_each_step(first_run):
    _, out, _ = first_run
    rows = read_csv(out / "sequential_runs.csv")
    assert sorted({(r["step"], r["method"]) for r in rows}) == sorted(
        (s, m) for s in ("1", "2") for m in ("original", "retrain", "ssd")
    )
    deleted = {r["step"]: int(r["deleted"]) for r in rows}
    assert deleted["2"] == 2 * deleted["1"] > 0  # disjoint requests accumulate
    assert "sequential" in (out / "results.md").read_text()


def test_second_run_resumes_without_recomputing(first_run, monkeypatch):
    config, out, _ = first_run
    before = {p: p.stat().st_mtime_ns for p in (out / "cells").iterdir()}
    written = read_csv(out / "runs.csv")

    def refuse(*args, **kwargs):
        raise AssertionError("a cached cell was recomputed")

    monkeypatch.setattr(runner, "unlearn", refuse)
    monkeypatch.setattr(runner, "train", refuse)
    again = run_benchmark(config, out, progress=False)
    assert again.header["cells_computed"] == 0 and again.header["cells_cached"] == len(before) == 11
    assert {p: p.stat().st_mtime_ns for p in (out / "cells").iterdir()} == before
    assert _numbers(again.runs) == _numbers(written)


def test_changed_metric_code_remeasures_cached_models(first_run, monkeypatch):
    config, out, _ = first_run
    models = {p: p.stat().st_mtime_ns for p in (out / "models").iterdir()}

    def refuse(*args, **kwargs):
        raise AssertionError("a cached model was trained or unlearned again")

    monkeypatch.setattr(runner, "unlearn", refuse)
    monkeypatch.setattr(runner, "train", refuse)
    monkeypatch.setattr(runner, "code_hash", lambda *objs: "new-metric-code")
    again = run_benchmark(config, out, progress=False)
    assert again.header["cells_computed"] == 11 and not again.errors
    assert {p: p.stat().st_mtime_ns for p in (out / "models").iterdir()} == models


def test_changed_option_recomputes_only_that_cell_and_numbers_are_reproducible(first_run):
    _, out, _ = first_run
    old = read_csv(out / "runs.csv")
    changed = parse_config(TINY | {"methods": [{"dm": {"max_steps": 20}}, {"ssd": {"alpha": 5.0}}],
                                   "sequential": None})
    result = run_benchmark(changed, out, progress=False)
    assert result.header["cells_computed"] == 1  # only ssd with the new option
    fresh = run_benchmark(parse_config(TINY | {"sequential": None}), out, resume=False, progress=False)
    assert fresh.header["cells_cached"] == 0
    assert _numbers(fresh.runs) == _numbers(old)  # same seed, same numbers


def test_failed_cell_is_reported_not_cached_and_run_goes_on(first_run, monkeypatch):
    _, out, _ = first_run
    cells = set((out / "cells").iterdir())

    def broken(*args, **kwargs):
        raise OblivioError("method exploded")

    monkeypatch.setattr(runner, "unlearn", broken)
    result = run_benchmark(parse_config(TINY | {"methods": [{"ssd": {"alpha": 7.0}}], "sequential": None}), out,
                           progress=False)
    assert [(r["method"], r["error"]) for r in result.errors] == [("ssd", "method exploded")]
    assert {r["method"]: r["failed"] for r in result.summary} == {"original": 0, "retrain": 0,
                                                                 "retrain (other seed)": 0, "ssd": 1}
    assert "method exploded" in (out / "results.md").read_text()
    assert set((out / "cells").iterdir()) == cells  # nothing cached for the failed cell


def test_a_result_that_forgot_nothing_is_counted_apart_from_failures(first_run, monkeypatch):
    _, out, _ = first_run

    def refused(*args, **kwargs):
        raise NothingForgotten("method 'ssd' did not change the model: nothing was forgotten")

    monkeypatch.setattr(runner, "unlearn", refused)
    result = run_benchmark(parse_config(TINY | {"methods": [{"ssd": {"alpha": 7.5}}], "sequential": None}), out,
                           progress=False)
    row = next(r for r in result.summary if r["method"] == "ssd")
    assert (row["failed"], row["refused"]) == (0, 1)
    assert "ssd (1 forgot nothing)" in (out / "results.md").read_text()


@pytest.mark.parametrize(
    "change, message",
    [
        ({"methods": ["no-such-method"]}, "unknown unlearning method"),
        ({"methods": [{"ssd": {"no_such_option": 1}}]}, "no option"),
        ({"scenarios": {"random": {"fraction": 2}}}, "fraction"),
        ({"seeds": []}, "seeds"),
        ({"colour": "red"}, "unknown key"),
        ({"sequential": {"requests": 60, "fraction": 0.02}}, "whole pool"),
    ],
)
def test_bad_config_is_refused(change, message):
    with pytest.raises(OblivioError, match=message):
        parse_config(TINY | change)


def test_the_header_names_the_commit_the_run_started_from(first_run, monkeypatch):
    """A checkout that moves during a long run: the header keeps the commit that ran, and says it moved."""
    _, out, _ = first_run
    commits = iter(["aaaaaaa", "bbbbbbb"])
    monkeypatch.setattr(runner, "git_commit", lambda: next(commits))
    monkeypatch.setattr(runner_report, "git_commit", lambda: next(commits))
    result = run_benchmark(parse_config(TINY | {"sequential": None}), out, progress=False)
    assert result.header["git_commit"] == "aaaaaaa" and result.header["git_commit_at_end"] == "bbbbbbb"


def test_changed_training_code_retrains_the_cached_models(first_run, monkeypatch):
    """Model keys carry the training code's hash: a new recipe must not reuse originals trained by the old one."""
    import oblivio.training
    from oblivio.bench import store

    _, out, _ = first_run
    config = parse_config(TINY | {"sequential": None})
    again = run_benchmark(config, out, progress=False)
    assert again.header["cells_computed"] == 0  # everything cached
    real = store.code_hash
    monkeypatch.setattr(store, "code_hash", lambda *objs: "new-recipe" if oblivio.training in objs else real(*objs))
    changed = run_benchmark(config, out, progress=False)
    assert changed.header["cells_computed"] == len(changed.runs)  # original, retrain and methods: all afresh


def test_code_hash_ignores_docstrings_and_comments(tmp_path, monkeypatch):
    """Editing a docstring or a comment changes no result, so it must not invalidate cached cells or studies."""
    import importlib
    import sys

    from oblivio.bench.store import code_hash

    src = tmp_path / "probe_mod.py"
    monkeypatch.syspath_prepend(str(tmp_path))

    def hashed(text: str) -> str:
        src.write_text(text)
        sys.modules.pop("probe_mod", None)
        importlib.invalidate_caches()
        return code_hash(importlib.import_module("probe_mod"))

    base = hashed('"""Doc."""\ndef f(x):\n    """Say."""\n    return x + 1\n')
    assert hashed('"""Other doc."""\n# a comment\ndef f(x):\n    """Say more."""\n    return x + 1  # why\n') == base
    assert hashed('"""Doc."""\ndef f(x):\n    """Say."""\n    return x + 2\n') != base


def test_workers_pay_the_first_optimiser_import_before_any_cell_is_timed():
    """torch imports torch._dynamo (~1 s) when a process builds its first optimiser; a rerun whose first computed cell
    was a method's billed that second to it. The warm-up, run before a worker's first cell, does the import."""
    import subprocess
    import sys

    code = ("import sys; from oblivio.bench.runner import warm_up; assert 'torch._dynamo' not in sys.modules; "
            "warm_up(); assert 'torch._dynamo' in sys.modules")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
