"""dm: unlearning by distribution matching against unseen third-party data (the oblivio flagship)."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from scipy.stats import ks_2samp, kstwobign
from torch import nn
import torch.nn.functional as F
from torch.utils.data import TensorDataset

from ..errors import OblivioError
from ..training import check_finite, make_optimizer, predict
from .base import UnlearnData, Unlearner, register
from .common import device_of, tensor_batches, tensors_of


def ks_critical_value(n: int, m: int, alpha: float = 0.05) -> float:
    """Asymptotic two-sample Kolmogorov-Smirnov critical value: K_(1-alpha) * sqrt((n + m) / (n m)),
    K the Kolmogorov distribution (1.358 for alpha = 0.05)."""
    return float(kstwobign.isf(alpha)) * math.sqrt((n + m) / (n * m))


def mmd2(a: torch.Tensor, b: torch.Tensor, bandwidths: tuple[float, ...]) -> torch.Tensor:
    """Squared MMD (biased V-statistic) between samples ``a`` (n, d) and ``b`` (m, d), sum of Gaussian kernels."""
    def sq(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:  # squared distances, no sqrt (finite gradient at 0)
        return (u[:, None, :] - v[None, :, :]).pow(2).sum(-1)

    d_aa, d_bb, d_ab = sq(a, a), sq(b, b), sq(a, b)
    total = a.new_zeros(())
    for s in bandwidths:
        g = -0.5 / (s * s)
        total = total + (d_aa * g).exp().mean() + (d_bb * g).exp().mean() - 2 * (d_ab * g).exp().mean()
    return total


def _subsample(data, n: int, seed: int) -> TensorDataset:
    x, y = tensors_of(data)
    if len(y) > n:
        idx = torch.as_tensor(np.sort(np.random.default_rng(seed).choice(len(y), size=n, replace=False)))
        x, y = x[idx], y[idx]
    return TensorDataset(x, y)


def forget_label_mass(probs: torch.Tensor, labels: torch.Tensor, excluded: torch.Tensor) -> torch.Tensor:
    """Per sample, the probability on the label being forgotten: the sample's own label (random
    forgetting), or the total mass on the ``excluded`` classes (forgotten classes, backdoor target)."""
    if len(excluded):
        return probs[:, excluded].sum(1)
    return probs.gather(1, labels[:, None]).squeeze(1)


@register
class DistributionMatching(Unlearner):
    """Fine-tune until the forget set's predictions are distributed like those on unseen data.

    Paper: "Fast yet versatile machine unlearning for deep neural networks" (2025). Uses only the
    model, the forget set, a third-party pool (same domain, never trained on) and optionally a
    retain subset; no training history is stored.

    Matched quantity: per sample, the *forget-label mass* ``m`` -- the probability the model puts
    on the label being forgotten: the sample's own label for a random subset (the classic
    membership signal), the total mass on the forgotten classes for class forgetting, the mass on
    the target class for a backdoor. The reference pool is the third-party data minus the
    forgotten classes / the backdoor target (it "naturally lacks" those labels), so unseen data
    shows the mass an untrained-on label gets: ~0 for a class or target, the unseen confidence
    distribution for a random subset.

    Loss per step: ``match_weight * MMD^2({m(x_f)}, sg{m(x_t)}) + retain_weight * CE(retain)``,
    MMD with a sum of Gaussian kernels (bandwidths 0.05..1 on values in [0, 1]) between the batch
    of forget samples and a batch of reference samples: the *distributions over samples* are
    compared, no forget sample gets a per-sample target. The reference side is the current
    model's output with stop-gradient (the model cannot move the reference towards the forget
    set); all inputs of a step share one forward pass (BatchNorm sees a mixture). Adam, lr 1e-3.

    Why not whole softmax vectors (measured on digits, class 3, MLP): MMD between full softmax
    vectors also matches the reference pool's class histogram, so forgotten samples were pushed
    onto unrelated classes (0, 1, 7) and retain accuracy fell from 99% to 51% in 20 steps; with
    sorted (class-permutation invariant) vectors plus ``m`` the forgotten class collapsed onto one
    confident class (9) and dragged retain samples of 2 and 8 with it (retain 81%). Matching
    ``m`` alone lets the mass leave towards the classes the model finds similar, as retraining
    does. The retain term dominates by default (match_weight 0.02) because the forgetting
    gradient otherwise dominates Adam's normalised steps and erodes shared features.

    Stopping rule (part of the method): every ``check_every`` steps, the two-sample KS statistic
    between ``m`` on a fixed subsample (``stat_samples`` = 512) of the forget set and of the reference
    pool, with values below ``mass_floor`` (1%) treated as equal -- KS is scale-free and would
    otherwise demand that 1e-3 match 1e-6 on a label nobody predicts. The run stops when it is at
    most ``threshold``, by default the KS critical value at ``alpha`` = 0.05 for the two sample
    sizes (the point where a KS test can no longer tell the samples apart), and -- for class or
    backdoor forgetting -- at most ``max_forgotten_share`` of forget samples are still predicted as
    a forgotten class / the target (``max_forgotten_share`` = 2%); otherwise at ``max_steps``.
    KS on max-softmax confidence was rejected as the stopping statistic: a retrained model is far
    less confident on a class it never saw than on seen classes (KS 0.75 on digits, class 3), so
    that test would demand over-confident forgetting and never stop for a faithful run. On digits a model retrained
    without the forget set passes this test in all three scenarios and the original fails it for
    class and backdoor (for a random 10% the MLP's members are already indistinguishable, so dm
    stops at step 0). ``info``: steps, distance (last KS), initial_distance, stopped_by
    ("already_matched", "threshold" or "budget"), threshold and forgotten_share.
    """

    name = "dm"
    paper = "Fast yet versatile machine unlearning for deep neural networks (2025)"
    requires = frozenset({"third_party"})

    @dataclass
    class Config:
        lr: float = 1e-3
        optimizer: str = "adam"
        batch_size: int = 128
        retain_batch_size: int = 128
        match_weight: float = 0.02
        retain_weight: float = 1.0
        bandwidths: tuple[float, ...] = (0.05, 0.1, 0.2, 0.5, 1.0)
        max_steps: int = 500
        check_every: int = 5
        threshold: float | None = None
        alpha: float = 0.05
        stat_samples: int = 512
        mass_floor: float = 0.01
        max_forgotten_share: float = 0.02

    @classmethod
    def search_space(cls, trial) -> dict:
        """Provisional (the dm redesign may change the options): lr (generic) and, where dm has
        them, the match and retain weights (log-uniform within 10x of the default)."""
        space, defaults = super().search_space(trial), cls.Config()
        for name in ("match_weight", "retain_weight"):
            value = getattr(defaults, name, None)
            if isinstance(value, float) and value > 0:
                space[name] = trial.suggest_float(name, value / 10, value * 10, log=True)
        return space

    @staticmethod
    def excluded_classes(data: UnlearnData) -> tuple[int, ...]:
        """Labels no unseen sample should get: forgotten classes, or the backdoor target."""
        if data.forget_classes:
            return tuple(data.forget_classes)
        if data.backdoor_target is not None:
            return (data.backdoor_target,)
        return ()

    def reference_pool(self, data: UnlearnData) -> TensorDataset:
        """The third-party samples that show what 'unseen' looks like for this request."""
        excluded = self.excluded_classes(data)
        x, y = tensors_of(data.third_party)
        keep = ~torch.isin(y, torch.tensor(excluded, dtype=y.dtype))
        if not keep.any():
            raise OblivioError(f"method 'dm': the third-party pool has no sample outside the forgotten classes {list(excluded)}")
        return TensorDataset(x[keep], y[keep])

    def run(self, model: nn.Module, data: UnlearnData) -> dict[str, Any]:
        c = self.config
        if c.max_steps < 0 or c.check_every <= 0 or c.batch_size <= 0 or c.lr <= 0 or not c.bandwidths:
            raise OblivioError("method 'dm': max_steps must be >= 0; check_every, batch_size, lr and bandwidths positive")
        dev = device_of(model)
        reference = self.reference_pool(data)
        excluded = torch.tensor(self.excluded_classes(data), dtype=torch.long)
        probe_f = _subsample(data.forget, c.stat_samples, data.seed)
        probe_t = _subsample(reference, c.stat_samples, data.seed + 1)
        threshold = c.threshold if c.threshold is not None else ks_critical_value(len(probe_f), len(probe_t), c.alpha)

        def measure() -> tuple[float, float]:
            pf = predict(model, probe_f)[0].softmax(1)
            pt = predict(model, probe_t)[0].softmax(1)
            mf = forget_label_mass(pf, probe_f.tensors[1], excluded).clamp(min=c.mass_floor)
            mt = forget_label_mass(pt, probe_t.tensors[1], excluded).clamp(min=c.mass_floor)
            share = float(torch.isin(pf.argmax(1), excluded).float().mean()) if len(excluded) else 0.0
            return float(ks_2samp(mf.numpy(), mt.numpy()).statistic), share

        def matched(ks: float, share: float) -> bool:
            return ks <= threshold and share <= c.max_forgotten_share

        forget_it = tensor_batches(data.forget, c.batch_size, data.seed)
        third_it = tensor_batches(reference, c.batch_size, data.seed + 1)
        use_retain = data.retain is not None and c.retain_weight > 0
        retain_it = tensor_batches(data.retain, c.retain_batch_size, data.seed + 2) if use_retain else None
        excluded_dev = excluded.to(dev)
        initial, share = measure()
        ks, steps = initial, 0
        stopped_by = "already_matched" if matched(ks, share) else "budget"
        opt = make_optimizer(model.parameters(), c.optimizer, c.lr) if stopped_by == "budget" else None
        while stopped_by == "budget" and steps < c.max_steps:
            model.train()
            (xf, yf), (xt, yt) = next(forget_it), next(third_it)
            parts = [xf, xt]
            if use_retain:
                xr, yr = next(retain_it)
                parts.append(xr)
            logits = model(torch.cat(parts).to(dev))
            nf, nt = len(xf), len(xt)
            mf = forget_label_mass(logits[:nf].softmax(1), yf.to(dev), excluded_dev)
            mt = forget_label_mass(logits[nf : nf + nt].softmax(1), yt.to(dev), excluded_dev).detach()
            loss = c.match_weight * mmd2(mf[:, None], mt[:, None], tuple(c.bandwidths))
            if use_retain:
                loss = loss + c.retain_weight * F.cross_entropy(logits[nf + nt :], yr.to(dev))
            check_finite(loss, f"method 'dm' step {steps + 1}")
            opt.zero_grad()
            loss.backward()
            opt.step()
            steps += 1
            if steps % c.check_every == 0 or steps == c.max_steps:
                ks, share = measure()
                if matched(ks, share):
                    stopped_by = "threshold"
        model.eval()
        info = {"steps": steps, "distance": ks, "initial_distance": initial, "stopped_by": stopped_by,
                "threshold": threshold, "forgotten_share": share}
        if stopped_by == "already_matched":  # the generic convention of methods.base.UnlearnResult
            info |= {"nothing_to_forget": True, "nothing_to_forget_reason": (
                f"dm's stopping test already passed before any step (KS {initial:.3g} <= {threshold:.3g}, "
                f"forgotten share {share:.1%}): the forget set is indistinguishable from unseen data")}
        return info
