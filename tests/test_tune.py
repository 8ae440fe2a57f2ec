"""oblivio tune: validation requests, resumable seeded studies, the CLI, and tuned rows in a benchmark (digits)."""
from __future__ import annotations

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from oblivio import load_dataset, make_split
from oblivio.bench import parse_config, read_csv, run_benchmark
from oblivio.cli import app
from oblivio.errors import OblivioError
from oblivio.tune import default_params, tune, validation_split

TINY = {
    "name": "tiny-tune",
    "dataset": {"name": "digits"},
    "model": "mlp",
    "train": {"epochs": 3},
    "seeds": [0],
    "threads": 1,
    "scenarios": {"random": {"fraction": 0.1}, "class": {"classes": [3]}, "backdoor": {"fraction": 0.1, "target": 0}},
    "methods": [{"ft": {"epochs": 1}}, "ga"],
}


@pytest.fixture(scope="module")
def cfg():
    return parse_config(TINY)


@pytest.fixture(scope="module")
def data():
    return load_dataset("digits")


@pytest.mark.parametrize("scenario", ["random", "class", "backdoor"])
def test_validation_request_differs_from_the_evaluated_one(cfg, data, scenario):
    evaluated = make_split(data, cfg.scenario(scenario), 0, cfg.third_party_fraction)
    val, described = validation_split(data, cfg, scenario, 0)
    assert described
    assert len(val.forget_idx) > 0
    assert not np.array_equal(val.forget_idx, evaluated.forget_idx)
    if scenario == "random":
        assert len(val.forget_idx) == len(evaluated.forget_idx)
        assert np.array_equal(val.pool_idx, evaluated.pool_idx)  # same original model
        assert len(np.intersect1d(val.forget_idx, evaluated.forget_idx)) == 0
    elif scenario == "class":
        assert val.forget_classes != evaluated.forget_classes and len(val.forget_classes) == 1
    else:
        assert val.seed != evaluated.seed and val.backdoor_target == evaluated.backdoor_target
    again, _ = validation_split(data, cfg, scenario, 0)
    assert np.array_equal(again.forget_idx, val.forget_idx)


def test_trial_zero_is_the_defaults_and_fixed_options_count(cfg):
    assert default_params("ft", cfg.methods["ft"]) == {"epochs": 1, "lr": 0.05}
    assert set(default_params("salun")) == {"lr", "epochs", "mask_ratio"}


@pytest.fixture(scope="module")
def first(cfg, data, tmp_path_factory):
    root = tmp_path_factory.mktemp("tune")
    result = tune(cfg, "ft", "random", 2, study=root / "study.db", data=data)
    return root, result


def test_tune_runs_the_budget_and_resumes_without_rerunning(cfg, data, first):
    root, result = first
    assert result.ran == 2 and len(result.trials) == 2
    assert result.trials[0]["params"] == {"epochs": 1, "lr": 0.05}  # trial 0: the config's options
    assert result.default_value == result.trials[0]["value"]
    assert result.best_value == min(t["value"] for t in result.trials)
    assert (root / "models").is_dir()
    same = tune(cfg, "ft", "random", 2, study=root / "study.db", data=data)
    assert same.ran == 0 and same.trials == result.trials
    more = tune(cfg, "ft", "random", 3, study=root / "study.db", data=data)
    assert more.ran == 1 and more.trials[:2] == result.trials and len(more.trials) == 3


def test_tune_is_deterministic_for_a_seed(cfg, data, first, tmp_path):
    _, result = first
    fresh = tune(cfg, "ft", "random", 2, study=tmp_path / "other.db", data=data)
    assert [(t["params"], t["value"]) for t in fresh.trials] == [(t["params"], t["value"]) for t in result.trials]


def test_tune_rejects_bad_requests(cfg, data, tmp_path):
    with pytest.raises(OblivioError, match="no scenario"):
        tune(cfg, "ft", "nope", 2, study=tmp_path / "s.db", data=data)
    with pytest.raises(OblivioError, match="unknown unlearning method"):
        tune(cfg, "nope", "random", 2, study=tmp_path / "s.db", data=data)
    with pytest.raises(OblivioError, match="trials"):
        tune(cfg, "ft", "random", 0, study=tmp_path / "s.db", data=data)


def test_cli_tune_prints_best_options_and_bad_input_exits_2(tmp_path):
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(TINY))
    args = ["tune", "--config", str(config), "--method", "ga", "--scenario", "class", "--trials", "2",
            "--study", str(tmp_path / "study.db")]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "best Avg. Gap" in result.output and "--set steps=" in result.output and "class" in result.output
    bad = CliRunner().invoke(app, args[:5] + ["nope"] + args[6:])
    assert bad.exit_code != 0


def test_bench_adds_tuned_rows_with_the_budget_and_header_accuracies(tmp_path):
    doc = TINY | {"scenarios": {"class": {"classes": [3]}}, "tune": {"trials": 2, "methods": ["ga"]}}
    result = run_benchmark(parse_config(doc), tmp_path / "out", progress=False)
    methods = [r["method"] for r in result.summary]
    assert methods == ["original", "retrain", "retrain (other seed)", "ft", "ga", "ga (tuned, 2 trials)"]
    assert (tmp_path / "out" / "tune.db").is_file()
    assert [(t["scenario"], t["method"], t["trials"]) for t in result.tuning] == [("class", "ga", 2)]
    md = (tmp_path / "out" / "results.md").read_text()
    assert "ga (tuned, 2 trials)" in md and "Validation request" in md
    assert "original train" in md and "retrain train (retain)" in md
    original = next(r for r in result.summary if r["method"] == "original")
    assert 0 < original["train_acc_mean"] <= 100
    rows = read_csv(tmp_path / "out" / "runs.csv")
    assert "ga (tuned, 2 trials)" in {r["method"] for r in rows}
    again = run_benchmark(parse_config(doc), tmp_path / "out", progress=False)
    assert again.header["cells_computed"] == 0  # tuning and cells come from the cache


def test_bench_tune_config_is_validated():
    with pytest.raises(OblivioError, match="not in the grid"):
        parse_config(TINY | {"tune": {"trials": 2, "methods": ["salun"]}})
    with pytest.raises(OblivioError, match="trials"):
        parse_config(TINY | {"tune": {"trials": 0}})
    with pytest.raises(OblivioError, match="unknown tune option"):
        parse_config(TINY | {"tune": {"budget": 3}})


def test_bench_reports_a_failed_tuning_and_goes_on(tmp_path, monkeypatch):
    import oblivio.tune

    def broken(*args, **kwargs):
        raise OblivioError("every trial failed")

    monkeypatch.setattr(oblivio.tune, "tune", broken)
    doc = TINY | {"scenarios": {"class": {"classes": [3]}}, "methods": ["ga"], "tune": {"trials": 2}}
    result = run_benchmark(parse_config(doc), tmp_path / "out", progress=False)
    assert [(r["method"], r["error"]) for r in result.errors] == [("ga (tuned, 2 trials)", "tuning failed: every trial failed")]
    assert "failed: every trial failed" in (tmp_path / "out" / "results.md").read_text()


def test_a_trial_left_running_by_a_killed_run_does_not_lose_the_defaults(cfg, data, tmp_path):
    import optuna

    from oblivio.tune import study_name

    storage = f"sqlite:///{tmp_path / 'study.db'}"
    stale = optuna.create_study(study_name=study_name(cfg, "ga", "class", 0, {}), storage=storage)
    stale.ask()  # RUNNING forever: its process was killed
    result = tune(cfg, "ga", "class", 2, study=tmp_path / "study.db", data=data)
    assert result.ran == 2 and result.trials[0]["params"] == default_params("ga")
    assert result.default_value == result.trials[0]["value"]
