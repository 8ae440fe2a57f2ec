"""ga: gradient ascent on the forget set."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from .base import UnlearnData, Unlearner, register
from .common import cross_entropy, run_epochs


def negative_cross_entropy(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return -cross_entropy(logits, y)


@register
class GradientAscent(Unlearner):
    """Maximise the cross-entropy of the forget set for a few steps with a small learning rate.

    Thudi et al., "Unrolling SGD: Understanding Factors Influencing Machine Unlearning" (EuroS&P 2022);
    Graves et al., "Amnesiac Machine Learning" (AAAI 2021); the GA rows of SalUn / Unlearn-Sparse.
    Unbounded: too many steps destroy the model, so the defaults are deliberately short (on digits,
    class 3: lr 0.003 leaves 66% forget accuracy, 0.004 -> 13% with retain 96%, 0.005 -> retain 89%).
    """

    name = "ga"
    paper = "Thudi et al., Unrolling SGD (EuroS&P 2022); Graves et al., Amnesiac Machine Learning (AAAI 2021)"

    @dataclass
    class Config:
        epochs: int = 3
        lr: float = 0.004
        batch_size: int = 64
        optimizer: str = "sgd"

    def run(self, model: nn.Module, data: UnlearnData) -> dict[str, Any]:
        c = self.config
        steps = run_epochs(model, data.forget, negative_cross_entropy, epochs=c.epochs, lr=c.lr,
                           batch_size=c.batch_size, seed=data.seed, optimizer=c.optimizer, where="method 'ga'")
        return {"steps": steps}
