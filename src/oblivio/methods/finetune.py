"""ft: fine-tune on the retain set only and rely on catastrophic forgetting."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import nn

from .base import UnlearnData, Unlearner, register
from .common import cross_entropy, run_epochs


@register
class FineTune(Unlearner):
    """Fine-tune on the retain set only and rely on catastrophic forgetting (the forget set is never shown again).

    Paper: Warnecke et al., "Machine Unlearning of Features and Labels", NDSS 2023 (arXiv 2108.11577), as run in
    the FT rows of SalUn (Fan et al., ICLR 2024) and Unlearn-Sparse (Jia et al., NeurIPS 2023). Loss: the retain
    cross-entropy. Stopping rule: ``epochs`` passes over the retain set; no safeguard (it only descends on data
    the model keeps).

    Options:
    - ``epochs`` (5) / ``batch_size`` (64): the fine-tuning passes.
    - ``lr`` (0.05): within the 0.01-0.1 range of the papers' FT runs.
    - ``optimizer`` ("sgd", momentum 0.9; or "adam") / ``weight_decay`` (5e-4).

    Augmentation: the original's training recipe (``data.augment``), as the papers' code fine-tunes on copies of
    the training set that keep its transforms. Departures from the papers: none (they pick the rate and epochs
    per setting; no design note).
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
                           seed=data.seed, optimizer=c.optimizer, weight_decay=c.weight_decay, where="method 'ft'",
                           augment=data.augment)
        return {"steps": steps}
