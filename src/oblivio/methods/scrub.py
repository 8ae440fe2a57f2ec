"""SCRUB: Kurmanji et al., "Towards Unbounded Machine Unlearning", NeurIPS 2023
(reference code: meghdadk/SCRUB, ``train_distill`` in its repdistiller loops).

Faithful: the teacher is the frozen original model, the student a copy. Each of ``sgda_epochs``
epochs first runs (only while epoch <= ``msteps``) a max-step pass over the forget set that
*maximises* KL(teacher || student) at temperature ``kd_T`` (loss = -KL), then a min-step pass over
the retain set minimising ``gamma * CE + alpha * KL``. KL is scaled by T^2 and averaged per sample,
as upstream's DistillKL. One SGD optimiser (momentum 0.9, weight decay 5e-4) serves both passes and
its rate is multiplied by ``lr_decay_rate`` for every milestone in ``lr_decay_epochs`` already passed.

Adapted: upstream's rate (5e-4) and forget batch (32 of thousands of samples) are for ResNets on
CIFAR; on digits the learning rate is raised (the result is sensitive to it: see Config).
"""
from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..training import check_finite, make_optimizer
from .base import UnlearnData, Unlearner, register
from .common import device_of, make_loader, require_positive, soft_kl


@register
class Scrub(Unlearner):
    """Alternate forget-set KL maximisation with retain-set distillation and cross-entropy."""

    name = "scrub"
    requires = frozenset({"retain"})
    paper = "Kurmanji et al., Towards Unbounded Machine Unlearning, NeurIPS 2023"

    @dataclass
    class Config:
        sgda_epochs: int = 10  # paper: 3-10 depending on the setting
        msteps: int = 2  # paper: 2; max-steps stop after this many epochs
        lr: float = 0.004  # paper: 5e-4 (ResNet, CIFAR); tuned on digits (0.005 already hurts retain)
        kd_T: float = 4.0  # paper: 4
        gamma: float = 0.99  # paper: weight of cross-entropy in min-steps
        alpha: float = 0.001  # paper: weight of KL in min-steps
        batch_size: int = 64  # paper: 128 (retain)
        forget_batch_size: int = 32  # paper: 32 (forget)
        weight_decay: float = 5e-4  # paper: 5e-4
        lr_decay_epochs: tuple[int, ...] = (3, 5, 9)  # paper: (3, 5, 9)
        lr_decay_rate: float = 0.1  # paper: 0.1

        def __post_init__(self) -> None:
            require_positive(
                "scrub",
                sgda_epochs=self.sgda_epochs, lr=self.lr, kd_T=self.kd_T, batch_size=self.batch_size,
                forget_batch_size=self.forget_batch_size,
            )

    def run(self, model: nn.Module, data: UnlearnData) -> dict:
        c = self.config
        dev = device_of(model)
        teacher = copy.deepcopy(model).eval()
        opt = make_optimizer(model.parameters(), "sgd", c.lr, c.weight_decay)
        T2 = c.kd_T**2

        def kl(student_logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
            with torch.no_grad():
                target = F.softmax(teacher(x) / c.kd_T, dim=1)
            return soft_kl(student_logits, target, c.kd_T) * T2

        def step(loss: torch.Tensor, where: str) -> None:
            check_finite(loss, where)
            opt.zero_grad()
            loss.backward()
            opt.step()

        max_steps = min_steps = 0
        model.train()
        for epoch in range(1, c.sgda_epochs + 1):
            decay = c.lr_decay_rate ** sum(epoch > m for m in c.lr_decay_epochs)
            for group in opt.param_groups:
                group["lr"] = c.lr * decay
            if epoch <= c.msteps:
                for x, _ in make_loader(data.forget, c.forget_batch_size, data.seed + 2 * epoch):
                    x = x.to(dev)
                    step(-kl(model(x), x), f"scrub max-step epoch {epoch}")
                    max_steps += 1
            for x, y in make_loader(data.retain, c.batch_size, data.seed + 2 * epoch + 1):
                x, y = x.to(dev), y.to(dev)
                logits = model(x)
                step(c.gamma * F.cross_entropy(logits, y) + c.alpha * kl(logits, x), f"scrub min-step epoch {epoch}")
                min_steps += 1
        model.eval()
        return {"max_steps": max_steps, "min_steps": min_steps}
