"""Per-example metrics that compare a population of unlearned models with a population of retrained ones.

Every input is one scalar per (model, example): rows are population members (models), columns are the
same examples for every member. Pure NumPy/SciPy.

- ``margins``: m = z_y - logsumexp_{c != y} z_c, the margin KLoM bins (Georgiev et al. 2024,
  "Attribute-to-Delete: Machine Unlearning via Datamodel Matching", arXiv 2410.23232, App. E.1).
- ``klom``: per example, KL(P_unlearned || P_retrained) between the histograms of the two populations'
  margins on shared bins (edges over the pooled range, margins clipped to [-100, 100]). Direction and
  defaults follow the reference code of Easy Data Unlearning Bench (easydub/EasyDUB-code,
  easydub/eval.py: ``klom_from_margins`` calls ``binned_kl_divergence(p=unlearned, q=oracle)``; the same
  in RoyRin/data-unlearning-bench, unlearning_bench/eval.py). 0 = same distribution.
- ``forgetting_quality``: the NeurIPS 2023 Machine Unlearning competition's forget score (Triantafillou
  et al. 2024, "Are we making progress in unlearning?"). Per example, an (eps, delta)-DP estimate from
  the best decision rule telling the two populations apart:
  eps = max_rules max(log((1 - delta - FPR) / FNR), log((1 - delta - FNR) / FPR)), clipped to [0, 50];
  score 2 ** -floor(eps / 0.5); F = mean score (1 = indistinguishable). Rules, zero-denominator handling
  and the 50 cap follow the competition's scoring code (google-deepmind/unlearning_evaluation, metric.py).
- ``competition_score``: F * (RA_u / RA_r) * (TA_u / TA_r), the competition's final score.
- ``ulira``: U-LiRA (Hayes et al., "Inexact unlearning needs more careful evaluations to avoid a false
  sense of privacy", SaTML 2025) in population form: per (example, model), the likelihood ratio
  log N(x | unlearned fit) - log N(x | retrained fit) of per-example Gaussians fitted leave-one-out;
  ROC over all (example, model) pairs with unlearned = positive. AUC 0.5 = indistinguishable.
- ``summarise`` / ``paired_difference``: mean / median / p95 of a per-example array, and a paired
  bootstrap CI (``scipy.stats.bootstrap``) of the mean difference between two methods over units.

Where oblivio departs: KLoM adds ``eps`` to every bin of both histograms and renormalises (the reference
adds it to q only where p > 0) and counts the pooled maximum in the last bin (the reference's
``np.digitize`` drops it); the forget score takes the supremum over the competition's two rule
families by enumerating every distinct cut instead of a 100-per-unit grid (so eps can only be higher, by
the thin gaps the grid misses), scores eps beyond the competition's last bucket ceil(log(M_u - 1)) as
2 ** -floor(eps / 0.5) instead of 0 (with equal population sizes only the cap lies there), and gives
eps = 0 where every rule is discarded (the competition asserts); U-LiRA is given both populations
instead of training shadow models.

Both estimators have a floor: for two populations from one distribution F is about 0.2, not 1 (the best
threshold always finds some tail split), and does not rise with more members; KLoM is positive and shrinks
with more members. Read them against the same metric for retrained vs retrained (e.g. two halves).
"""
from __future__ import annotations

import math

import numpy as np
from scipy import stats
from scipy.special import logsumexp

from ..errors import OblivioError

EPSILON_CAP = 50.0  # the competition's cap on a per-example epsilon
_PEAKY_RATIO = 0.01  # the competition: range ratio below this -> epsilon = cap
_BUFFER = 2.0  # the competition: slack (in score units) of the two-threshold rule's window
_MIN_VAR = 1e-12  # variance floor for U-LiRA's Gaussians
_PAIR_BUDGET = 4_000_000  # (examples x cut pairs) evaluated at once by the two-threshold rule


def _finite(name: str, x) -> np.ndarray:
    try:
        arr = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise OblivioError(f"{name} must be numeric: {exc}") from None
    if arr.size and not np.isfinite(arr).all():
        raise OblivioError(f"{name} contains NaN or inf")
    return arr


def _populations(unlearned, retrained, min_members: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """Validated float64 (M_u, E) and (M_r, E) arrays."""
    u = _finite("unlearned", unlearned)
    r = _finite("retrained", retrained)
    for name, arr in (("unlearned", u), ("retrained", r)):
        if arr.ndim != 2:
            raise OblivioError(f"{name} must be 2-D (members, examples), got shape {arr.shape}")
        if arr.shape[0] < min_members:
            raise OblivioError(f"{name} has {arr.shape[0]} members; at least {min_members} are needed")
        if arr.shape[1] == 0:
            raise OblivioError(f"{name} has no examples")
    if u.shape[1] != r.shape[1]:
        raise OblivioError(f"example counts differ: unlearned has {u.shape[1]}, retrained {r.shape[1]}")
    return u, r


# --------------------------------------------------------------------------------------------- KLoM


def margins(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """KLoM's margin logit_y - logsumexp(other logits), per example (and per leading index, e.g. model).

    logits: (..., E, C) array, C >= 2 classes.
    labels: (E,) integer labels in [0, C).
    Returns an (..., E) float64 array.
    """
    z = _finite("logits", logits)
    y = np.asarray(labels)
    if z.ndim < 2:
        raise OblivioError(f"logits must be (..., examples, classes), got shape {z.shape}")
    n, c = z.shape[-2], z.shape[-1]
    if c < 2:
        raise OblivioError(f"logits need at least 2 classes, got {c}")
    if y.ndim != 1 or len(y) != n:
        raise OblivioError(f"labels must be 1-D with {n} entries (one per example), got shape {y.shape}")
    if not np.issubdtype(y.dtype, np.integer):
        raise OblivioError(f"labels must be integers, got dtype {y.dtype}")
    if n and (y.min() < 0 or y.max() >= c):
        raise OblivioError(f"labels must lie in [0, {c}), got range [{y.min()}, {y.max()}]")
    onehot = np.arange(c) == y[:, None]  # (E, C)
    correct = np.take_along_axis(z, np.broadcast_to(y[:, None], z.shape[:-1] + (1,)), axis=-1)[..., 0]
    others = logsumexp(np.where(onehot, -np.inf, z), axis=-1)
    return correct - others


def klom(
    unlearned: np.ndarray,
    retrained: np.ndarray,
    bins: int = 20,
    eps: float = 1e-5,
    *,
    clip: float | None = 100.0,
) -> np.ndarray:
    """Per-example KL(unlearned || retrained) of binned margins (KLoM); 0 = same distribution.

    unlearned: (M_u, E) margins, one row per unlearned model.
    retrained: (M_r, E) margins, one row per retrained model.
    bins: number of equal-width bins spanning each example's pooled range.
    eps: added to every bin probability of both histograms before renormalising (avoids log 0).
    clip: margins are clipped to [-clip, clip] first, as in the reference code (None: no clipping).
    Returns an (E,) array.
    """
    u, r = _populations(unlearned, retrained)
    if int(bins) != bins or bins < 1:
        raise OblivioError(f"bins must be a positive integer, got {bins}")
    if not (eps > 0 and math.isfinite(eps)):
        raise OblivioError(f"eps must be positive and finite, got {eps}")
    if clip is not None and not clip > 0:
        raise OblivioError(f"clip must be positive or None, got {clip}")
    bins = int(bins)
    if clip is not None:
        u, r = np.clip(u, -clip, clip), np.clip(r, -clip, clip)
    lo = np.minimum(u.min(0), r.min(0))
    hi = np.maximum(u.max(0), r.max(0))
    width = np.where(hi > lo, hi - lo, 1.0)
    n_ex = u.shape[1]
    offset = np.arange(n_ex) * bins

    def histogram(x: np.ndarray) -> np.ndarray:
        idx = np.clip(np.floor((x - lo) / width * bins).astype(np.int64), 0, bins - 1)
        counts = np.bincount((idx + offset).ravel(), minlength=n_ex * bins).reshape(n_ex, bins)
        p = counts / x.shape[0] + eps
        return p / p.sum(1, keepdims=True)

    p, q = histogram(u), histogram(r)
    return np.sum(p * (np.log(p) - np.log(q)), axis=1)


# ------------------------------------------------------------------------------- forgetting quality


def _cuts(values: np.ndarray, first: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sort each example's pooled values; counts of the ``first`` population below every cut, and which cuts are real.

    values: (E, N) pooled values; first: (E, N) bool, True for members of the first population.
    Returns below (E, N + 1): how many ``first`` members lie left of cut k (k values left of it), and
    valid (E, N + 1): cut k separates distinct values (k = 0 and k = N always valid).
    """
    order = np.argsort(values, axis=1, kind="stable")
    v = np.take_along_axis(values, order, axis=1)
    f = np.take_along_axis(first, order, axis=1)
    below = np.zeros((v.shape[0], v.shape[1] + 1), dtype=np.int64)
    np.cumsum(f, axis=1, out=below[:, 1:])
    valid = np.ones_like(below, dtype=bool)
    valid[:, 1:-1] = v[:, 1:] > v[:, :-1]
    return below, valid


def _rule_epsilon(fpr: np.ndarray, fnr: np.ndarray, usable: np.ndarray, delta: float) -> np.ndarray:
    """Max over rules (last axis) of the competition's per-rule epsilon; -inf where no rule is usable.

    fpr == fnr == 0 (perfect separation) -> inf; exactly one of them 0 -> rule discarded
    (the competition reads it as too few samples); otherwise max of the two log-ratios, clipped at 0.
    """
    both_zero = (fpr == 0) & (fnr == 0)
    one_zero = ((fpr == 0) | (fnr == 0)) & ~both_zero
    with np.errstate(divide="ignore", invalid="ignore"):
        a = np.log(1 - delta - fpr) - np.log(fnr)
        b = np.log(1 - delta - fnr) - np.log(fpr)
    eps = np.clip(np.fmax(a, b), 0, None)  # fmax: a NaN (log of a negative) yields to the other term
    eps = np.where(both_zero & usable, np.inf, eps)
    eps = np.where(one_zero | ~usable | np.isnan(eps), -np.inf, eps)
    return eps.max(axis=-1)


def _single_threshold(pos: np.ndarray, neg: np.ndarray, delta: float) -> np.ndarray:
    """Best epsilon over rules 'x >= t -> positive' for every t, per example. pos/neg: (E, M_pos), (E, M_neg)."""
    m_pos, m_neg = pos.shape[1], neg.shape[1]
    values = np.concatenate([pos, neg], axis=1)
    first = np.zeros(values.shape, dtype=bool)
    first[:, :m_pos] = True
    pos_below, valid = _cuts(values, first)
    neg_below = np.arange(values.shape[1] + 1)[None, :] - pos_below
    fnr = pos_below / m_pos  # positives left of the cut are predicted negative
    fpr = (m_neg - neg_below) / m_neg  # negatives right of it are predicted positive
    return _rule_epsilon(fpr, fnr, valid, delta)


def _double_threshold(peaky: np.ndarray, other: np.ndarray, delta: float) -> np.ndarray:
    """Best epsilon over rules 'l <= x <= r -> peaky population', per example, with the competition's window.

    As in the competition, r ranges over [min_peaky + w - 2, max_peaky + 2] and l over [r - w - 2, r - w + 2],
    w = the peaky population's range; every pair of cuts (a, b) some such (l, r) realises is tried.
    """
    m_p, m_o = peaky.shape[1], other.shape[1]
    values = np.concatenate([peaky, other], axis=1)
    first = np.zeros(values.shape, dtype=bool)
    first[:, :m_p] = True
    p_below, valid = _cuts(values, first)
    n_cuts = values.shape[1] + 1
    o_below = np.arange(n_cuts)[None, :] - p_below
    v = np.sort(values, axis=1)
    left_of = np.concatenate([np.full((len(v), 1), -np.inf), v], axis=1)  # value just left of cut k
    right_of = np.concatenate([v, np.full((len(v), 1), np.inf)], axis=1)  # value just right of cut k
    w = np.ptp(peaky, axis=1)[:, None]
    r_lo, r_hi = peaky.min(1)[:, None] + w - _BUFFER, peaky.max(1)[:, None] + _BUFFER
    a, b = np.triu_indices(n_cuts, k=1)  # interval from cut a (left) to cut b (right)
    out = np.empty(values.shape[0])
    step = max(1, _PAIR_BUDGET // len(a))
    for s in range(0, values.shape[0], step):
        sl = slice(s, s + step)
        # r in [left_of[b], right_of[b]) keeps the values left of cut b inside; l in (left_of[a], right_of[a]]
        lo = np.maximum(np.maximum(left_of[sl][:, b], r_lo[sl]), left_of[sl][:, a] + w[sl] - _BUFFER)
        hi = np.minimum(np.minimum(right_of[sl][:, b], r_hi[sl]), right_of[sl][:, a] + w[sl] + _BUFFER)
        usable = valid[sl][:, a] & valid[sl][:, b] & (lo <= hi)
        tpr = (p_below[sl][:, b] - p_below[sl][:, a]) / m_p
        fpr = (o_below[sl][:, b] - o_below[sl][:, a]) / m_o
        out[sl] = _rule_epsilon(fpr, 1 - tpr, usable, delta)
    return out


def _per_role(first_is_x: np.ndarray, x: np.ndarray, y: np.ndarray, rule, delta: float) -> np.ndarray:
    """rule(first, second, delta) per example, with first = x where ``first_is_x`` and y elsewhere."""
    out = np.empty(len(first_is_x))
    for mask, (first, second) in ((first_is_x, (x, y)), (~first_is_x, (y, x))):
        if mask.any():
            out[mask] = rule(first[mask], second[mask], delta)
    return out


def forgetting_quality(
    unlearned: np.ndarray,
    retrained: np.ndarray,
    delta: float = 1e-5,
    *,
    double_threshold: bool = True,
    epsilon_cap: float = EPSILON_CAP,
) -> dict:
    """The NeurIPS 2023 unlearning competition's forget score F (1 = unlearned indistinguishable from retrained).

    Per example, positive = the population with the larger median (ties: unlearned). The attacks are
    the competition's two rule families over every distinct cut: one threshold (x >= t -> positive)
    and, if ``double_threshold``, an interval predicting the population with the smaller range.
    A population whose range is under 1% of the other's gets the cap outright, as in the competition.
    unlearned: (M_u, E) per-member per-example scalars (logit-scaled confidence or margin).
    retrained: (M_r, E) the same for retrained models.
    delta: the DP delta in the epsilon bound.
    double_threshold: also try the two-threshold (interval) rule family.
    epsilon_cap: upper clip of epsilon (perfect separation gives inf, clipped to this).
    Returns {"epsilon": (E,), "example_score": (E,) = 2 ** -floor(eps / 0.5), "F": mean score}.
    """
    u, r = _populations(unlearned, retrained)
    if not (0 <= delta < 1):
        raise OblivioError(f"delta must lie in [0, 1), got {delta}")
    if not (epsilon_cap > 0 and math.isfinite(epsilon_cap)):
        raise OblivioError(f"epsilon_cap must be positive and finite, got {epsilon_cap}")
    u, r = u.T, r.T  # (E, M)
    u_range, r_range = np.ptp(u, 1), np.ptp(r, 1)
    eps = _per_role(np.median(r, 1) > np.median(u, 1), r, u, _single_threshold, delta)
    if double_threshold:
        eps = np.maximum(eps, _per_role(u_range <= r_range, u, r, _double_threshold, delta))
    largest = np.maximum(u_range, r_range)
    smallest = np.minimum(u_range, r_range)
    with np.errstate(divide="ignore", invalid="ignore"):
        peaky_flag = (largest > 0) & (smallest / largest < _PEAKY_RATIO)
    eps = np.where(peaky_flag, np.inf, eps)
    eps = np.clip(np.where(np.isneginf(eps), 0.0, eps), 0.0, epsilon_cap)
    score = 2.0 ** -np.floor(eps / 0.5)
    return {"epsilon": eps, "example_score": score, "F": float(score.mean())}


def competition_score(F: float, ra_u: float, ra_r: float, ta_u: float, ta_r: float) -> float:
    """The competition's final score F * (RA_u / RA_r) * (TA_u / TA_r): forgetting discounted by lost utility.

    F: forget score from ``forgetting_quality``.
    ra_u, ra_r: retain accuracy of the unlearned and the retrained models (same units).
    ta_u, ta_r: test accuracy of the unlearned and the retrained models (same units).
    """
    vals = {"F": F, "ra_u": ra_u, "ra_r": ra_r, "ta_u": ta_u, "ta_r": ta_r}
    for name, v in vals.items():
        if not isinstance(v, (int, float, np.integer, np.floating)) or not math.isfinite(v):
            raise OblivioError(f"{name} must be a finite number, got {v!r}")
        if v < 0:
            raise OblivioError(f"{name} must be non-negative, got {v}")
    if ra_r == 0 or ta_r == 0:
        raise OblivioError("retrained accuracies ra_r and ta_r must be positive")
    return float(F) * (float(ra_u) / float(ra_r)) * (float(ta_u) / float(ta_r))


# ------------------------------------------------------------------------------------------- U-LiRA


def _loo_fits(x: np.ndarray, fix_variance: bool) -> tuple[np.ndarray, np.ndarray]:
    """Leave-one-out Gaussian fits: means (M, E) and variances (M, 1) pooled or (M, E), row j without member j."""
    m = x.shape[0]
    mean = (x.sum(0, keepdims=True) - x) / (m - 1)
    var = np.empty_like(x)
    for j in range(m):
        var[j] = np.var(np.delete(x, j, axis=0), axis=0, ddof=1)
    if fix_variance:
        var = var.mean(1, keepdims=True)
    return mean, np.maximum(var, _MIN_VAR)


def _full_fit(x: np.ndarray, fix_variance: bool) -> tuple[np.ndarray, np.ndarray]:
    var = np.var(x, axis=0, ddof=1)
    if fix_variance:
        var = np.full(1, var.mean())
    return x.mean(0), np.maximum(var, _MIN_VAR)


def _log_normal(x, mean, var):
    return -0.5 * (np.log(2 * np.pi * var) + (x - mean) ** 2 / var)


def _roc(pos: np.ndarray, neg: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """ROC points (fpr, tpr) over every distinct threshold, from (0, 0) to (1, 1); higher score = positive."""
    scores = np.concatenate([pos, neg])
    labels = np.concatenate([np.ones(len(pos)), np.zeros(len(neg))])
    order = np.argsort(-scores, kind="stable")
    s, y = scores[order], labels[order]
    last = np.r_[np.nonzero(s[1:] != s[:-1])[0], len(s) - 1]  # last index of each run of equal scores
    tps = np.cumsum(y)[last]
    fps = (last + 1) - tps
    return np.r_[0.0, fps / len(neg)], np.r_[0.0, tps / len(pos)]


def ulira(unlearned: np.ndarray, retrained: np.ndarray, *, fix_variance: bool = True) -> dict:
    """U-LiRA, population form: how well a per-example likelihood-ratio test tells unlearned from retrained models.

    For every member j, per-example Gaussians are fitted to the unlearned and to the retrained
    members (j left out of its own population's fit); its score per example is
    log N(x | unlearned) - log N(x | retrained). All (example, model) scores are pooled, unlearned = positive.
    unlearned: (M_u, E) per-member per-example scalars; at least 3 members (leave-one-out needs 2).
    retrained: (M_r, E) the same for retrained models; at least 3 members.
    fix_variance: one variance per population over all examples (Carlini et al.'s advice for few models).
    Returns {"AUC": in [0, 1], "TPR@1%FPR", "TPR@0.1%FPR": percent (highest TPR at FPR <= target),
    "accuracy": best-threshold balanced accuracy in percent (plain accuracy when M_u == M_r)}.
    """
    u, r = _populations(unlearned, retrained, min_members=3)
    mu_u_loo, var_u_loo = _loo_fits(u, fix_variance)
    mu_r_loo, var_r_loo = _loo_fits(r, fix_variance)
    mu_u, var_u = _full_fit(u, fix_variance)
    mu_r, var_r = _full_fit(r, fix_variance)
    pos = _log_normal(u, mu_u_loo, var_u_loo) - _log_normal(u, mu_r, var_r)
    neg = _log_normal(r, mu_u, var_u) - _log_normal(r, mu_r_loo, var_r_loo)
    fpr, tpr = _roc(pos.ravel(), neg.ravel())
    return {
        "AUC": float(np.trapezoid(tpr, fpr)),
        "TPR@1%FPR": 100.0 * float(tpr[fpr <= 0.01].max()),
        "TPR@0.1%FPR": 100.0 * float(tpr[fpr <= 0.001].max()),
        "accuracy": 100.0 * float(np.max((tpr + 1.0 - fpr) / 2.0)),
    }


# ------------------------------------------------------------------------------------------ summaries


def summarise(values: np.ndarray) -> dict:
    """Mean, median and 95th percentile of a per-example array (e.g. KLoM), as floats.

    values: non-empty 1-D array.
    """
    v = _finite("values", values)
    if v.ndim != 1 or v.size == 0:
        raise OblivioError(f"values must be a non-empty 1-D array, got shape {v.shape}")
    return {"mean": float(v.mean()), "median": float(np.median(v)), "p95": float(np.percentile(v, 95))}


def paired_difference(
    a: np.ndarray,
    b: np.ndarray,
    seed: int = 0,
    n_boot: int = 10000,
    level: float = 0.95,
    *,
    method: str = "percentile",
) -> dict:
    """Paired bootstrap CI of mean(a - b) over units (seeds or members); a[i], b[i] are one unit's two methods.

    a, b: 1-D arrays of equal length, one value per unit (lower = better, e.g. Avg. Gap).
    seed: seeds the resampling, so the result is deterministic.
    n_boot: bootstrap resamples.
    level: confidence level of the interval.
    method: scipy.stats.bootstrap's CI method ("percentile" stays defined when all differences are equal).
    Returns {"diff", "low", "high", "n", "significant": the CI excludes 0}; n == 1 gives (-inf, inf), not significant.
    """
    x = _finite("a", a)
    y = _finite("b", b)
    if x.ndim != 1 or y.ndim != 1 or x.size == 0:
        raise OblivioError(f"a and b must be non-empty 1-D arrays, got shapes {x.shape} and {y.shape}")
    if x.size != y.size:
        raise OblivioError(f"a and b must pair up: {x.size} vs {y.size} units")
    if int(n_boot) != n_boot or n_boot < 1:
        raise OblivioError(f"n_boot must be a positive integer, got {n_boot}")
    if not (0 < level < 1):
        raise OblivioError(f"level must lie in (0, 1), got {level}")
    if method not in ("percentile", "basic", "BCa"):
        raise OblivioError(f"method must be 'percentile', 'basic' or 'BCa', got {method!r}")
    d = x - y
    n = int(d.size)
    diff = float(d.mean())
    if n == 1:
        return {"diff": diff, "low": -math.inf, "high": math.inf, "n": 1, "significant": False}
    res = stats.bootstrap(
        (d,), np.mean, n_resamples=int(n_boot), confidence_level=level, method=method,
        rng=np.random.default_rng(seed), vectorized=True,
    )
    low, high = float(res.confidence_interval.low), float(res.confidence_interval.high)
    return {"diff": diff, "low": low, "high": high, "n": n, "significant": bool(low > 0 or high < 0)}
