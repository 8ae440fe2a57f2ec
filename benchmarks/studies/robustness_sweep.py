"""Every method on cases none of the repository's configs use: other data, classes, triggers, forget sizes
and seeds (the robustness sweep in benchmarks/RESULTS.md). Writes its two data files, then benches each case.

    OMP_NUM_THREADS=1 PYTHONPATH=src python benchmarks/studies/robustness_sweep.py --out runs/bench/robustness
    ... --cases breast-cancer,one-sample        # a subset

Cases (all 13 methods at their registered defaults, retrain in the same run):
- ``breast-cancer``: scikit-learn's breast cancer, standardised, as a user ``.npz`` (MLP, seeds 3-5):
  random 5 %, class 0 of 2, a backdoor of 4 features set to 6.0 -> class 1 on 10 %.
- ``digits-cnn``: digits with the ``cnn`` (seeds 4-6): random 30 %, classes 0 + 7, a top-left 2-px trigger of
  value 0.5 -> class 5 on 5 %.
- ``one-sample``: digits ``cnn`` (seeds 5-7), a one-sample deletion request.
- ``synthetic-20``: 3,000 synthetic 3x16x16 images of 20 classes (class prototype x 0.6 + unit noise;
  ``cnn``, seed 1): random 5 %, classes 4 + 11 + 19, a top-right 2-px trigger of value 3.0 -> class 7 on 2 %.

Prints each case's report and, at the end, one line per scenario: the original's Avg. Gap, the three
closest methods and dm's rank.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from rich.console import Console

from oblivio.bench import print_report, run_benchmark
from oblivio.bench.config import parse_config
from oblivio.bench.report import ranked_by_gap

METHODS = ["ft", "ga", "rl", "dm", "bad-teacher", "scrub", "salun", "l1-sparse", "ssd", "unsir", "boundary",
           "regun", "neggrad+"]
SGD = {"batch_size": 64, "lr": 0.05, "optimizer": "sgd", "momentum": 0.9}


def write_data(folder: Path) -> dict[str, Path]:
    """The breast cancer and synthetic 20-class ``.npz`` files (deterministic)."""
    from sklearn.datasets import load_breast_cancer
    from sklearn.preprocessing import StandardScaler

    folder.mkdir(parents=True, exist_ok=True)
    bc = load_breast_cancer()
    paths = {"breast-cancer": folder / "breast-cancer.npz", "synthetic-20": folder / "synthetic-20.npz"}
    np.savez(paths["breast-cancer"], x=StandardScaler().fit_transform(bc.data).astype(np.float32),
             y=bc.target.astype(np.int64))
    rng = np.random.default_rng(0)
    protos = rng.normal(0, 1, (20, 3, 16, 16)).astype(np.float32)
    y = rng.integers(0, 20, 3000)
    x = (protos[y] * 0.6 + rng.normal(0, 1, (3000, 3, 16, 16))).astype(np.float32)
    np.savez(paths["synthetic-20"], x=x, y=y)
    return paths


def cases(paths: dict[str, Path]) -> dict[str, dict]:
    digits_cnn = {"dataset": {"name": "digits"}, "model": "cnn",
                  "train": {"epochs": 20, "weight_decay": 0.0005, **SGD}}
    return {
        "breast-cancer": {
            "dataset": {"name": "npz", "path": str(paths["breast-cancer"])}, "model": "mlp",
            "train": {"epochs": 30, "weight_decay": 0.0005, **SGD, "batch_size": 32}, "seeds": [3, 4, 5],
            "scenarios": {"random": {"fraction": 0.05}, "class": {"classes": [0]},
                          "backdoor": {"fraction": 0.1, "target": 1, "value": 6.0}}},
        "digits-cnn": {
            **digits_cnn, "third_party_fraction": 0.15, "seeds": [4, 5, 6],
            "scenarios": {"random": {"fraction": 0.3}, "class": {"classes": [0, 7]},
                          "backdoor": {"fraction": 0.05, "target": 5, "position": "top-left", "value": 0.5}}},
        "one-sample": {**digits_cnn, "seeds": [5, 6, 7], "scenarios": {"random": {"count": 1}}},
        "synthetic-20": {
            "dataset": {"name": "npz", "path": str(paths["synthetic-20"])}, "model": "cnn",
            "train": {"epochs": 15, **SGD}, "seeds": [1],
            "scenarios": {"random": {"fraction": 0.05}, "class": {"classes": [4, 11, 19]},
                          "backdoor": {"fraction": 0.02, "target": 7, "value": 3.0, "position": "top-right"}}},
    }


def ranking(result) -> list[str]:
    """One line per scenario: the original's Avg. Gap, the three closest methods, dm's rank (as the
    report's "closest to retrain" table ranks them)."""
    lines = []
    for scenario in result.config.scenarios:
        ranked = ranked_by_gap(result, scenario)
        original = next((r.get("avg_gap_mean", float("nan")) for r in result.summary
                         if r["scenario"] == scenario and r["method"] == "original"), float("nan"))
        top = ", ".join(f"{r['method']} {r['avg_gap_mean']:.2f}" for r in ranked[:3])
        dm = next(((i + 1, r) for i, r in enumerate(ranked) if r["method"] == "dm"), None)
        lines.append(f"{scenario}: original {original:.2f} | {top} | dm "
                     + (f"{dm[1]['avg_gap_mean']:.2f}, rank {dm[0]} of {len(ranked)}" if dm else "failed"))
    return lines


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cases", default="breast-cancer,digits-cnn,one-sample,synthetic-20")
    p.add_argument("--out", default="runs/bench/robustness")
    a = p.parse_args()
    out = Path(a.out)
    all_cases = cases(write_data(out / "data"))
    console, summary = Console(width=160), []
    for name in a.cases.split(","):
        doc = {"name": f"robustness-{name}", "third_party_fraction": 0.1, "threads": 1, "methods": METHODS,
               **all_cases[name]}
        result = run_benchmark(parse_config(doc, source="robustness_sweep.py"), out / name)
        print_report(result, console)
        summary += [f"{name} {line}" for line in ranking(result)]
    console.print("\n".join(summary))


if __name__ == "__main__":
    main()
