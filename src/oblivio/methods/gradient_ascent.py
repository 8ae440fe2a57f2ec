"""ga: gradient ascent on the forget set."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import nn

from ..training import check_finite, make_optimizer
from .base import UnlearnData, Unlearner, register
from .common import cross_entropy, device_of, tensor_batches


@register
class GradientAscent(Unlearner):
    """Maximise the cross-entropy of the forget set for a few steps with a small learning rate.

    Thudi et al., "Unrolling SGD: Understanding Factors Influencing Machine Unlearning" (EuroS&P 2022);
    Graves et al., "Amnesiac Machine Learning" (AAAI 2021); the GA rows of SalUn / Unlearn-Sparse.
    Unbounded: too many steps destroy the model, so the budget is a fixed number of steps (not
    epochs, which would grow with the forget set: 27 steps diverged to NaN on a 540-sample
    Fashion-MNIST class) and deliberately short (on digits, class 3: lr 0.003 leaves 66% forget
    accuracy, 0.004 -> 13% with retain 96%, 0.005 -> retain 89%).
    """

    name = "ga"
    paper = "Thudi et al., Unrolling SGD (EuroS&P 2022); Graves et al., Amnesiac Machine Learning (AAAI 2021)"

    @dataclass
    class Config:
        steps: int = 10
        lr: float = 0.004
        batch_size: int = 64
        optimizer: str = "sgd"

    def run(self, model: nn.Module, data: UnlearnData) -> dict[str, Any]:
        c = self.config
        dev = device_of(model)
        opt = make_optimizer(model.parameters(), c.optimizer, c.lr)
        batches = tensor_batches(data.forget, c.batch_size, data.seed)
        model.train()
        for step in range(c.steps):
            x, y = next(batches)
            loss = -cross_entropy(model(x.to(dev)), y.to(dev))
            check_finite(loss, f"method 'ga' step {step + 1}")
            opt.zero_grad()
            loss.backward()
            opt.step()
        model.eval()
        return {"steps": c.steps}
