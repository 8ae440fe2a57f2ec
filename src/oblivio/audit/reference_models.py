"""Per-example test of one unlearned model against a population of models retrained without the forget set.

Population-level scores (accuracies, MIA-efficacy, an attack's AUC) average over the forget set and
can hide a few samples that unlearning left untouched. Hayes et al. ("Inexact unlearning needs more
careful evaluations to avoid a false sense of privacy", SaTML 2025) therefore judge an unlearned
model sample by sample against the distribution of models that truly never saw each sample. This
module builds that reference: ``N`` models trained from scratch on the split's retain set with the
original's training recipe (as the LiRA shadows of ``lira.py``), each with its own seed.

For every forget sample, the logit-scaled confidence phi = log p_y - log(1 - p_y) (``logit_confidence``,
the statistic of LiRA, Carlini et al. 2022) under the N members gives a Gaussian: a per-sample mean
mu and one variance pooled over the forget samples (LiRA's ``fix_variance``; per-sample variances
when the config turns it off). A model's sample scores z = (phi_model - mu) / sigma, where sigma is
the predictive standard deviation sqrt(1 + 1/N) x the pooled one (a new draw around a mean estimated
from N members), and the one-sided p-value P(Z >= z): a confidence on a sample well above what
models that never saw it reach means the model still looks trained on it. A sample is *flagged*
when Benjamini-Hochberg rejects it at a false discovery rate of 5% over the forget set. The lower
tail is tested the same way: a sample far *less* confident than under every retrained model is
*over-forgotten*, which an attacker can detect as well (Hayes et al.'s "Streisand effect").

Retrained models are not perfectly Gaussian, so some samples are flagged even for an honest retrain.
The *noise floor* measures this: each member in turn is left out, the Gaussians are fitted on the
other N - 1 and the left-out member is tested like the unlearned model; the mean share of forget
samples it gets flagged is what "flagged" looks like for a model that never saw the data.

The test compares absolute confidences, so a model that is more confident than the retrained ones on
everything (fine-tuned for longer, or trained on more data, as an original that saw retain + forget
set) gets forget samples flagged without having memorised them. The held-out control shows this: the
same test on the held-out reference samples (``reference_set``, trained on by no model). Flagged
forget samples point to memorisation to the extent that their share exceeds the held-out share.

    population = train_population(split, 16, config, seed=0)          # or executor=RayExecutor()
    record, curves = per_example_test(population, {"unlearned": phi_u, "original": phi_o}, split.forget_idx,
                                      {"unlearned": phi_u_reference, "original": phi_o_reference})
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
from scipy.stats import false_discovery_control, norm

from ..errors import OblivioError
from ..parallel import Executor
from ..scenarios import Split
from .lira import LiraConfig, _out_stats, train_for_phis
from .metrics import Reference, reference_set

MAX_MEMBERS = 256
FDR = 0.05
HELD_OUT_NOTE = 0.05  # the headline warns when the unlearned model flags this share of held-out samples
SEED_TAG = 21  # member m trains with seed default_rng([audit seed, 21, m]).integers(2**31)
ROLES = ("original", "unlearned", "retrained")


@dataclass
class Population:
    """phi of every retrained member on every forget and every held-out reference sample ((N, F) and (N, R)
    arrays), and how the members were trained."""

    phi_forget: np.ndarray
    phi_reference: np.ndarray
    seconds_per_member: float
    config: LiraConfig
    seeds: list[int]

    @property
    def members(self) -> int:
        return int(self.phi_forget.shape[0])


def check_members(n_members: int, what: str = "population") -> None:
    """Refuse a population size outside 2..MAX_MEMBERS (one line, before any work); ``what`` names the option."""
    if isinstance(n_members, bool) or not isinstance(n_members, (int, np.integer)) or not 2 <= n_members <= MAX_MEMBERS:
        raise OblivioError(f"{what} must be between 2 and {MAX_MEMBERS} retrained models, got {n_members!r}")


def member_seed(seed: int, m: int) -> int:
    """Training seed of member ``m`` for audit seed ``seed`` (distinct from the LiRA shadows' seeds)."""
    return int(np.random.default_rng([seed, SEED_TAG, m]).integers(2**31))


def train_population(
    split: Split,
    n_members: int,
    config: LiraConfig | None = None,
    seed: int = 0,
    executor: Executor | None = None,
    on_done: Callable[[int, object], None] | None = None,
    reference: Reference | None = None,
) -> Population:
    """Train ``n_members`` models from scratch on ``split``'s retain set; return their phis on the forget set.

    ``config``: architecture and training recipe (default the MLP with ``TrainConfig()``; the audit
    of a checkpoint passes the original's, via ``shadow_config_for``); the seed in it is replaced by
    ``member_seed(seed, m)``. ``executor`` trains them (default serial, here; ``RayExecutor()`` in
    parallel), ``on_done(m, result)`` runs as member ``m`` finishes. Deterministic for a seed on CPU,
    whichever executor.
    """
    check_members(n_members)
    config = config or LiraConfig()
    reference = reference or reference_set(split)
    seeds = [member_seed(seed, m) for m in range(n_members)]
    phi_forget, phi_reference, seconds = train_for_phis(split, reference, [split.retain_idx] * n_members, config,
                                                        seeds, executor, on_done, "population: a retrained model")
    return Population(phi_forget, phi_reference, seconds, config, seeds)


def fit(phi: np.ndarray, fix_variance: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Per-sample mean and predictive standard deviation of phi from an (n, F) array of n members' phis."""
    n = phi.shape[0]
    if n < 2:
        raise OblivioError("the per-example test needs at least 2 retrained models to estimate a variance")
    mu, sigma = _out_stats(phi, np.ones(phi.shape, dtype=bool), fix_variance)
    return mu, sigma * math.sqrt(1.0 + 1.0 / n)


def score_model(phi: np.ndarray, mu: np.ndarray, sigma: np.ndarray, fdr: float = FDR) -> dict[str, np.ndarray | float]:
    """z, one-sided p-values, the Benjamini-Hochberg flags at ``fdr`` and the z above which samples are flagged;
    ``over``: the same test on the lower tail (samples far less confident than under any retrained model)."""
    z = (phi - mu) / sigma
    p = norm.sf(z)
    flagged = false_discovery_control(p, method="bh") <= fdr
    over = false_discovery_control(norm.cdf(z), method="bh") <= fdr
    # BH rejects every p up to the largest rejected one; with none rejected, the first-rank bar fdr / F
    p_cut = float(p[flagged].max()) if flagged.any() else fdr / len(p)
    return {"z": z, "p": p, "flagged": flagged, "over": over, "z_threshold": float(norm.isf(p_cut))}


def _summary(z: np.ndarray) -> dict[str, float]:
    return {"mean": float(np.mean(z)), "median": float(np.median(z)), "p95": float(np.percentile(z, 95))}


def per_example_test(
    population: Population,
    phis: dict[str, np.ndarray],
    forget_idx: np.ndarray,
    phis_reference: dict[str, np.ndarray] | None = None,
    fdr: float = FDR,
) -> tuple[dict, dict[str, np.ndarray]]:
    """Test each model's forget-set phis (``phis``: role -> (F,) array) against ``population``.

    ``phis_reference`` (role -> (R,) array, optional): the same models' phis on the held-out
    reference samples, which no model trained on. The same test on them is a control: a model that
    is more confident than the retrained ones on *unseen* data gets held-out samples flagged too, so
    its flagged forget samples say less about memorisation.

    Returns the JSON-able record (see ``CONVENTIONS["population"]`` in ``audit.core``) and per-sample
    arrays for plots: ``z_<role>``, ``flagged_<role>`` and ``z_left_out`` ((N, F): each member's z
    against the other N - 1; absent for N = 2, where one member cannot give a variance).
    """
    phi = population.phi_forget
    n, n_forget = phi.shape
    fix = population.config.fix_variance
    mu, sigma = fit(phi, fix)
    held_out = None
    if phis_reference:
        held_out = fit(population.phi_reference, fix)
    flagged: dict[str, dict] = {}
    z_summary: dict[str, dict[str, float]] = {}
    curves: dict[str, np.ndarray] = {}
    for role in [r for r in ROLES if r in phis] + [r for r in phis if r not in ROLES]:
        res = score_model(np.asarray(phis[role], dtype=np.float64), mu, sigma, fdr)
        positions = np.flatnonzero(res["flagged"])
        flagged[role] = {"count": int(positions.size), "share": float(positions.size / n_forget),
                         "z_threshold": res["z_threshold"], "forget_positions": positions.tolist(),
                         "train_indices": np.asarray(forget_idx)[positions].astype(int).tolist(),
                         "over_forgotten": {"count": int(res["over"].sum()), "share": float(res["over"].mean())}}
        if held_out is not None and role in phis_reference:
            control = score_model(np.asarray(phis_reference[role], dtype=np.float64), *held_out, fdr)["flagged"]
            flagged[role]["held_out"] = {"count": int(control.sum()), "share": float(control.mean())}
        z_summary[role] = _summary(res["z"])
        curves[f"z_{role}"], curves[f"flagged_{role}"] = res["z"], res["flagged"]

    floor_shares: list[float] | None = None
    floor_held_out: float | None = None
    if n >= 3:
        left_out, floor_shares, held_out_shares = [], [], []
        for m in range(n):
            res = score_model(phi[m], *fit(np.delete(phi, m, axis=0), fix), fdr)
            left_out.append(res["z"])
            floor_shares.append(float(res["flagged"].mean()))
            if held_out is not None:
                ref = population.phi_reference
                control = score_model(ref[m], *fit(np.delete(ref, m, axis=0), fix), fdr)["flagged"]
                held_out_shares.append(float(control.mean()))
        curves["z_left_out"] = np.stack(left_out)
        z_summary["retrained_left_out"] = _summary(curves["z_left_out"].ravel())
        floor_held_out = float(np.mean(held_out_shares)) if held_out_shares else None
    floor = float(np.mean(floor_shares)) if floor_shares is not None else None

    record = {
        "members": n,
        "train_config": population.config.to_dict(),
        "member_seeds": list(population.seeds),
        "seconds_per_member": population.seconds_per_member,
        "fdr": fdr,
        "sigma": float(np.mean(sigma)),
        "reference_samples": int(population.phi_reference.shape[1]) if held_out is not None else None,
        "flagged": flagged,
        "noise_floor_share": floor,
        "noise_floor_shares": floor_shares,
        "noise_floor_held_out_share": floor_held_out,
        "z": z_summary,
        "verdict": headline(flagged, n_forget, floor),
    }
    return record, curves


def headline(flagged: dict[str, dict], n_forget: int, floor: float | None) -> str:
    """One line: how many forget samples still look trained-on, next to the original and the retrained noise floor.

    When the unlearned model also gets at least ``HELD_OUT_NOTE`` of the held-out samples flagged, the
    line says so: its confidence is above the retrained models' on unseen data as well.
    """
    role = "unlearned" if "unlearned" in flagged else next(iter(flagged))
    count = flagged[role]["count"]
    context = []
    if role == "unlearned" and "original" in flagged:
        context.append(f"original: {flagged['original']['count']}")
    context.append(f"retrained models: {100 * floor:.1f}% flagged on average" if floor is not None
                   else "no noise floor with 2 retrained models")
    sample = "sample" if n_forget == 1 else "samples"
    verb = "looks" if count == 1 else "look"
    line = f"{count} of {n_forget} forget {sample} still {verb} trained-on ({'; '.join(context)})"
    over = flagged[role].get("over_forgotten", {}).get("count", 0)
    if over:
        line += (f"; {over} {'looks' if over == 1 else 'look'} over-forgotten (far less confident than under every "
                 "retrained model, also detectable)")
    control = flagged[role].get("held_out")
    if control and control["share"] >= HELD_OUT_NOTE:
        line += (f"; but {100 * control['share']:.0f}% of held-out samples are flagged too: "
                 "more confident than retrained models on unseen data")
    return line


__all__ = ["FDR", "MAX_MEMBERS", "Population", "check_members", "fit", "member_seed", "per_example_test",
           "score_model", "train_population"]
