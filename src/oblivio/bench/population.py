"""Populations of models per benchmark row, and the per-example metrics computed over them.

With ``population: N`` every row of a (seed, scenario) has N members on the same split: N originals
(member 0 trained from the seed itself, member m from ``member_seed(seed, m)``), N gold retrains,
N other-seed retrains (the noise floor) and each method applied to every original. Each cell keeps
its model's logit-scaled confidence phi = z_y - logsumexp(z_-y) per example (``per_example``), which
is also KLoM's margin; ``population_metrics`` stacks them per row and scores the row's members
against the gold retrains with ``oblivio.audit.population`` (KLoM, the NeurIPS 2023 forgetting
quality F and score, U-LiRA).
"""
from __future__ import annotations

from typing import Any

import numpy as np

from ..audit.metrics import Outputs
from ..scenarios import Split

_DECIMALS = 4


def member_seed(seed: int, member: int) -> int:
    """Training seed of population member ``member`` of ``seed``: the seed itself for member 0, else derived."""
    if member == 0:
        return seed
    return int(np.random.SeedSequence([seed, member, 31]).generate_state(1)[0] % (2**31 - 1))


def other_seed(seed: int, member: int) -> int:
    """Training seed of the other-seed retrain (noise floor) of ``member``: never a member's seed."""
    return int(np.random.SeedSequence([seed, member, 47]).generate_state(1)[0] % (2**31 - 1))


def sample_positions(n: int, k: int, seed: int) -> np.ndarray:
    """``min(n, k)`` sorted positions out of ``n``, the same for every member of a split's seed."""
    rng = np.random.default_rng([seed, 53])
    return np.sort(rng.choice(n, size=min(n, k), replace=False))


def per_example(outputs: Outputs, split: Split) -> dict[str, list[float]]:
    """phi per example on the forget set and on seeded retain / test samples of the same size (JSON-able)."""
    k = len(split.forget_idx)
    doc = {"forget": outputs.phi("forget")}
    for part in ("retain", "test"):
        phi = outputs.phi(part)
        doc[part] = phi[sample_positions(len(phi), k, split.seed)]
    return {part: np.round(values, _DECIMALS).tolist() for part, values in doc.items()}


def _stack(cells: list[dict], part: str) -> np.ndarray | None:
    arrays = [c["per_example"][part] for c in cells if c.get("per_example")]
    if len(arrays) < 2 or len({len(a) for a in arrays}) != 1:
        return None
    return np.asarray(arrays, dtype=np.float64)


def _mean(cells: list[dict], key: str) -> float:
    return float(np.mean([c["metrics"][key] for c in cells]))


def population_metrics(cells: list[dict]) -> tuple[list[dict], dict[tuple, np.ndarray]]:
    """Per (scenario, seed, row) with at least two measured members: the population metrics against the gold
    retrains of the same (scenario, seed); and the per-example KLoM on the forget set by (scenario, seed, method)
    (for paired comparisons over examples).

    Rows: KLoM (mean / median / p95) on the forget set and mean KLoM on the retain and test samples, the
    competition's F and score, U-LiRA AUC and TPR at 1% FPR, and the member count.
    """
    from ..audit.population import competition_score, forgetting_quality, klom, summarise, ulira

    groups: dict[tuple, list[dict]] = {}
    for c in cells:
        if "metrics" in c and c.get("per_example"):
            groups.setdefault((c["scenario"], c["seed"], c["method"]), []).append(c)
    rows, per_example_klom = [], {}
    for (scenario, seed, method), members in groups.items():
        gold = groups.get((scenario, seed, "retrain"))
        if method == "retrain" or gold is None:
            continue
        forget_u, forget_r = _stack(members, "forget"), _stack(gold, "forget")
        if forget_u is None or forget_r is None or forget_u.shape[1] != forget_r.shape[1]:
            continue
        k = klom(forget_u, forget_r)
        per_example_klom[scenario, seed, method] = k
        row: dict[str, Any] = {"scenario": scenario, "seed": seed, "method": method, "members": len(members)}
        row |= {("KLoM" if stat == "mean" else f"KLoM_{stat}"): value for stat, value in summarise(k).items()}
        for part in ("retain", "test"):
            u, r = _stack(members, part), _stack(gold, part)
            if u is not None and r is not None and u.shape[1] == r.shape[1]:
                row[f"KLoM_{part}"] = float(np.mean(klom(u, r)))
        row["F"] = float(forgetting_quality(forget_u, forget_r)["F"])
        row["score"] = competition_score(row["F"], _mean(members, "RA"), _mean(gold, "RA"), _mean(members, "TA"),
                                         _mean(gold, "TA"))
        attack = ulira(forget_u, forget_r)
        row["ULiRA_AUC"], row["ULiRA_TPR1"] = float(attack["AUC"]), float(attack["TPR@1%FPR"])
        rows.append(row)
    return rows, per_example_klom


__all__ = ["member_seed", "other_seed", "per_example", "population_metrics", "sample_positions"]
