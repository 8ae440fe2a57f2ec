"""NegGrad+: gradient ascent on the forget set and descent on the retain set, in one loss.

Paper: Kurmanji et al., "Towards Unbounded Machine Unlearning" (NeurIPS 2023) introduced it; Deep Unlearn
(Cadet et al., arXiv 2410.01276) found it, tuned, the strongest simple baseline. Loss per step:
``beta * CE(retain) - (1 - beta) * CE(forget)``; an epoch pairs forget and retain batches until the shorter runs
out (upstream's ``min_size`` mode). Stopping rule: ``epochs`` epochs (plus the safeguard below). Defaults are those
of the ReGUn reference code (jmirlach/ReGUn ``conf/unlearn/neggradp.yaml``); both papers tune per dataset.

Options:
- ``epochs`` (10) / ``batch_size`` (128).
- ``lr`` (0.01): SGD, momentum 0.9; ``weight_decay`` (0).
- ``retain_weight`` (0.5): beta; the forget weight is 1 - beta.
- ``max_retain_drop`` (0.15): the safeguard (1 = off).

Departure from the papers (evidence in docs/design/neggrad-plus.md): a step that costs more than
``max_retain_drop`` of retain-probe accuracy is undone and the run stops (``safeguard: retain_drop``; a first step
that already does is an error), because the unbounded ascent collapsed memorising models.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch.nn.functional as F
from torch import nn

from ..errors import OblivioError
from .base import UnlearnData, Unlearner, register
from .common import RetainGuard, check_finite, device_of, make_optimizer, require_positive, tensor_batches


@register
class NegGradPlus(Unlearner):
    """Ascend the forget cross-entropy while descending the retain cross-entropy."""

    name = "neggrad+"
    requires = frozenset({"retain"})
    paper = "Kurmanji et al., Towards Unbounded Machine Unlearning (NeurIPS 2023); Deep Unlearn (arXiv 2410.01276)"

    @dataclass
    class Config:
        epochs: int = 10  # ReGUn code: 10
        lr: float = 0.01  # ReGUn code: SGD lr 0.01, momentum 0.9
        weight_decay: float = 0.0  # ReGUn code: 0
        batch_size: int = 128  # ReGUn code: 128
        retain_weight: float = 0.5  # beta; ReGUn code: 0.5; forget weight = 1 - beta
        max_retain_drop: float = 0.15  # safeguard: undo a step costing more retain-probe accuracy (1 = off)

        def __post_init__(self) -> None:
            require_positive("neggrad+", epochs=self.epochs, lr=self.lr, batch_size=self.batch_size,
                             max_retain_drop=self.max_retain_drop)
            if not 0 <= self.retain_weight < 1:
                raise OblivioError(f"neggrad+: retain_weight must lie in [0, 1), got {self.retain_weight}")
            if self.weight_decay < 0:
                raise OblivioError(f"neggrad+: weight_decay must be >= 0, got {self.weight_decay}")

    @classmethod
    def search_space(cls, trial) -> dict:
        """lr and epochs (generic) and beta, the retain weight (0.1-0.99)."""
        return super().search_space(trial) | {"retain_weight": trial.suggest_float("retain_weight", 0.1, 0.99)}

    def run(self, model: nn.Module, data: UnlearnData) -> dict[str, Any]:
        c = self.config
        dev = device_of(model)
        per_epoch = min(math.ceil(len(data.forget) / c.batch_size), math.ceil(len(data.retain) / c.batch_size))
        forget = tensor_batches(data.forget, c.batch_size, data.seed)
        retain = tensor_batches(data.retain, c.batch_size, data.seed + 1)
        opt = make_optimizer(model.parameters(), "sgd", c.lr, c.weight_decay)
        guard = RetainGuard(model, data, c.max_retain_drop)
        model.train()
        steps, ce_f, ce_r = 0, float("nan"), float("nan")
        info: dict[str, Any] = {}
        for epoch in range(c.epochs):
            if info:
                break
            for _ in range(per_epoch):
                saved = guard.snapshot(model)
                x_f, y_f = next(forget)
                x_r, y_r = next(retain)
                loss_f = F.cross_entropy(model(x_f.to(dev)), y_f.to(dev))
                loss_r = F.cross_entropy(model(x_r.to(dev)), y_r.to(dev))
                loss = c.retain_weight * loss_r - (1 - c.retain_weight) * loss_f
                check_finite(loss, f"method 'neggrad+' epoch {epoch + 1}")
                opt.zero_grad()
                loss.backward()
                opt.step()
                if guard.active and not guard.check(model):
                    if steps == 0:
                        raise OblivioError(
                            f"method 'neggrad+': the first step already cost more than {c.max_retain_drop:g} of "
                            "retain accuracy, so nothing was forgotten; lower lr or raise max_retain_drop")
                    model.load_state_dict(saved)
                    info = guard.record("retain_drop", steps + 1)
                    break
                steps += 1
                ce_f, ce_r = loss_f.item(), loss_r.item()
        model.eval()
        return {"steps": steps, "final_forget_ce": ce_f, "final_retain_ce": ce_r} | info
