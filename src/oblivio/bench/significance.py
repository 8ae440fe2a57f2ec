""""Tied" and "within noise", made exact: paired bootstrap tests between the rows of one scenario.

A unit is one (seed, population member): every row of a unit starts from the same original and is
scored against the same gold retrain, so two methods' Avg. Gaps are paired by unit. Per scenario:

- ``avg_gap_low`` / ``avg_gap_high``: a 95% bootstrap CI of the mean Avg. Gap over units;
- ``vs_best``: ``best`` for the lowest mean Avg. Gap, ``tied`` when the paired difference to it is not
  significant (the 95% CI of the mean paired difference contains 0), else ``worse``;
- ``vs_noise``: ``within`` when the row's Avg. Gap is not significantly above the other-seed retrain's
  (two honest retrains' gap, the noise floor), else ``above``;
- with a population, ``klom_vs_best``: the same test on KLoM, paired over forget examples (all seeds);
- a sequential section: ``vs_best`` per step, paired over its seeds.

With fewer than two paired units there is no test: the marks say ``untested`` (never ``tied``).
"""
from __future__ import annotations

from typing import Any

import numpy as np

from .config import NOISE_FLOOR

CONTESTANTS_EXCLUDED = ("original", "retrain", NOISE_FLOOR)


def _units(runs: list[dict], scenario: Any, method: str, key: str = "avg_gap", group: str = "scenario") -> dict[tuple, float]:
    return {(r.get("seed"), r.get("member", 0)): float(r[key]) for r in runs
            if r.get(group) == scenario and r.get("method") == method and key in r and not r.get("error")}


def _paired(a: dict[tuple, float], b: dict[tuple, float], seed: int) -> dict | None:
    """The paired bootstrap of a - b over the units both have; None with fewer than two."""
    from ..audit.population import paired_difference

    common = sorted(set(a) & set(b), key=str)
    if len(common) < 2:
        return None
    return paired_difference(np.array([a[u] for u in common]), np.array([b[u] for u in common]), seed=seed)


def _mark(test: dict | None, worse: str, same: str) -> str:
    if test is None:
        return "untested"
    return worse if test["significant"] and test["diff"] > 0 else same


def mean_ci(values: np.ndarray, seed: int = 0, level: float = 0.95) -> tuple[float, float]:
    """A percentile bootstrap CI of the mean of ``values`` (the value itself for one unit)."""
    values = np.asarray(values, dtype=float)
    if len(values) < 2:
        return float(values.mean()), float(values.mean())
    rng = np.random.default_rng([seed, 61])
    means = values[rng.integers(0, len(values), size=(10_000, len(values)))].mean(1)
    tail = 100 * (1 - level) / 2
    return float(np.percentile(means, tail)), float(np.percentile(means, 100 - tail))


def mark_ties(summary: list[dict], runs: list[dict], scenarios: list,
              per_example_klom: dict[tuple, np.ndarray] | None = None, seed: int = 0, group: str = "scenario") -> None:
    """Add ``avg_gap_low/high``, ``units``, ``vs_best``, ``vs_noise`` (and ``klom_vs_best``) to ``summary`` rows.

    Rows are compared within each value of ``group`` in ``scenarios`` (``"step"`` for a sequential section's
    steps, whose units are its seeds)."""
    for scenario in scenarios:
        rows = [r for r in summary if r[group] == scenario and "avg_gap_mean" in r]
        units = {r["method"]: _units(runs, scenario, r["method"], group=group) for r in rows}
        for r in rows:
            r["units"] = len(units[r["method"]])
            r["avg_gap_low"], r["avg_gap_high"] = mean_ci(np.array(list(units[r["method"]].values())), seed)
        contestants = [r for r in rows if r["method"] not in CONTESTANTS_EXCLUDED]
        if not contestants:
            continue
        best = min(contestants, key=lambda r: r["avg_gap_mean"])
        noise = units.get(NOISE_FLOOR)
        for r in rows:
            if r["method"] in ("retrain", NOISE_FLOOR):
                continue
            if r is best:
                r["vs_best"] = "best"
            elif r in contestants:
                r["vs_best"] = _mark(_paired(units[r["method"]], units[best["method"]], seed), "worse", "tied")
            if noise:
                r["vs_noise"] = _mark(_paired(units[r["method"]], noise, seed), "above", "within")
        if per_example_klom:
            _mark_klom(contestants, scenario, per_example_klom, seed)


def _mark_klom(rows: list[dict], scenario: str, per_example: dict[tuple, np.ndarray], seed: int) -> None:
    """``klom_vs_best``: the lowest mean KLoM is ``best``; others ``tied``/``worse`` by a paired test over examples."""
    from ..audit.population import paired_difference

    def pooled(method: str) -> np.ndarray | None:
        parts = [v for (s, _, m), v in sorted(per_example.items(), key=str) if s == scenario and m == method]
        return np.concatenate(parts) if parts else None

    scored = [(r, pooled(r["method"])) for r in rows]
    scored = [(r, k) for r, k in scored if k is not None]
    if not scored:
        return
    best, best_k = min(scored, key=lambda rk: float(rk[1].mean()))
    for r, k in scored:
        if r is best:
            r["klom_vs_best"] = "best"
        elif len(k) == len(best_k):
            r["klom_vs_best"] = _mark(paired_difference(k, best_k, seed=seed) if len(k) > 1 else None, "worse", "tied")
