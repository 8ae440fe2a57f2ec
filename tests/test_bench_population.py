"""The bench's populations, noise floor, ties and honest reporting of methods that did nothing."""
from __future__ import annotations

import json

import numpy as np
import pytest
import yaml

import oblivio.bench.runner as runner
from oblivio.bench import parse_config, read_csv, run_benchmark
from oblivio.bench.config import NOISE_FLOOR
from oblivio.bench.population import member_seed, other_seed
from oblivio.bench.report import _warn_cumulative_collapse
from oblivio.bench.significance import mark_ties, mean_ci
from oblivio.errors import OblivioError
from oblivio.methods.base import UnlearnResult

POPULATION = {
    "name": "pop", "dataset": {"name": "digits"}, "model": "mlp",
    "train": {"epochs": 8, "batch_size": 64, "lr": 0.05, "weight_decay": 0.0},
    "seeds": [0], "threads": 1, "population": 6,
    "scenarios": {"class": {"classes": [3]}}, "methods": ["rl"],
}




@pytest.fixture(scope="module")
def population_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("population") / "out"
    return run_benchmark(parse_config(POPULATION), out, progress=False), out


def test_every_row_has_its_members_and_the_noise_floor(population_run):
    result, out = population_run
    rows = read_csv(out / "runs.csv")
    for method in ("original", "retrain", NOISE_FLOOR, "rl"):
        assert sorted(int(r["member"]) for r in rows if r["method"] == method) == list(range(6))
    originals = {r["member"]: r["RA"] for r in rows if r["method"] == "original"}
    assert len(set(originals.values())) > 1  # members train from different seeds
    summary = {r["method"]: r for r in result.summary}
    assert summary["rl"]["n"] == 6 and summary["rl"]["units"] == 6


def test_noise_floor_population_scores_as_forgotten_and_the_original_does_not(population_run):
    """The other-seed retrains scored as "unlearned" sit at the estimators' floor (F ~0.2 for one distribution with
    the competition's estimator, see ``audit.population``); the untouched originals score clearly worse."""
    result, _ = population_run
    summary = {r["method"]: r for r in result.summary}
    noise, original = summary[NOISE_FLOOR], summary["original"]
    assert noise["F_mean"] > original["F_mean"] + 0.15 and original["F_mean"] < 0.05
    assert noise["KLoM_mean"] < 0.8 * original["KLoM_mean"]
    assert noise["ULiRA_AUC_mean"] < 0.75 < original["ULiRA_AUC_mean"]
    assert original["score_mean"] < noise["score_mean"]


def test_report_opens_with_the_per_example_table_and_marks_ties(population_run):
    result, out = population_run
    md = (out / "results.md").read_text()
    first_table = md.index("## ")
    assert md[first_table:].startswith("## class: per-example verdict, 6 members per row")
    assert "| retrain (other seed) |" in md and "U-LiRA AUC" in md and "KLoM p95" in md
    rl = next(r for r in result.summary if r["method"] == "rl")
    assert rl["vs_best"] == "best" and rl["vs_noise"] in ("within", "above")
    assert rl["avg_gap_low"] <= rl["avg_gap_mean"] <= rl["avg_gap_high"]
    doc = json.loads((out / "results.json").read_text())
    assert {r["method"] for r in doc["population"]} == {"original", NOISE_FLOOR, "rl"}


def test_population_run_resumes_from_its_cache(population_run):
    _, out = population_run
    again = run_benchmark(parse_config(POPULATION), out, progress=False)
    assert again.header["cells_computed"] == 0 and again.header["cells_cached"] == 4 * 6


def test_member_zero_is_the_cell_of_a_run_without_population(population_run, tmp_path):
    result, out = population_run
    single = run_benchmark(parse_config(POPULATION | {"population": None}), out, progress=False)
    assert single.header["cells_computed"] == 0  # member 0 of every row came from the population's cache
    member0 = {r["method"]: r["UA"] for r in result.runs if r["member"] == 0}
    assert {r["method"]: r["UA"] for r in single.runs} == member0


def test_member_seeds_are_distinct_and_reproducible():
    seeds = [member_seed(7, m) for m in range(64)]
    assert seeds[0] == 7 and len(set(seeds)) == 64 and seeds == [member_seed(7, m) for m in range(64)]
    assert not set(seeds) & {other_seed(7, m) for m in range(64)}


@pytest.mark.parametrize("value", [0, -1, True, "4", 2.5, 10**6])
def test_bad_population_is_refused(value):
    with pytest.raises(OblivioError, match="population must be an integer"):
        parse_config(POPULATION | {"population": value})


def test_cli_population_flag_overrides_and_is_checked(tmp_path, cli):
    config = tmp_path / "b.yaml"
    config.write_text(yaml.safe_dump(POPULATION | {"population": None}))
    code, _, err = cli("bench", "--config", config, "--out", tmp_path / "o", "--population", "0", "--no-progress")
    assert code == 2 and "--population must be an integer" in err


# -- honest reporting ----------------------------------------------------------------------------------
TINY = {"name": "tiny", "dataset": {"name": "digits"}, "model": "mlp", "train": {"epochs": 3}, "seeds": [0],
        "threads": 1, "scenarios": {"random": {"fraction": 0.1}}, "methods": ["ft"]}


def test_method_that_returned_the_model_unchanged_says_so_everywhere(tmp_path, monkeypatch):
    def nothing_to_forget(model, **kwargs):
        return UnlearnResult(model, "ft", {}, 0.01, {"nothing_to_forget": True, "reason": "looked unseen already"})

    monkeypatch.setattr(runner, "unlearn", nothing_to_forget)
    result = run_benchmark(parse_config(TINY), tmp_path, progress=False)
    assert not result.errors
    run = next(r for r in read_csv(tmp_path / "runs.csv") if r["method"] == "ft")
    assert run["unchanged"] == "True" and "looked unseen already" in run["note"]
    assert next(r for r in read_csv(tmp_path / "summary.csv") if r["method"] == "ft")["unchanged"] == "1"
    md = (tmp_path / "results.md").read_text()
    assert "ft (1 unchanged)" in md and "## Returned unchanged" in md
    doc = json.loads((tmp_path / "results.json").read_text())
    assert next(r for r in doc["runs"] if r["method"] == "ft")["unchanged"] is True


def test_forgot_nothing_is_a_result_and_strict_makes_it_an_exit_status(tmp_path, cli):
    config = tmp_path / "b.yaml"
    config.write_text(yaml.safe_dump(TINY | {"scenarios": {"class": {"classes": [3]}},
                                            "methods": [{"ga": {"lr": 1e-7, "steps": 1}}]}))
    args = ["bench", "--config", config, "--out", tmp_path / "o", "--no-progress"]
    code, out, err = cli(*args)
    assert code == 0, out + err
    assert "forgot nothing scenario class, method ga" in " ".join(out.split())
    md = (tmp_path / "o" / "results.md").read_text()
    assert "ga (1 forgot nothing)" in md and "## Forgot nothing" in md and "did not fall" in md
    row = next(r for r in read_csv(tmp_path / "o" / "runs.csv") if r["method"] == "ga")
    float(row["avg_gap"])  # measured like any result
    code, _, err = cli(*args, "--strict")
    assert code == 2 and "1 cell(s) forgot nothing" in err


def test_collapse_spread_over_sequential_requests_is_warned_against_the_first_model():
    rows = [{"seed": 0, "step": 1, "method": "original", "RA": 98.8}]
    rows += [{"seed": 0, "step": s, "method": "neggrad+", "RA": ra} for s, ra in ((1, 90.0), (2, 80.0), (3, 70.0))]
    _warn_cumulative_collapse(rows)
    assert [bool(r.get("warnings")) for r in rows] == [False, False, False, True]
    assert "70.0% at step 3 vs 98.8%" in rows[-1]["warnings"]


# -- ties -----------------------------------------------------------------------------------------------
def _unit_rows(method: str, values) -> list[dict]:
    return [{"scenario": "s", "method": method, "seed": 0, "member": m, "avg_gap": float(v)} for m, v in enumerate(values)]


def test_ties_and_noise_floor_from_paired_tests():
    rng = np.random.default_rng(0)
    base = rng.normal(2.0, 0.5, size=20)
    runs = (_unit_rows("a", base) + _unit_rows("b", base + 1.0) + _unit_rows("c", base + rng.normal(0, 0.05, 20))
            + _unit_rows(NOISE_FLOOR, base + 0.5))
    summary = [{"scenario": "s", "method": m, "avg_gap_mean": float(np.mean([r["avg_gap"] for r in runs
                                                                               if r["method"] == m]))}
               for m in ("a", "b", "c", NOISE_FLOOR)]
    mark_ties(summary, runs, ["s"])
    marks = {r["method"]: (r.get("vs_best"), r.get("vs_noise")) for r in summary}
    best = "a" if marks["a"][0] == "best" else "c"
    assert marks[best] == ("best", "within") and marks["a" if best == "c" else "c"][0] == "tied"
    assert marks["b"] == ("worse", "above")


def test_one_unit_is_untested_never_tied():
    runs = _unit_rows("a", [1.0]) + _unit_rows("b", [5.0])
    summary = [{"scenario": "s", "method": "a", "avg_gap_mean": 1.0}, {"scenario": "s", "method": "b", "avg_gap_mean": 5.0}]
    mark_ties(summary, runs, ["s"])
    assert [r["vs_best"] for r in summary] == ["best", "untested"]
    assert mean_ci(np.array([3.0])) == (3.0, 3.0)


def test_sequential_steps_are_tested_per_step_over_seeds():
    """A sequential section's rows are compared within each step, paired by seed (no member key)."""
    rng = np.random.default_rng(1)
    runs, summary = [], []
    for step, shift in ((1, 0.0), (2, 3.0)):  # at step 2 "b" is far behind "a"; at step 1 they are the same
        base = rng.normal(2.0, 0.3, size=8)
        for method, values in (("a", base), ("b", base + shift + rng.normal(0, 0.05, 8))):
            runs += [{"step": step, "method": method, "seed": s, "avg_gap": float(v)} for s, v in enumerate(values)]
            summary.append({"step": step, "method": method, "avg_gap_mean": float(np.mean(values))})
    mark_ties(summary, runs, [1, 2], group="step")
    marks = {(r["step"], r["method"]): r["vs_best"] for r in summary}
    assert sorted([marks[(1, "a")], marks[(1, "b")]]) == ["best", "tied"]
    assert (marks[(2, "a")], marks[(2, "b")]) == ("best", "worse")
    assert all(r["units"] == 8 for r in summary)


def test_serial_bench_shows_each_training_step_under_the_cells_bar(tmp_path, capsys):
    """A long training is not a bar frozen at 0 cells: its steps show (and the bar goes away when it ends)."""
    run_benchmark(parse_config(TINY), tmp_path, progress=True)
    err = capsys.readouterr().err
    assert "train:" in err and "step/s" in err and "cell" in err
