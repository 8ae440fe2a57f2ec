"""ft: fine-tune on the retain set only and rely on catastrophic forgetting."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import nn

from .base import UnlearnData, Unlearner, register
from .common import cross_entropy, run_epochs


@register
class FineTune(Unlearner):
    """A few epochs of cross-entropy on the retain set (the forget set is never shown again).

    Warnecke et al., "Machine Unlearning of Features and Labels" (NDSS 2023), as run in the FT rows
    of SalUn (Fan et al., ICLR 2024) and Unlearn-Sparse (Jia et al., NeurIPS 2023): SGD, lr 0.01-0.1,
    a few epochs.
    """

    name = "ft"
    paper = "Warnecke et al., Machine Unlearning of Features and Labels (NDSS 2023); FT as in SalUn (ICLR 2024)"
    requires = frozenset({"retain"})

    @dataclass
    class Config:
        epochs: int = 5
        lr: float = 0.05
        batch_size: int = 64
        optimizer: str = "sgd"
        weight_decay: float = 5e-4

    def run(self, model: nn.Module, data: UnlearnData) -> dict[str, Any]:
        c = self.config
        steps = run_epochs(model, data.retain, cross_entropy, epochs=c.epochs, lr=c.lr, batch_size=c.batch_size,
                           seed=data.seed, optimizer=c.optimizer, weight_decay=c.weight_decay, where="method 'ft'")
        return {"steps": steps}
