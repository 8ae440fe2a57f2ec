"""Ray executor: a tiny digits grid and LiRA shadows on a local 2-CPU Ray give the serial numbers; resume works
across modes; failed tasks and cells are reported while the rest goes on."""
from __future__ import annotations

import os
import shutil
from dataclasses import replace

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

import oblivio.bench.runner as runner
from oblivio import TrainConfig, load_dataset
from oblivio.audit import LiraConfig, train_population, train_shadows
from oblivio.bench import parse_config, read_csv, run_benchmark
from oblivio.cli import app
from oblivio.errors import OblivioError
from oblivio.parallel import RayExecutor, SerialExecutor, Task, TaskFailed
from oblivio.tune import tune

ray = pytest.importorskip("ray")

TINY = {
    "name": "tiny-ray",
    "dataset": {"name": "digits"},
    "model": "mlp",
    "train": {"epochs": 3},
    "seeds": [0],
    "threads": 1,
    "scenarios": {"random": {"fraction": 0.1}, "backdoor": {"fraction": 0.1, "target": 0}},
    "methods": [{"dm": {"max_steps": 20}}, "ssd", {"ft": {"epochs": 1}}],
    "sequential": {"requests": 2, "fraction": 0.02, "methods": ["ssd"], "seeds": [0]},
    "tune": {"trials": 2, "methods": ["ft"]},
}


@pytest.fixture(scope="module")
def local_ray():
    """A local Ray with 2 CPUs for this module (stopped afterwards)."""
    if ray.is_initialized():
        ray.shutdown()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, object_store_memory=200 * 1024**2)
    yield RayExecutor()
    ray.shutdown()


def _numbers(rows: list[dict]) -> list[tuple]:
    """Identity and metrics of each row, exactly as written to the CSV."""
    keys = ("UA", "RA", "TA", "MIA", "AUC", "ASR")
    return [(r["scenario"] if "scenario" in r else r.get("step"), r["method"], r["seed"],
             *(r.get(k) for k in keys if k in r)) for r in rows]


@pytest.fixture(scope="module")
def both_runs(local_ray, tmp_path_factory):
    """The tiny grid run serially and on Ray, each into a fresh output dir."""
    root = tmp_path_factory.mktemp("ray")
    cfg = parse_config(TINY)
    serial = run_benchmark(cfg, root / "serial", progress=False)
    on_ray = run_benchmark(cfg, root / "ray", progress=False, executor=local_ray)
    return cfg, root, serial, on_ray


def test_ray_grid_gives_the_serial_numbers(both_runs):
    cfg, root, serial, on_ray = both_runs
    assert not serial.errors and not on_ray.errors
    assert [t["options"] for t in serial.tuning] == [t["options"] for t in on_ray.tuning]  # tuning tasks too
    assert on_ray.header["executor"].startswith("ray") and serial.header["executor"] == "serial"
    assert on_ray.header["cells_computed"] == serial.header["cells_computed"] == runner.count_cells(cfg) == 20
    for name in ("runs.csv", "sequential_runs.csv"):
        a, b = read_csv(root / "serial" / name), read_csv(root / "ray" / name)
        assert len(a) == len(b) > 0 and _numbers(a) == _numbers(b)
    # one original per poisoning (clean, backdoor), shared by the cells that start from it
    assert len(list((root / "ray" / "models").glob("*.safetensors"))) == len(
        list((root / "serial" / "models").glob("*.safetensors")))


def test_population_members_on_ray_give_the_serial_numbers(local_ray, tmp_path):
    cfg = parse_config(TINY | {"population": 3, "scenarios": {"random": {"fraction": 0.1}}, "methods": ["ssd"],
                               "sequential": None, "tune": None})
    serial = run_benchmark(cfg, tmp_path / "serial", progress=False)
    on_ray = run_benchmark(cfg, tmp_path / "ray", progress=False, executor=local_ray)
    assert on_ray.header["cells_computed"] == serial.header["cells_computed"] == 4 * 3
    a, b = read_csv(tmp_path / "serial" / "runs.csv"), read_csv(tmp_path / "ray" / "runs.csv")
    assert [(r["member"], *n) for r, n in zip(a, _numbers(a))] == [(r["member"], *n) for r, n in zip(b, _numbers(b))]
    assert serial.population == on_ray.population and {r["method"] for r in serial.population} >= {"ssd"}


def test_resume_across_modes(both_runs, local_ray, monkeypatch):
    cfg, root, serial, _ = both_runs
    again = run_benchmark(cfg, root / "serial", progress=False, executor=local_ray)  # Ray resumes a serial run
    assert again.header["cells_computed"] == 0 and again.header["cells_cached"] == 20

    def refuse(*args, **kwargs):
        raise AssertionError("a cell finished on Ray was recomputed")

    monkeypatch.setattr(runner, "unlearn", refuse)
    monkeypatch.setattr(runner, "train", refuse)
    back = run_benchmark(cfg, root / "ray", progress=False)  # and a serial run resumes a Ray one
    assert back.header["cells_computed"] == 0 and _numbers(back.runs) == _numbers(serial.runs)


def test_cached_cells_need_no_original_model(both_runs, tmp_path, monkeypatch):
    """Resuming a run whose models were deleted (cells kept) neither retrains nor loads any model."""
    cfg, root, serial, _ = both_runs
    shutil.copytree(root / "ray", tmp_path / "out")
    shutil.rmtree(tmp_path / "out" / "models")

    def refuse(*args, **kwargs):
        raise AssertionError("a model was rebuilt although every cell is cached")

    monkeypatch.setattr(runner, "unlearn", refuse)
    monkeypatch.setattr(runner, "train", refuse)
    again = run_benchmark(replace(cfg, tune=None), tmp_path / "out", progress=False)  # (tuning has its own models)
    assert again.header["cells_computed"] == 0
    assert _numbers(again.runs) == _numbers([r for r in serial.runs if "tuned" not in r["method"]])
    assert not (tmp_path / "out" / "models").exists()


def test_failed_cell_on_a_worker_is_reported_and_the_grid_goes_on(local_ray, tmp_path):
    # class 42 does not exist in digits: every cell of that scenario fails in its worker, the rest runs
    cfg = parse_config(TINY | {"seeds": [0], "methods": ["ssd"], "sequential": None, "tune": None,
                               "scenarios": {"random": {"fraction": 0.1}, "class": {"classes": [42]}}})
    result = run_benchmark(cfg, tmp_path, progress=False, executor=local_ray)
    assert [(r["scenario"], r["method"], r["error"]) for r in result.errors] == [
        ("class", m, "class scenario: unknown class 42; digits has classes 0..9")
        for m in ("original", "retrain", "retrain (other seed)", "ssd")]
    assert [r["method"] for r in result.runs if r["scenario"] == "random" and not r.get("error")] == [
        "original", "retrain", "retrain (other seed)", "ssd"]


def test_failed_job_becomes_error_rows(tmp_path, monkeypatch):
    """A job that fails as a whole (here: serially; on Ray, e.g. a dead worker) gives one error row per cell it owed."""
    real = runner._Runner.run

    def run(self, job):
        if job.kind == "chain":
            raise RuntimeError("worker lost")
        return real(self, job)

    monkeypatch.setattr(runner._Runner, "run", run)
    cfg = parse_config(TINY | {"seeds": [0], "tune": None, "scenarios": {"random": {"fraction": 0.1}}})
    result = run_benchmark(cfg, tmp_path, progress=False)
    failed = [(int(r["step"]), r["method"], r["error"]) for r in result.errors]
    assert failed == [(1, "ssd", "RuntimeError: worker lost"), (2, "ssd", "RuntimeError: worker lost")]
    assert not [r for r in result.runs if r.get("error")]


@pytest.mark.parametrize("make", [SerialExecutor, None], ids=["serial", "ray"])
def test_executor_reports_failed_tasks_and_runs_the_rest(make, local_ray):
    def _square_or_fail(x: int) -> int:  # defined here so Ray ships it by value
        if x == 2:
            raise OblivioError("two is refused")
        if x == 3:
            os._exit(1)  # the worker process dies
        return x * x

    executor = make() if make else RayExecutor(max_retries=0)
    values = [0, 1, 2, 5] if make else [0, 1, 2, 3, 5]  # a dead worker only on Ray (it would end pytest)
    tasks = [Task((v,)) for v in values] + [Task((4,), after=(2,))]
    seen = []
    out = executor.map(_square_or_fail, tasks, lambda i, r: seen.append(i))
    assert sorted(seen) == list(range(len(tasks)))
    assert out[:2] == [0, 1] and out[-2] == 25
    assert isinstance(out[2], TaskFailed) and out[2].error == "two is refused"
    assert isinstance(out[-1], TaskFailed) and "two is refused" in out[-1].error  # waited on a failed task
    if not make:
        assert isinstance(out[3], TaskFailed)


def _one_thread(fn, *args, **kwargs):
    """``fn(...)`` with as many torch threads as a Ray worker with one CPU (so numbers match the workers')."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return fn(*args, **kwargs)
    finally:
        torch.set_num_threads(threads)


def test_lira_shadows_on_ray_equal_serial(local_ray, splits):
    split = splits["random"]
    config = LiraConfig(train=TrainConfig(epochs=3))
    serial = _one_thread(train_shadows, split, 4, config, seed=5)
    finished = []
    parallel = train_shadows(split, 4, config, seed=5, executor=local_ray, on_done=lambda k, r: finished.append(k))
    assert sorted(finished) == [0, 1, 2, 3]
    for name in ("mu_forget", "sigma_forget", "mu_reference", "sigma_reference"):
        np.testing.assert_array_equal(getattr(serial, name), getattr(parallel, name))


def test_audit_population_on_ray_equals_serial(local_ray, splits):
    """``audit --population --ray``: the retrained members train as Ray tasks and give the serial phis exactly."""
    split, config = splits["random"], LiraConfig(train=TrainConfig(epochs=3))
    serial = _one_thread(train_population, split, 3, config, seed=5)
    finished: list[int] = []
    parallel = train_population(split, 3, config, seed=5, executor=local_ray, on_done=lambda m, r: finished.append(m))
    assert sorted(finished) == [0, 1, 2] and parallel.seeds == serial.seeds
    np.testing.assert_array_equal(serial.phi_forget, parallel.phi_forget)
    np.testing.assert_array_equal(serial.phi_reference, parallel.phi_reference)


def test_tune_trials_in_parallel_share_one_study(local_ray, tmp_path):
    cfg = parse_config(TINY)
    data = load_dataset("digits")
    serial = tune(cfg, "ft", "random", 1, study=tmp_path / "serial.db", data=data)
    rows: list[dict] = []
    parallel = tune(cfg, "ft", "random", 4, study=tmp_path / "ray.db", data=data, executor=local_ray,
                    progress=rows.append)
    assert parallel.ran == 4 and sorted(r["number"] for r in rows) == [0, 1, 2, 3]
    assert [(t["number"], t["state"]) for t in parallel.trials] == [(n, "COMPLETE") for n in range(4)]
    assert (parallel.trials[0]["params"], parallel.trials[0]["value"]) == (serial.trials[0]["params"],
                                                                           serial.trials[0]["value"])  # the defaults
    again = tune(cfg, "ft", "random", 4, study=tmp_path / "ray.db", data=data, executor=local_ray)
    assert again.ran == 0 and again.trials == parallel.trials


def test_cli_ray_options(local_ray, tmp_path):
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(TINY | {"seeds": [1], "sequential": None, "methods": ["ssd"], "tune": None,
                                             "ray": {"gpus_per_task": 0}}))
    result = CliRunner().invoke(app, ["bench", "-c", str(config), "--out", str(tmp_path / "out"), "--no-progress",
                                      "--ray"])
    assert result.exit_code == 0, result.output
    assert "executor: ray" in (tmp_path / "out" / "results.md").read_text()
    tuned = CliRunner().invoke(app, ["tune", "-c", str(config), "-m", "ssd", "-s", "random", "-n", "2",
                                     "--study", str(tmp_path / "study.db"), "--ray"])
    assert tuned.exit_code == 0, tuned.output
    assert "trial 0:" in tuned.output and "trial 1:" in tuned.output and "best Avg. Gap" in tuned.output
    audit = CliRunner().invoke(app, ["audit", "--checkpoint", str(tmp_path / "none.safetensors"), "--ray"])
    assert audit.exit_code == 2 and "--lira-shadows" in audit.output
    bad = parse_config  # a bad ray section is refused like any other config key
    with pytest.raises(OblivioError, match="ray"):
        bad(TINY | {"ray": {"gpus": 1}})
