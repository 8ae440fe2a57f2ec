"""LiRA, offline variant (Carlini et al. 2022, "Membership inference attacks from first principles").

K shadow models train on random halves of the shadow pool (train pool + third-party pool), each
sample in exactly K/2 of them (Carlini's balanced design). For every audited sample we record the
logit-scaled confidence phi = log p_y - log(1 - p_y) under each shadow, fit a Gaussian to the phis
of the shadows that did NOT train on it (the "out" distribution), and score a target model by how
far its phi lies above that Gaussian: z = (phi_target - mu_out) / sigma_out. The one-sided
likelihood test 1 - Pr[Z > phi_target] is monotone in z, so z ranks samples the same way.

As in Hayes et al. 2024 for unlearning, the attack is applied to the forget samples (members of
the original model) vs held-out reference samples (never trained on): an unlearned model should
score them alike (AUC 0.5), as a retrained model does.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Callable, Union

import numpy as np
import torch
from torch import nn
from torch.utils.data import TensorDataset

from ..errors import OblivioError
from ..parallel import Executor, SerialExecutor, Task, TaskFailed
from ..scenarios import Split
from ..training import TrainConfig, predict, train
from .metrics import Reference, logit_confidence, membership_roc, reference_set

ModelFactory = Callable[[tuple, int], nn.Module]


@dataclass
class LiraConfig:
    """How shadows are built: ``arch`` (registered name, or ``factory(input_shape, num_classes)``) and training.

    ``fix_variance`` pools one variance over all samples (recommended by Carlini et al. for few shadows).
    """

    arch: Union[str, ModelFactory] = "mlp"
    train: TrainConfig = field(default_factory=TrainConfig)
    fix_variance: bool = True

    def to_dict(self) -> dict:
        return {
            "arch": self.arch if isinstance(self.arch, str) else getattr(self.arch, "__name__", "custom"),
            "train": asdict(self.train),
            "fix_variance": self.fix_variance,
        }


@dataclass
class Shadows:
    """Out-distribution statistics of phi for the forget and reference samples, from K trained shadows."""

    mu_forget: np.ndarray
    sigma_forget: np.ndarray
    mu_reference: np.ndarray
    sigma_reference: np.ndarray
    count: int
    seconds_per_shadow: float
    config: LiraConfig


def balanced_membership(n_shadows: int, n_samples: int, seed: int) -> np.ndarray:
    """(K, N) boolean matrix: shadow k trains on sample n; every sample is in exactly K // 2 shadows."""
    rng = np.random.default_rng([seed, 11])
    order = rng.uniform(size=(n_shadows, n_samples)).argsort(0)
    return order < n_shadows // 2


def _out_stats(phi: np.ndarray, out: np.ndarray, fix_variance: bool) -> tuple[np.ndarray, np.ndarray]:
    """Per-sample mean and std of phi over the shadows that did not train on each sample ((K, N) inputs)."""
    n_out = out.sum(0)
    if (n_out == 0).any():
        raise OblivioError("LiRA: some sample was trained on by every shadow; use more shadows")
    mu = (phi * out).sum(0) / n_out
    resid = ((phi - mu) ** 2) * out
    if fix_variance:
        dof = max(int((n_out - 1).sum()), 1)
        sigma = np.full(phi.shape[1], np.sqrt(resid.sum() / dof))
    else:
        sigma = np.sqrt(resid.sum(0) / np.maximum(n_out - 1, 1))
    return mu, np.maximum(sigma, 1e-6)


def _shadow_phis(split: Split, reference: TensorDataset, members: np.ndarray, config: LiraConfig,
                 shadow_seed: int) -> tuple[np.ndarray, np.ndarray, float]:
    """Train one shadow on the pool samples ``members``; its phis on the forget and reference samples and its seconds."""
    start = time.perf_counter()
    member_data = split.subset(members)
    cfg = TrainConfig(**(asdict(config.train) | {"seed": shadow_seed, "progress": False}))
    arch = config.arch
    if not isinstance(arch, str):
        torch.manual_seed(shadow_seed)
        arch = arch(tuple(split.info.input_shape), split.info.num_classes)
    shadow, _ = train(arch, member_data, split.info.num_classes, cfg)
    phi_forget = logit_confidence(*predict(shadow, split.forget))
    phi_reference = logit_confidence(*predict(shadow, reference))
    return phi_forget, phi_reference, time.perf_counter() - start


def train_for_phis(split: Split, reference: Reference, train_idx: list[np.ndarray], config: LiraConfig,
                   seeds: list[int], executor: Executor | None, on_done: Callable[[int, object], None] | None,
                   what: str) -> tuple[np.ndarray, np.ndarray, float]:
    """Train one model per index set (``train_idx[k]`` with ``seeds[k]``) through ``executor``; their phis on the
    forget and reference samples ((K, F), (K, R)) and the mean seconds per model. ``what`` names a failed model."""
    executor = executor or SerialExecutor()
    shared_split, shared_reference = executor.share(split), executor.share(reference.data)
    tasks = [Task((shared_split, shared_reference, idx, config, s)) for idx, s in zip(train_idx, seeds)]
    results = executor.map(_shadow_phis, tasks, on_done, num_cpus=1, num_gpus=executor.gpus())
    failed = next((r for r in results if isinstance(r, TaskFailed)), None)
    if failed is not None:
        if isinstance(failed.exception, OblivioError):
            raise failed.exception
        raise OblivioError(f"{what} failed: {failed.error}") from failed.exception
    phi_forget, phi_reference, times = zip(*results)
    return np.stack(phi_forget), np.stack(phi_reference), float(np.mean(times))


def train_shadows(
    split: Split,
    n_shadows: int = 8,
    config: LiraConfig | None = None,
    seed: int = 0,
    reference: Reference | None = None,
    executor: Executor | None = None,
    on_done: Callable[[int, object], None] | None = None,
) -> Shadows:
    """Train ``n_shadows`` shadow models on balanced random halves of train pool + third-party pool.

    ``executor`` (default serial; ``oblivio.parallel.RayExecutor()`` for Ray tasks) trains them,
    ``on_done(k, result)`` is called as shadow ``k`` finishes. Deterministic for a seed on CPU,
    whichever executor. Returns the out-Gaussians of phi for forget and reference samples.
    """
    config = config or LiraConfig()
    if n_shadows < 2:
        raise OblivioError(f"LiRA needs at least 2 shadow models, got {n_shadows}")
    reference = reference or reference_set(split)
    pool = np.sort(np.concatenate([split.pool_idx, split.third_party_idx]))
    keep = balanced_membership(n_shadows, len(pool), seed)
    position = {int(i): p for p, i in enumerate(pool)}
    forget_in = keep[:, [position[int(i)] for i in split.forget_idx]]
    if reference.train_idx is not None:
        reference_in = keep[:, [position[int(i)] for i in reference.train_idx]]
    else:
        reference_in = np.zeros((n_shadows, len(reference.data)), dtype=bool)

    seeds = [int(np.random.default_rng([seed, 13, k]).integers(2**31)) for k in range(n_shadows)]
    phi_forget, phi_reference, seconds = train_for_phis(split, reference, [pool[keep[k]] for k in range(n_shadows)],
                                                        config, seeds, executor, on_done, "LiRA: a shadow model")
    n = len(split.forget_idx)  # one fit over forget + reference, so a pooled variance is shared by both
    phi = np.concatenate([phi_forget, phi_reference], axis=1)
    mu, sd = _out_stats(phi, ~np.concatenate([forget_in, reference_in], axis=1), config.fix_variance)
    return Shadows(mu[:n], sd[:n], mu[n:], sd[n:], n_shadows, seconds, config)


def lira_scores(phi_forget: np.ndarray, phi_reference: np.ndarray, shadows: Shadows) -> tuple[np.ndarray, np.ndarray]:
    """Offline LiRA scores z = (phi - mu_out) / sigma_out of a target model's phis (higher = more member-like)."""
    return (
        (phi_forget - shadows.mu_forget) / shadows.sigma_forget,
        (phi_reference - shadows.mu_reference) / shadows.sigma_reference,
    )


def lira_attack(model: nn.Module, split: Split, shadows: Shadows, reference: Reference | None = None) -> dict:
    """Offline LiRA on ``model``: AUC and TPR at 1% / 0.1% FPR (percent), forget vs reference, plus the ROC curve."""
    reference = reference or reference_set(split)
    phi_f = logit_confidence(*predict(model, split.forget))
    phi_r = logit_confidence(*predict(model, reference.data))
    return membership_roc(*lira_scores(phi_f, phi_r, shadows))


def shadow_config_for(arch: str | None, train_config: dict | None) -> LiraConfig:
    """A LiraConfig mirroring how the original model was trained (as recorded in its sidecar)."""
    known = set(TrainConfig.__dataclass_fields__)
    cfg = TrainConfig(**{k: v for k, v in (train_config or {}).items() if k in known})
    return LiraConfig(arch=arch or "mlp", train=cfg)
