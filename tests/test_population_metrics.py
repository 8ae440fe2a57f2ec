"""oblivio.audit.population: known answers on hand-made cases and on synthetic Gaussian populations, and bad input."""
from __future__ import annotations

import math

import numpy as np
import pytest

from oblivio import OblivioError
from oblivio.audit.population import (
    EPSILON_CAP,
    competition_score,
    forgetting_quality,
    klom,
    margins,
    paired_difference,
    summarise,
    ulira,
)

M, E = 64, 100  # members per population, examples
SHIFTS = (0.0, 1.0, 3.0)  # unlearned mean shift, in units of the members' standard deviation


@pytest.fixture(scope="module")
def populations():
    """shift -> (unlearned, retrained): per-example means spread over examples, unit noise across members."""
    rng = np.random.default_rng(0)
    out = {}
    for shift in SHIFTS:
        centre = rng.normal(0.0, 3.0, E)
        out[shift] = (centre + shift + rng.normal(0, 1, (M, E)), centre + rng.normal(0, 1, (M, E)))
    return out


@pytest.fixture(scope="module")
def scores(populations):
    return {
        shift: {"klom": klom(u, r), "fq": forgetting_quality(u, r), "ulira": ulira(u, r)}
        for shift, (u, r) in populations.items()
    }


# ------------------------------------------------------------------------------------------ margins


def test_margins_match_the_formula():
    logits = np.array([[1.0, 2.0, 3.0], [0.0, 0.0, 5.0]])
    labels = np.array([2, 0])
    expected = [3 - math.log(math.exp(1) + math.exp(2)), 0 - math.log(1 + math.exp(5))]
    np.testing.assert_allclose(margins(logits, labels), expected, rtol=1e-12)
    stacked = np.stack([logits, logits + 7.0, 2 * logits])  # (models, E, C): shift-invariant, not scale-invariant
    out = margins(stacked, labels)
    assert out.shape == (3, 2)
    np.testing.assert_allclose(out[1], expected, rtol=1e-12)
    assert out[2, 0] == pytest.approx(6 - math.log(math.exp(2) + math.exp(4)))
    assert margins(np.array([[0.0, 0.0]]), np.array([1]))[0] == pytest.approx(0.0)  # two equal logits: margin 0


# --------------------------------------------------------------------------------------------- KLoM


def test_klom_of_identical_populations_is_zero():
    x = np.random.default_rng(1).normal(size=(16, 30))
    np.testing.assert_allclose(klom(x, x), 0.0, atol=1e-12)
    np.testing.assert_allclose(klom(np.ones((4, 3)), np.ones((5, 3))), 0.0, atol=1e-12)  # degenerate range


def test_klom_is_kl_of_unlearned_from_retrained():
    """Two bins: unlearned 3/4, 1/4 vs retrained 1/2, 1/2; KL(u || r) differs from KL(r || u), so the direction shows."""
    u = np.array([[0.0], [0.0], [0.0], [1.0]])
    r = np.array([[0.0], [1.0]])
    kl_u_r = 0.75 * math.log(0.75 / 0.5) + 0.25 * math.log(0.25 / 0.5)
    kl_r_u = 0.5 * math.log(0.5 / 0.75) + 0.5 * math.log(0.5 / 0.25)
    assert klom(u, r, bins=2)[0] == pytest.approx(kl_u_r, abs=1e-4)
    assert klom(r, u, bins=2)[0] == pytest.approx(kl_r_u, abs=1e-4)
    assert abs(kl_u_r - kl_r_u) > 0.01


def test_klom_separates_shifted_populations(scores):
    """Null bound: the plug-in KL is biased up by sampling noise, about (occupied bins - 1) / (2 * 32) ~ 0.2 with
    64 + 64 members, plus p * ln(p / eps) ~ 0.12 per unlearned member alone in a tail bin the retrained leave empty;
    1.0 allows ~7 such members. Disjoint populations put ~all mass against eps-filled bins: ~ln(0.1 / 1e-5) ~ 9."""
    means = {s: scores[s]["klom"].mean() for s in SHIFTS}
    assert means[0.0] < 1.0
    assert means[3.0] > 5.0
    assert means[0.0] < means[1.0] < means[3.0]
    assert scores[0.0]["klom"].shape == (E,) and (scores[0.0]["klom"] >= 0).all()


# ------------------------------------------------------------------------------------- forget score


def test_forgetting_quality_interleaved_case_by_hand():
    """u = 0,2,4,6 vs r = 1,3,5,7: r is positive (larger median); the best cut (x >= 2.5) has FNR 1/4, FPR 2/4,
    so eps = log((1 - 2/4) / (1/4)) = log 2 with delta = 0; score 2 ** -floor(1.386) = 1/2."""
    u = np.array([[0.0, 2, 4, 6]]).T
    out = forgetting_quality(u, u + 1, delta=0.0)
    assert out["epsilon"][0] == pytest.approx(math.log(2))
    assert out["example_score"][0] == 0.5 and out["F"] == 0.5


def test_forgetting_quality_two_threshold_rule_by_hand():
    """u = 2,3,4,5 (peaky) vs r = 0,3.5,6,7. One threshold: best x >= 3.25 -> r, FNR 1/4, FPR 2/4, eps log 2.
    Interval [2, 4] -> u holds 3 of u and 1 of r: FPR 1/4, FNR 1/4, eps log 3 (its width 2 is in the window
    [w - 2, w + 2] = [1, 5]); no rule does better with 4 + 4 members."""
    u = np.array([[2.0, 3, 4, 5]]).T
    r = np.array([[0.0, 3.5, 6, 7]]).T
    single = forgetting_quality(u, r, delta=0.0, double_threshold=False)
    double = forgetting_quality(u, r, delta=0.0)
    assert single["epsilon"][0] == pytest.approx(math.log(2)) and single["F"] == 0.5
    assert double["epsilon"][0] == pytest.approx(math.log(3)) and double["F"] == 0.25
    assert forgetting_quality(u, r)["epsilon"][0] == pytest.approx(math.log((0.75 - 1e-5) / 0.25))  # delta's effect


def test_forgetting_quality_perfect_separation_gets_the_last_bin():
    u = np.arange(8.0).reshape(8, 1) + np.zeros((1, 3))
    out = forgetting_quality(u, u + 100.0)
    np.testing.assert_array_equal(out["epsilon"], EPSILON_CAP)
    np.testing.assert_array_equal(out["example_score"], 2.0 ** -math.floor(EPSILON_CAP / 0.5))
    capped = forgetting_quality(u, u + 100.0, epsilon_cap=3.0)
    assert capped["epsilon"][0] == 3.0 and capped["F"] == 2.0**-6
    same = forgetting_quality(u, u.copy())
    np.testing.assert_array_equal(same["epsilon"], 0.0)
    assert same["F"] == 1.0


def test_forgetting_quality_peaky_population_gets_the_cap():
    """The competition's guard: a population whose range is < 1% of the other's is treated as distinguishable."""
    rng = np.random.default_rng(2)
    r = rng.normal(0, 1, (16, 2))
    u = np.median(r, axis=0) + 1e-4 * rng.normal(0, 1, (16, 2))
    np.testing.assert_array_equal(forgetting_quality(u, r)["epsilon"], EPSILON_CAP)


def test_forgetting_quality_per_example_and_unequal_sizes():
    rng = np.random.default_rng(3)
    u = rng.normal(0, 1, (12, 6)) + np.array([0, 0.5, 1, -1, 2, 0])
    r = rng.normal(0, 1, (20, 6))
    batch = forgetting_quality(u, r)["epsilon"]
    one_by_one = [forgetting_quality(u[:, [i]], r[:, [i]])["epsilon"][0] for i in range(6)]
    np.testing.assert_allclose(batch, one_by_one)
    assert (batch >= 0).all() and (batch <= EPSILON_CAP).all()


def test_forgetting_quality_on_gaussian_populations(scores):
    """Same distribution is the best F can get, but not 1: eps is a max over all cuts, and near the tails counts
    are tiny whatever M is (e.g. the 4 lowest values: 3 from one population, 1 from the other -> ratio 3,
    eps ln 3 ~ 1.1), so per-example eps is ~1.5 and F ~ 0.2 under the null. A 3-sigma shift pushes most
    examples to the top bins."""
    F = {s: scores[s]["fq"]["F"] for s in SHIFTS}
    assert 0.1 < F[0.0] < 0.4
    assert F[3.0] < 0.05
    assert F[0.0] > F[1.0] > F[3.0]
    mean_eps = {s: scores[s]["fq"]["epsilon"].mean() for s in SHIFTS}
    assert mean_eps[0.0] < mean_eps[1.0] < mean_eps[3.0]


def test_forgetting_quality_null_floor_does_not_vanish_with_more_members():
    rng = np.random.default_rng(4)
    big = forgetting_quality(rng.normal(size=(128, 30)), rng.normal(size=(128, 30)))["F"]
    assert 0.1 < big < 0.4


def test_competition_score_arithmetic():
    assert competition_score(0.5, 90.0, 100.0, 80.0, 100.0) == pytest.approx(0.36)
    assert competition_score(1.0, 0.95, 0.95, 0.9, 0.9) == pytest.approx(1.0)
    assert competition_score(0.2, 100.0, 90.0, 90.0, 90.0) == pytest.approx(0.2 * 100 / 90)


# ------------------------------------------------------------------------------------------- U-LiRA


def test_ulira_on_gaussian_populations(scores):
    auc = {s: scores[s]["ulira"]["AUC"] for s in SHIFTS}
    assert abs(auc[0.0] - 0.5) < 0.03
    assert auc[3.0] > 0.95
    assert auc[0.0] < auc[1.0] < auc[3.0]
    null, far = scores[0.0]["ulira"], scores[3.0]["ulira"]
    assert 50.0 <= null["accuracy"] < 55.0 and far["accuracy"] > 85.0
    assert null["TPR@1%FPR"] < 5.0 < far["TPR@1%FPR"]
    assert far["TPR@0.1%FPR"] <= far["TPR@1%FPR"]


def test_ulira_per_example_variance_and_perfect_separation(populations):
    u, r = populations[3.0]
    assert ulira(u, r, fix_variance=False)["AUC"] > 0.95
    x = np.random.default_rng(5).normal(size=(8, 20))
    out = ulira(x, x + 50.0)
    assert out["AUC"] == 1.0 and out["TPR@0.1%FPR"] == 100.0 and out["accuracy"] == 100.0


# ---------------------------------------------------------------------------------------- summaries


def test_summarise():
    out = summarise(np.arange(101.0))
    assert out == {"mean": 50.0, "median": 50.0, "p95": 95.0}
    assert all(type(v) is float for v in out.values())


def test_paired_difference():
    b = np.array([3.0, 4.0, 5.0, 6.0, 7.0])
    better = paired_difference(b - 0.5, b)
    assert better["diff"] == pytest.approx(-0.5) and better["significant"] and better["n"] == 5
    assert better["low"] <= -0.5 <= better["high"] < 0
    same = paired_difference(b, b.copy())
    assert same["diff"] == 0.0 and not same["significant"]
    one = paired_difference([1.0], [2.0])
    assert one == {"diff": -1.0, "low": -math.inf, "high": math.inf, "n": 1, "significant": False}
    rng = np.random.default_rng(6)
    a = rng.normal(0, 1, 8)
    noisy = a - 1.0 + rng.normal(0, 0.2, 8)  # a clear, noisy improvement over 8 seeds
    first = paired_difference(noisy, a, seed=3, n_boot=2000)
    assert first["significant"] and first["high"] < 0
    assert paired_difference(noisy, a, seed=3, n_boot=2000) == first  # seeded: same seed, same answer


# ---------------------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("fn", [klom, forgetting_quality, ulira])
def test_population_metrics_reject_bad_input(fn):
    ok = np.zeros((4, 5))
    with pytest.raises(OblivioError, match="example counts differ"):
        fn(ok, np.zeros((4, 6)))
    with pytest.raises(OblivioError, match="members"):
        fn(np.zeros((1, 5)), ok)
    with pytest.raises(OblivioError, match="NaN"):
        fn(ok, np.full((4, 5), np.nan))
    with pytest.raises(OblivioError, match="2-D"):
        fn(np.zeros(5), ok)


def test_other_functions_reject_bad_input():
    with pytest.raises(OblivioError, match="members"):
        ulira(np.zeros((2, 5)), np.zeros((4, 5)))  # leave-one-out needs 3
    with pytest.raises(OblivioError, match="labels"):
        margins(np.zeros((3, 4)), np.array([0, 1]))
    with pytest.raises(OblivioError, match="labels"):
        margins(np.zeros((2, 4)), np.array([0, 4]))
    with pytest.raises(OblivioError, match="NaN"):
        margins(np.array([[0.0, np.nan]]), np.array([0]))
    with pytest.raises(OblivioError, match="pair up"):
        paired_difference(np.zeros(3), np.zeros(4))
    with pytest.raises(OblivioError, match="NaN"):
        paired_difference(np.array([1.0, np.nan]), np.zeros(2))
    with pytest.raises(OblivioError, match="1-D"):
        summarise(np.zeros((2, 2)))
    with pytest.raises(OblivioError, match="NaN"):
        summarise(np.array([1.0, np.nan]))
    with pytest.raises(OblivioError, match="positive"):
        competition_score(0.5, 90.0, 0.0, 80.0, 100.0)
    with pytest.raises(OblivioError, match="finite"):
        competition_score(float("nan"), 90.0, 100.0, 80.0, 100.0)
