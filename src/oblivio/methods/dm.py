"""dm: unlearning by distribution matching against unseen third-party data (the oblivio flagship)."""
from __future__ import annotations

import copy
import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from scipy.stats import ks_2samp, kstwobign
from torch import nn
import torch.nn.functional as F
from torch.utils.data import TensorDataset

from ..parts import concat, labels_of, select, with_targets
from ..errors import OblivioError
from ..models import uses_batch_statistics
from ..training import check_finite, make_optimizer, predict
from .base import UnlearnData, Unlearner, register
from .common import RetainGuard, device_of, tensor_batches


def ks_critical_value(n: int, m: int, alpha: float = 0.05) -> float:
    """Asymptotic two-sample Kolmogorov-Smirnov critical value: K_(1-alpha) * sqrt((n + m) / (n m)),
    K the Kolmogorov distribution (1.358 for alpha = 0.05)."""
    return float(kstwobign.isf(alpha)) * math.sqrt((n + m) / (n * m))


def _sample(data, n: int, seed: int):
    """A seeded sample of at most ``n`` samples of ``data``, in order (a view: nothing is read)."""
    if len(data) > n:
        data = select(data, np.sort(np.random.default_rng(seed).choice(len(data), size=n, replace=False)))
    return data



def forget_label_mass(probs: torch.Tensor, labels: torch.Tensor, excluded: torch.Tensor) -> torch.Tensor:
    """Per sample, the probability on the label being forgotten: the sample's own label (random
    forgetting), or the total mass on the ``excluded`` classes (forgotten classes, backdoor target)."""
    if len(excluded):
        return probs[:, excluded].sum(1)
    return probs.gather(1, labels[:, None]).squeeze(1)


def logit_confidence(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """LiRA's logit-scaled confidence phi = log p_y - log(1 - p_y) = z_y - logsumexp(z_{-y}), per sample.

    Differentiable and unsaturated: a memorised sample at p_y = 1 - 1e-9 still has a gradient of
    order one, where p_y's own gradient p_y (1 - p_y) vanishes.
    """
    zy = logits.gather(1, labels[:, None]).squeeze(1)
    others = logits.scatter(1, labels[:, None], float("-inf"))
    return zy - torch.logsumexp(others, dim=1)


def mass_logit(logits: torch.Tensor, excluded: torch.Tensor) -> torch.Tensor:
    """Logit of the forgotten-label mass, log m - log(1 - m), from logits (unsaturated like phi)."""
    inside = torch.zeros(logits.shape[1], dtype=torch.bool, device=logits.device)
    inside[excluded] = True
    return torch.logsumexp(logits[:, inside], 1) - torch.logsumexp(logits[:, ~inside], 1)


def quantile_match(values: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """1-D optimal-transport matching loss: Huber distance between the sorted ``values`` and the
    reference's quantiles at the same ranks (a sample-level W1 that gives each rank its target)."""
    values, reference = values.float(), reference.float()  # float32 also under bf16 autocast
    ranks = (torch.arange(len(values), device=values.device, dtype=reference.dtype) + 0.5) / len(values)
    target = torch.quantile(reference, ranks)
    return F.smooth_l1_loss(values.sort().values, target)


def transfer_targets(phi_forget: torch.Tensor, phi_retain: torch.Tensor, phi_reference: torch.Tensor) -> torch.Tensor:
    """Per forget sample, the unseen value at its rank among trained-on samples: F_ref^-1(F_retain(phi)).

    The rank is taken in the retain set (a large sample of the same training distribution), so a forget
    set that happens to be harder or easier than average keeps its own difficulty, and each sample, even
    alone, gets a target; the reference (unseen) quantiles say how much confidence that rank has on data
    the model never saw."""
    ret = phi_retain.double().sort().values
    ranks = torch.searchsorted(ret, phi_forget.double().contiguous(), right=True).double() / len(ret)
    m = len(phi_reference)
    return torch.quantile(phi_reference.double(), ranks.clamp(0.5 / m, 1 - 0.5 / m)).to(phi_forget.dtype)


MIN_POPULATION = 30  # fewer forget samples than this: the set-level test is underpowered, test each sample
LINEAGE_WEIGHT = 0.5  # loss weight of samples forgotten by earlier requests, next to the new request's 1
MIN_BUDGET_STEPS = 50  # the budget never cuts a run below this (a class took ~40 capped steps on digits)
# Derived settings, fixed (chosen on digits and Fashion-MNIST MLPs and CNNs; docs/design/dm.md):
CHECK_EVERY = 5  # steps between checks of the stop and the utility guard (more when their probes are large)
FORWARD_COST = 0.5  # budget: a forward pass as a share of forward + backward (1/3 in FLOPs; 0.4-0.75 on CPUs)
MATCH_RAMP = 100.0  # class/backdoor: the matching weight grows geometrically to this multiple
RAMP_STEPS = 300  # class/backdoor: ... over at most this many steps (optimiser steps, whatever the data's size)
OTHERS_SHARE = 0.1  # classes: weight, as a share of anchor_weight, of the forget samples' other-class anchor
MASS_FLOOR = 0.01  # class/backdoor stop: forgotten-label masses below this are equal for the KS test
STAT_SAMPLES = 512  # class/backdoor stop: probe size of the KS test (forget and reference)
MAX_BACKDOOR_SHARE = 0.02  # backdoor stop: the most of the forget set it leaves on the target (see the docstring)
FAMILIARITY_SAMPLES = 4096  # random subset stop: probe size of the familiarity z (forget and reference)
LOSS_CLIP = 10.0  # familiarity z: per-sample cross-entropy clip
NULL_DRAWS = 1000  # familiarity z: bootstrap draws of its null distribution (calibrated_z)
NULL_BELOW = 1000  # familiarity z: forget probes this large use the plain Welch z (normal at this size; the null is costly)
UTILITY_SAMPLES = 512  # utility guard: retain samples whose accuracy it watches
MAX_BACKOFFS = 10  # utility guard: lr halvings before the run stops


def welch_z(forget: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """(mean reference - mean forget) / Welch standard error, over the last dimension (batched).

    With one forget sample its variance is unknown and counts as 0 (only the reference's is used)."""
    n, m = forget.shape[-1], reference.shape[-1]
    var_f = forget.var(-1) / n if n > 1 else torch.zeros(forget.shape[:-1], dtype=forget.dtype, device=forget.device)
    var_r = reference.var(-1) / m if m > 1 else torch.zeros_like(var_f)
    return (reference.mean(-1) - forget.mean(-1)) / (var_f + var_r).clamp(min=1e-12).sqrt()


def calibrated_z(z: float, forget_size: int, reference: torch.Tensor, draws: int = 1000, seed: int = 0,
                 chunk: int = 100) -> tuple[float, tuple[float, float, float]]:
    """``z`` (a Welch z of ``forget_size`` forget values against ``reference``) restated against its own
    null distribution: the Welch z of ``forget_size`` and ``len(reference)`` values both drawn (with
    replacement, ``draws`` times, seeded) from ``reference``, as when the forget set is unseen data.

    Returns ((z - median) / (q84 - median) above the null median, (z - median) / (median - q16) below
    it; ~z when the null is N(0, 1)), and the null's (q16, median, q84). Per-sample losses are very
    skewed (most ~0, a tail of hard samples), so for few forget samples the mean is usually under the
    reference's and the raw z is positive on unseen data: digits CNN, 144 reference samples, the null's
    median was 2.31 / 2.00 / 1.31 / 0.14 / -0.01 at 1 / 5 / 13 / 50 / 129 forget samples, so dm never
    stopped on a one-sample request. From ~100 samples on, the correction is within noise.
    """
    gen = torch.Generator().manual_seed(seed)
    ref = reference.detach().double().cpu()
    m = len(ref)
    nulls = []
    for start in range(0, draws, chunk):
        b = min(chunk, draws - start)
        f = ref[torch.randint(m, (b, forget_size), generator=gen)]
        r = ref[torch.randint(m, (b, m), generator=gen)]
        nulls.append(welch_z(f, r))
    q16, med, q84 = (float(q) for q in torch.quantile(torch.cat(nulls), torch.tensor([0.16, 0.5, 0.84], dtype=torch.double)))
    spread = (q84 - med) if z >= med else (med - q16)
    return (z - med) / max(spread, 1e-6), (q16, med, q84)


def familiarity_z(logits_f: torch.Tensor, y_f: torch.Tensor, logits_r: torch.Tensor, y_r: torch.Tensor,
                  loss_clip: float, null_draws: int = 1000, seed: int = 0) -> tuple[float, float, dict[str, float]]:
    """How much more familiar the forget samples are than unseen reference samples, in standard errors.

    Returns (z_loss, z_acc, stats): z_loss = (mean reference loss - mean forget loss) / its standard
    error (Welch), per-sample cross-entropy clipped at ``loss_clip``, lowered to its value against its
    null distribution where that is lower (``calibrated_z``, ``null_draws`` bootstrap draws; 0 = the
    raw Welch z, also in ``stats["z_loss_welch"]``); z_acc = (forget accuracy - reference accuracy) /
    pooled binomial standard error. Positive = the forget set is remembered.
    """
    phi_f = logit_confidence(logits_f.double(), y_f)
    phi_r = logit_confidence(logits_r.double(), y_r)
    loss_f, loss_r = F.softplus(-phi_f).clamp(max=loss_clip), F.softplus(-phi_r).clamp(max=loss_clip)
    n, m = len(loss_f), len(loss_r)
    z_welch = float(welch_z(loss_f, loss_r))
    z_loss = min(z_welch, calibrated_z(z_welch, n, loss_r, null_draws, seed)[0]) if null_draws > 0 else z_welch
    acc_f, acc_r = float((phi_f > 0).double().mean()), float((phi_r > 0).double().mean())
    pooled = (acc_f * n + acc_r * m) / (n + m)
    se = math.sqrt(max(pooled * (1 - pooled) * (1 / n + 1 / m), 1e-12))
    z_acc = (acc_f - acc_r) / se
    return z_loss, z_acc, {"forget_accuracy": acc_f, "reference_accuracy": acc_r, "z_loss_welch": z_welch,
                           "forget_loss": float(loss_f.mean()), "reference_loss": float(loss_r.mean())}


@register
class DistributionMatching(Unlearner):
    """Fine-tune until the forget set's predictions are distributed like those on unseen data.

    Paper: "Fast yet versatile machine unlearning for deep neural networks" (Neural Networks 190, 2025).
    Uses the model, the forget set, a third-party pool (same domain, never trained on) and, if given, the retain
    set; no training history. The loss is a matching term on the forget set + retain cross-entropy +
    ``anchor_weight`` x KL(original || model) on retain and reference batches (keeps every other output).

    **Random subset.** The matched statistic is LiRA's logit-scaled confidence phi = log p_y - log(1 - p_y). Each
    forget sample gets its own target: the unseen value at its rank among retain samples (``transfer_targets``),
    never above its current phi, matched with a Huber loss (without a retain set: each batch's sorted phi against
    the reference pool's quantiles). Stop: the familiarity z (Welch z of mean clipped loss against the reference,
    lowered to its bootstrap null for small sets, or the accuracy z) is at most ``z_stop``. Under
    ``MIN_POPULATION`` samples a set-level test has no power (``info["underpowered"]``): every sample must be at
    most its target (plus a tenth of the reference's phi spread); ``info["per_sample"]`` gives each sample's phi, target
    and share of unseen samples at least as confident. ``previously_forgotten`` (the lineage) joins the forget set at
    weight ``LINEAGE_WEIGHT``: what must look unseen is everything deleted so far.

    **Class or backdoor.** The matched statistic is the logit of the mass on the forgotten labels; the reference is
    the third-party pool without those labels (for classes, also without the samples the model predicts as one:
    a retrained model cannot). The matching weight grows geometrically by ``MATCH_RAMP`` over ``RAMP_STEPS`` steps
    (fewer on a short budget), so the cost does not grow with the data. For classes the anchor also holds, on the
    forget samples, the original's distribution over the remaining classes (KL at ``OTHERS_SHARE`` x
    ``anchor_weight``), so their mass goes where the original's second choices are, as a retrained model's does.
    Stop: the KS statistic of the mass at most its ``alpha`` critical value, and no forget sample on a forgotten label
    (backdoor: no more than the reference's share on the target, a retrain's confusion, at most ``MAX_BACKDOOR_SHARE``:
    ``info["allowed_share"]``); while more is, the budget does not end the run (``info["budget_extended_by"]``).

    Nothing to forget at step 0 returns the model unchanged (``info["nothing_to_forget"]``); a run that ends at its budget
    unmatched warns (``info["warnings"]``). A utility guard undoes steps that cost more than ``max_utility_drop`` retain
    accuracy and halves the lr. Upper-case constants: derived.

    Options (defaults chosen on digits and Fashion-MNIST MLPs and CNNs; the runs are in docs/design/dm.md):
    - ``lr`` / ``optimizer`` / ``batch_size``: the fine-tuning steps (forget, reference and retain batches).
    - ``max_steps``: the most steps a run takes.
    - ``budget``: at most this share of a retrain's sample passes (``train_epochs`` x retain samples, when known).
    - ``phi_weight`` / ``z_stop``: random subset: weight of the matching term; familiarity z at which it stops.
    - ``match_weight`` / ``alpha``: class or backdoor: starting weight of the matching term; level of the KS stop.
    - ``anchor_weight`` / ``retain_weight``: how hard everything but the forget set keeps its outputs (0 = off).
    - ``max_utility_drop``: the retain accuracy (a share) the run may lose before it backs off.
    """

    name = "dm"
    paper = "Fast yet versatile machine unlearning for deep neural networks (2025)"
    requires = frozenset({"third_party"})

    @dataclass
    class Config:
        lr: float = 1e-3
        optimizer: str = "adam"
        batch_size: int = 128
        max_steps: int = 500
        budget: float | None = 0.5
        phi_weight: float = 1.0
        z_stop: float = 1.0
        match_weight: float = 0.02
        alpha: float = 0.05
        anchor_weight: float = 10.0
        retain_weight: float = 1.0
        max_utility_drop: float = 0.05

    @classmethod
    def search_space(cls, trial) -> dict:
        """lr (generic); the loss weights of both regimes (match, phi, anchor; log-uniform within 10x
        of the default); the random-subset stopping threshold z_stop in [0.5, 2]."""
        space, defaults = super().search_space(trial), cls.Config()
        for name in ("match_weight", "phi_weight", "anchor_weight"):
            value = getattr(defaults, name)
            space[name] = trial.suggest_float(name, value / 10, value * 10, log=True)
        space["z_stop"] = trial.suggest_float("z_stop", 0.5, 2.0)
        return space

    @staticmethod
    def excluded_classes(data: UnlearnData) -> tuple[int, ...]:
        """Labels no unseen sample should get: forgotten classes, or the backdoor target."""
        if data.forget_classes:
            return tuple(data.forget_classes)
        if data.backdoor_target is not None:
            return (data.backdoor_target,)
        return ()

    def reference_pool(self, data: UnlearnData, model: nn.Module | None = None) -> TensorDataset:
        """The third-party samples that show what 'unseen' looks like for this request.

        Without the excluded labels; for class forgetting and a ``model``, also without the samples that
        ``model`` predicts as a forgotten class (a retrained model cannot)."""
        excluded = self.excluded_classes(data)
        y = labels_of(data.third_party)
        keep = ~torch.isin(y, torch.tensor(excluded, dtype=y.dtype))
        if not keep.any():
            raise OblivioError(f"method 'dm': the third-party pool has no sample outside the forgotten classes {list(excluded)}")
        pool = select(data.third_party, torch.nonzero(keep).flatten())
        return self.without_confused(pool, model, data) if model is not None else pool

    def without_confused(self, pool: TensorDataset, model: nn.Module, data: UnlearnData) -> TensorDataset:
        """``pool`` less the samples ``model`` predicts as a forgotten class (class forgetting; otherwise, or
        when that would leave nothing, ``pool`` itself)."""
        if not data.forget_classes:
            return pool
        logits, _ = predict(model, pool)
        clear = ~torch.isin(logits.argmax(1), torch.tensor(data.forget_classes))
        return select(pool, torch.nonzero(clear).flatten()) if clear.any() else pool

    def step_costs(self, data: UnlearnData, n_forget: int, n_reference: int, use_retain: bool,
                   probes: int, anchor_whole_batch: bool = False) -> tuple[float, int]:
        """(sample passes per step, steps between checks). A step is its forget, reference and retain batches
        (forward + backward = 1 pass) and the anchor's forward over the last two (over all three with
        ``anchor_whole_batch``: models with BatchNorm); a check, every ``CHECK_EVERY``
        steps or less often when its probes (``probes`` + ``UTILITY_SAMPLES``, forward only) would cost more than
        half of the steps between checks, so the checks stay under a third of the run. A forward pass counts
        ``FORWARD_COST``; one-off passes (the first check; for classes, the original's outputs on the forget set)
        are not counted."""
        c = self.config
        n_f, n_t = min(c.batch_size, n_forget), min(c.batch_size, n_reference)
        n_r = min(c.batch_size, len(data.retain)) if use_retain else 0
        anchored = FORWARD_COST * (n_t + n_r + (n_f if anchor_whole_batch else 0)) if c.anchor_weight > 0 else 0.0
        step = n_f + n_t + n_r + anchored
        check = FORWARD_COST * (UTILITY_SAMPLES + probes)
        every = max(CHECK_EVERY, math.ceil(2 * check / step))
        return step + check / every, every

    def step_budget(self, data: UnlearnData, per_step: float) -> int:
        """``max_steps``, lowered so the run costs at most ``budget`` x a retrain's sample passes (``train_epochs`` x
        ``len(retain)``) when both are known, but never under ``MIN_BUDGET_STEPS`` (a retrain that cheap is cheaper
        than any cap is worth)."""
        c = self.config
        if c.budget is None or not data.train_epochs or data.retain is None or len(data.retain) == 0:
            return c.max_steps
        capped = int(c.budget * data.train_epochs * len(data.retain) / per_step)
        return min(c.max_steps, max(MIN_BUDGET_STEPS, capped))

    def run(self, model: nn.Module, data: UnlearnData) -> dict[str, Any]:
        c = self.config
        if c.max_steps < 0 or c.batch_size <= 0 or c.lr <= 0:
            raise OblivioError("method 'dm': max_steps must be >= 0; batch_size and lr positive")
        if c.budget is not None and not c.budget > 0:
            raise OblivioError(f"method 'dm': budget must be positive (a share of a retrain's cost) or None, got {c.budget}")
        dev = device_of(model)
        labelled = self.reference_pool(data)
        reference = self.without_confused(labelled, model, data)
        excluded = torch.tensor(self.excluded_classes(data), dtype=torch.long)
        by_sample = len(excluded) == 0  # random subset: match per-sample familiarity (phi); else the forgotten mass
        forget_all = data.forget
        weights = torch.ones(len(forget_all))
        lineage = by_sample and data.previously_forgotten is not None
        if lineage:  # everything deleted so far must look unseen, the new request weighted first
            forget_all = concat([data.forget, data.previously_forgotten])
            weights = torch.cat([weights, torch.full((len(data.previously_forgotten),), LINEAGE_WEIGHT)])
        yf_all = labels_of(forget_all)
        if by_sample:
            probe_f = _sample(forget_all, FAMILIARITY_SAMPLES, data.seed)
            probe_t = _sample(reference, FAMILIARITY_SAMPLES, data.seed + 1)
            threshold = c.z_stop
            null_draws = NULL_DRAWS if len(probe_f) < NULL_BELOW else 0  # a large probe: the plain Welch z
        else:
            probe_f = _sample(data.forget, STAT_SAMPLES, data.seed)
            probe_t = _sample(reference, STAT_SAMPLES, data.seed + 1)
            threshold = ks_critical_value(len(probe_f), len(probe_t), c.alpha)
        stats: dict[str, Any] = {}
        natural: list[float] = []  # backdoor: the reference's share predicted as the target by the model as given
        target: list[torch.Tensor] = []  # the reference pool's phi under the model as given (random subsets)
        per_sample = by_sample and data.retain is not None and len(data.retain) > 1
        underpowered = by_sample and len(forget_all) < MIN_POPULATION
        if underpowered and per_sample:  # matched when no sample is above its own target (see the docstring)
            threshold = 0.0

        def measure() -> tuple[float, float]:
            lf, yf = predict(model, probe_f)
            lt, yt = predict(model, probe_t)
            if by_sample:
                z_loss, z_acc, found = familiarity_z(lf, yf, lt, yt, LOSS_CLIP, null_draws, data.seed)
                if not target:
                    target.append(logit_confidence(lt, yt).to(dev))
                    if per_sample:  # each forget sample's own target, from the model as given
                        lr_, yr_ = predict(model, _sample(data.retain, FAMILIARITY_SAMPLES, data.seed + 3))
                        la, ya = predict(model, forget_all)
                        phi_now = logit_confidence(la, ya)  # never a target above where a sample already is
                        target.append(torch.minimum(transfer_targets(phi_now, logit_confidence(lr_, yr_),
                                                                     target[0].cpu()), phi_now).to(dev))
                stats.update(found, z_loss=z_loss, z_accuracy=z_acc)
                if underpowered and per_sample:
                    phi_now = logit_confidence(*predict(model, forget_all)).to(dev)  # every sample, aligned with its target
                    tolerance = 0.1 * float(target[0].std())
                    above = int((phi_now > target[1] + tolerance).sum())
                    phi_ref = logit_confidence(lt, yt)  # unseen samples under the model as it is now
                    request = len(data.forget)  # the new request's samples come first (then the lineage's)
                    evidence = [{"phi": round(float(p), 3), "target": round(float(t), 3),
                                 "unseen_at_least_as_confident": round(float((phi_ref >= p).double().mean()), 3)}
                                for p, t in zip(phi_now[:request].cpu(), target[1][:request].cpu())]
                    stats.update(samples_above_target=above, target_tolerance=tolerance, per_sample=evidence)
                    return float(above), 0.0
                return max(z_loss, z_acc), 0.0
            if not target:
                target.append(mass_logit(lt, excluded).to(dev))
                if not data.forget_classes:  # backdoor: unseen samples of other classes go to the target this often
                    natural.append(min(float(torch.isin(lt.argmax(1), excluded).float().mean()), MAX_BACKDOOR_SHARE))
            pf, pt = lf.softmax(1), lt.softmax(1)
            mf = forget_label_mass(pf, yf, excluded).clamp(min=MASS_FLOOR)
            mt = forget_label_mass(pt, yt, excluded).clamp(min=MASS_FLOOR)
            share = float(torch.isin(pf.argmax(1), excluded).float().mean())
            return float(ks_2samp(mf.numpy(), mt.numpy(), method="asymp").statistic), share  # the statistic only: no exact p-value

        def among_others(z: torch.Tensor) -> torch.Tensor:
            """Log-probabilities over the classes not forgotten (the forgotten ones at ~0)."""
            return z.index_fill(1, excluded_dev, float("-inf")).log_softmax(1).clamp(min=-100.0)

        def match_weight() -> float:
            """The class/backdoor matching weight at this step: match_weight, grown geometrically by
            MATCH_RAMP over RAMP_STEPS, max_steps or twice the step budget, whichever is shortest."""
            return c.match_weight * MATCH_RAMP ** min(steps / max(min(RAMP_STEPS, c.max_steps, 2 * max_steps), 1), 1.0)

        def within_budget() -> bool:
            """Under the step budget; past it, a class or backdoor run goes on (up to max_steps) while forget
            samples are still predicted as a forgotten label: the budget trims the matching, never the forgetting."""
            return steps < max_steps or (not by_sample and share > max_share and steps < c.max_steps)

        def matched(distance: float, share: float) -> bool:
            return distance <= threshold and share <= max_share

        forget_it = tensor_batches(with_targets(forget_all, torch.arange(len(yf_all))), c.batch_size, data.seed)
        weights = weights.to(dev)
        third_it = tensor_batches(reference, c.batch_size, data.seed + 1)
        use_retain = data.retain is not None and c.retain_weight > 0
        retain_it = tensor_batches(data.retain, c.batch_size, data.seed + 2) if use_retain else None
        excluded_dev = excluded.to(dev)
        whole_batch = uses_batch_statistics(model)  # BatchNorm: the anchor sees the model's whole batch
        per_step, every = self.step_costs(data, len(forget_all), len(reference), use_retain, len(probe_f) + len(probe_t),
                                          whole_batch)
        max_steps = self.step_budget(data, per_step)
        initial, share = measure()
        max_share = natural[0] if natural else 0.0  # classes: none (the reference has no sample predicted as one)
        initial_stats = dict(stats)
        distance, steps = initial, 0
        stopped_by = "already_matched" if matched(distance, share) else "budget"
        opt = make_optimizer(model.parameters(), c.optimizer, c.lr) if stopped_by == "budget" else None
        # utility guard: Adam's normalised steps at lr 1e-3 wrecked an SGD-trained ResNet-18 in 5 steps
        # (see docs/design/dm.md)
        # (without a retain set the probe is the reference pool: the forgotten classes' samples must fall)
        kept_data = dataclasses.replace(data, third_party=reference)
        guard = RetainGuard(model, kept_data, c.max_utility_drop, UTILITY_SAMPLES) if opt else None
        good = guard.snapshot(model) if opt else None
        lr, backoffs = c.lr, 0
        anchor = copy.deepcopy(model).train() if c.anchor_weight > 0 and stopped_by == "budget" else None
        held_others = None  # classes: the original's distribution over the other classes, per forget sample, once
        if anchor is not None and data.forget_classes and not whole_batch:
            held_others = among_others(predict(anchor, forget_all)[0].to(dev))
        model.train()  # the checks (predict, the guard) restore the mode they find
        while stopped_by == "budget" and within_budget():
            (xf, pos), (xt, _) = next(forget_it), next(third_it)  # forget batches carry sample positions
            yf = yf_all[pos]
            parts = [xf, xt]
            if use_retain:
                xr, yr = next(retain_it)
                parts.append(xr)
            batch = torch.cat(parts).to(dev)
            logits = model(batch).float()  # losses in float32, also under bf16 autocast
            nf, nt = len(xf), len(xt)
            if by_sample:
                phi_f = logit_confidence(logits[:nf], yf.to(dev))
                if per_sample:
                    pos_dev = pos.to(dev)
                    w = weights[pos_dev]
                    per = F.smooth_l1_loss(phi_f, target[1][pos_dev].float(), reduction="none")
                    loss = c.phi_weight * (w * per).sum() / w.sum()
                else:
                    loss = c.phi_weight * quantile_match(phi_f, target[0])
            else:
                loss = match_weight() * quantile_match(mass_logit(logits[:nf], excluded_dev), target[0])
            if anchor is not None:  # everything but the forget set keeps the original's outputs
                with torch.no_grad():  # same batch, same mode: BatchNorm statistics as in the model's pass
                    anchored = anchor(batch if whole_batch else batch[nf:]).float()
                kept = anchored[nf:] if whole_batch else anchored
                loss = loss + c.anchor_weight * F.kl_div(logits[nf:].log_softmax(1), kept.log_softmax(1),
                                                         log_target=True, reduction="batchmean")
                if data.forget_classes:  # where the mass goes: among the other classes, as the original ranks them
                    held = held_others[pos.to(dev)] if held_others is not None else among_others(anchored[:nf])
                    loss = loss + OTHERS_SHARE * c.anchor_weight * F.kl_div(
                        among_others(logits[:nf]), held, log_target=True, reduction="batchmean")
            if use_retain:
                loss = loss + c.retain_weight * F.cross_entropy(logits[nf + nt :], yr.to(dev))
            check_finite(loss, f"method 'dm' step {steps + 1}")
            opt.zero_grad()
            loss.backward()
            opt.step()
            steps += 1
            if steps % every == 0 or steps in (max_steps, c.max_steps):
                if not guard.check(model):  # utility fell: back to the last good weights, half the step size
                    model.load_state_dict(good)
                    backoffs += 1
                    if backoffs > MAX_BACKOFFS:
                        stopped_by = "utility_guard"
                        break
                    lr /= 2
                    opt = make_optimizer(model.parameters(), c.optimizer, lr)
                    continue
                good = guard.snapshot(model)
                distance, share = measure()
                if matched(distance, share):
                    stopped_by = "threshold"
        model.eval()
        info: dict[str, Any] = {
            "steps": steps, "distance": distance, "initial_distance": initial, "stopped_by": stopped_by,
            "threshold": threshold, "statistic": "familiarity_z" if by_sample else "ks_forgotten_mass",
            "step_budget": max_steps, "check_every": every,
        }
        if steps > max_steps:
            info["budget_extended_by"] = steps - max_steps  # steps past the budget to stop predicting the label
        if backoffs:
            info |= {"backoffs": backoffs, "final_lr": lr, "safeguard": (
                f"retain accuracy fell more than {100 * c.max_utility_drop:g} points below the original's "
                f"{100 * guard.baseline:.1f}% {backoffs} time(s): weights restored, lr halved to {lr:.3g}")}
        if stopped_by == "utility_guard":
            distance, share = measure()
            info["distance"] = distance
        if by_sample:
            info |= {f"initial_{k}": v for k, v in initial_stats.items()} | stats
            if underpowered:
                info["underpowered"] = True
            if lineage:
                info["lineage_samples"] = len(data.previously_forgotten)
        else:
            info["forgotten_share"] = share
            if natural:
                info["allowed_share"] = max_share
            info["reference_size"] = len(reference)
            if data.forget_classes:
                info["reference_confused_dropped"] = len(labelled) - len(reference)
        if stopped_by == "budget" and not matched(distance, share):
            capped = steps < c.max_steps  # the cost budget ended the run, not max_steps
            info["warnings"] = [
                f"dm stopped at {f'its step budget ({steps} steps)' if capped else f'max_steps ({steps})'} before the "
                f"forget set looked unseen ({info['statistic']} {distance:.3g}, stop at {threshold:.3g}): "
                + ("a larger budget (budget=None: up to max_steps) buys a closer match; for a large share of the data "
                   "a retrain may cost little more" if capped else "a larger max_steps buys a closer match")]
        if stopped_by == "already_matched":
            info["nothing_to_forget"] = True
            info["reason"] = (
                "before any step every forget sample was at or below the confidence unseen data of its rank gets "
                "(tested one by one: too few samples for a set-level test)" if underpowered and per_sample else
                f"before any step the forget set was no more familiar than unseen data "
                f"({'familiarity z' if by_sample else 'KS'} {initial:.3g} <= {threshold:.3g})"
            )
        return info
