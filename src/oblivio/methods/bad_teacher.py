"""Bad Teacher: distil from a competent teacher on retain data and an incompetent one on forget data.

Paper: Chundawat et al., "Can Bad Teaching Induce Forgetting? Unlearning in Deep Networks Using an Incompetent
Teacher", AAAI 2023 (arXiv 2205.08096; reference code: vikram2000b/bad-teaching-unlearning). The student starts as
a copy of the model; the competent teacher is the original, the incompetent one a randomly initialised copy of the
same architecture (seeded). Loss: KL(teacher || student) of the softmaxes at temperature T, on forget samples
(target: the incompetent teacher) mixed with a random ``retain_fraction`` of the retain set (target: the competent
teacher). Stopping rule: ``epochs`` passes over that mix; no safeguard.

Options:
- ``epochs`` (5; paper 1) / ``lr`` (1e-3; paper 1e-4) / ``batch_size`` (64; paper 256): tuned on digits.
- ``optimizer`` ("adam", the paper's; or "sgd").
- ``temperature`` (1, the paper's): T of both the teachers' targets and the student.
- ``retain_fraction`` (0.3, the paper's 30%): share of the retain set distilled from the competent teacher.

Departures from the paper (no design note):
- Longer training at a higher rate, because the published run (1 epoch at 1e-4, batch 256, on CIFAR) is only a
  handful of steps on a small model and a few hundred forget samples, and forgets nothing.
- The KL is averaged per sample ("batchmean") rather than per logit as upstream, which only rescales the rate.
- The teachers' soft targets are computed once, since the teachers are frozen and inputs are not augmented (same
  result).
"""
from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..parts import concat, select, with_targets
from ..training import fresh_copy, predict
from .base import UnlearnData, Unlearner, register
from .common import require_positive, run_epochs, soft_kl


@register
class BadTeacher(Unlearner):
    """Distil from a competent teacher on retain data and an incompetent one on forget data."""

    name = "bad-teacher"
    requires = frozenset({"retain"})
    paper = "Chundawat et al., Can Bad Teaching Induce Forgetting?, AAAI 2023"

    @dataclass
    class Config:
        epochs: int = 5  # paper: 1 (CIFAR-scale data)
        lr: float = 1e-3  # paper: 1e-4
        batch_size: int = 64  # paper: 256
        temperature: float = 1.0  # paper: 1
        retain_fraction: float = 0.3  # paper: 30% of the retain set
        optimizer: str = "adam"  # paper: Adam

        def __post_init__(self) -> None:
            require_positive(
                "bad-teacher",
                epochs=self.epochs, lr=self.lr, batch_size=self.batch_size, temperature=self.temperature,
                retain_fraction=self.retain_fraction,
            )

    def run(self, model: nn.Module, data: UnlearnData) -> dict:
        c = self.config
        competent = copy.deepcopy(model).eval()
        incompetent = fresh_copy(model, data.seed).eval()
        n = max(1, round(c.retain_fraction * len(data.retain)))
        pick = torch.randperm(len(data.retain), generator=torch.Generator().manual_seed(data.seed))[:n]
        retained = select(data.retain, pick)  # a view: streamed data stays unread

        def soft(teacher: nn.Module, part) -> torch.Tensor:
            logits, _ = predict(teacher, part)
            return F.softmax(logits / c.temperature, dim=1)

        mixed = concat([with_targets(data.forget, soft(incompetent, data.forget)),
                        with_targets(retained, soft(competent, retained))])
        steps = run_epochs(
            model, mixed, lambda logits, p: soft_kl(logits, p, c.temperature),
            epochs=c.epochs, lr=c.lr, batch_size=c.batch_size, seed=data.seed, optimizer=c.optimizer,
            where="bad-teacher distillation",
        )
        return {"steps": steps, "retain_used": n}
