"""rl: fine-tune on the forget set relabelled at random (plus the retain set)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.utils.data import ConcatDataset, TensorDataset

from .base import UnlearnData, Unlearner, register
from .common import cross_entropy, run_epochs, tensors_of


def random_wrong_labels(y: torch.Tensor, num_classes: int, seed: int) -> torch.Tensor:
    """For each label, a uniformly drawn *different* class (deterministic for a seed)."""
    shift = torch.randint(1, num_classes, y.shape, generator=torch.Generator().manual_seed(seed))
    return (y + shift) % num_classes


@register
class RandomLabels(Unlearner):
    """Fine-tune on the forget samples relabelled with random wrong classes, mixed with the retain set.

    Papers: Golatkar et al., "Eternal Sunshine of the Spotless Net: Selective Forgetting in Deep Networks", CVPR 2020
    (arXiv 1911.04933); Graves et al., "Amnesiac Machine Learning", AAAI 2021 (arXiv 2010.10981); run as the RL
    baseline of SalUn (Fan et al., ICLR 2024), which fine-tunes on the relabelled forget data together with the
    retain data. Loss: cross-entropy on the union (relabelled forget set + retain set; the forget set alone when
    there is no retain set). Stopping rule: ``epochs`` passes over that union; no safeguard.

    Options:
    - ``epochs`` (3) / ``batch_size`` (64): the fine-tuning passes.
    - ``lr`` (0.01) / ``optimizer`` ("sgd", momentum 0.9; or "adam") / ``weight_decay`` (5e-4).

    Departure from SalUn's RL code (no design note): each forget sample gets a class drawn uniformly among the
    *other* classes (``random_wrong_labels``, seeded), because upstream's draw over all classes leaves about 1/K
    of them at their true label.
    """

    name = "rl"
    paper = "Graves et al., Amnesiac Machine Learning (AAAI 2021); Golatkar et al. (CVPR 2020); RL as in SalUn (ICLR 2024)"

    @dataclass
    class Config:
        epochs: int = 3
        lr: float = 0.01
        batch_size: int = 64
        optimizer: str = "sgd"
        weight_decay: float = 5e-4

    def run(self, model: nn.Module, data: UnlearnData) -> dict[str, Any]:
        c = self.config
        x, y = tensors_of(data.forget)
        relabelled = TensorDataset(x, random_wrong_labels(y, data.num_classes, data.seed))
        train_set = relabelled if data.retain is None else ConcatDataset([relabelled, data.retain])
        steps = run_epochs(model, train_set, cross_entropy, epochs=c.epochs, lr=c.lr, batch_size=c.batch_size,
                           seed=data.seed, optimizer=c.optimizer, weight_decay=c.weight_decay, where="method 'rl'")
        return {"steps": steps}
