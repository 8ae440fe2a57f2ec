"""SalUn: random-label fine-tuning restricted to the weights most salient for the forget loss.

Paper: Fan et al., "SalUn: Empowering Machine Unlearning via Gradient-based Weight Saliency in Both Image
Classification and Generation", ICLR 2024 (arXiv 2310.12508; reference code: OPTML-Group/Unlearn-Saliency). The
saliency map is |sum over forget batches of the gradient of the (negated) forget cross-entropy| (eval mode); the
mask keeps the top ``mask_ratio`` of all weights, ranked globally across layers. Then random-label unlearning (RL):
loss = cross-entropy on the forget samples with random wrong labels together with the retain set, SGD momentum 0.9,
updating only masked weights (their gradients are masked, as upstream). Stopping rule: ``epochs`` passes over
forget + retain; no safeguard. Batches (forget and retain) get the original's training augmentation
(``data.augment``), as upstream's loaders are copies of the training set that keep its transforms.

Options (the paper's CIFAR-10 random-forgetting settings unless said):
- ``mask_ratio`` (0.5): share of the weights updated (upstream's threshold).
- ``epochs`` (10) / ``lr`` (0.013) / ``weight_decay`` (5e-4).
- ``batch_size`` (64; paper 256): fine-tuning batches, also the chunk size of the saliency pass.

Departures from the paper (no design note):
- Masked-out weights are restored bit-for-bit after every step, because upstream only masked gradients, so weight
  decay and momentum still moved them.
- Each forget sample gets a random label different from its own, because upstream's draw over all classes keeps
  about 1/K of them at their true label.
- Batches of 64 instead of 256, for more steps on small datasets.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import ConcatDataset, TensorDataset

from ..errors import OblivioError
from .base import UnlearnData, Unlearner, register
from .common import device_of, make_loader, require_positive, run_epochs, tensors_of


def saliency_mask(model: nn.Module, forget, ratio: float, batch_size: int) -> dict[str, torch.Tensor]:
    """Boolean mask per parameter: the top ``ratio`` of weights by |forget-loss gradient|, ranked globally."""
    dev = device_of(model)
    model.eval()
    model.zero_grad()
    for x, y in make_loader(forget, batch_size, 0, shuffle=False):
        (-F.cross_entropy(model(x.to(dev)), y.to(dev))).backward()
    params = dict(model.named_parameters())
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params.values()]
    scores = torch.cat([g.abs().flatten() for g in grads])
    model.zero_grad()
    keep = torch.zeros_like(scores, dtype=torch.bool)
    keep[torch.argsort(scores, descending=True, stable=True)[: int(round(ratio * scores.numel()))]] = True
    masks, start = {}, 0
    for name, p in params.items():
        masks[name] = keep[start : start + p.numel()].view_as(p)
        start += p.numel()
    return masks


@register
class SalUn(Unlearner):
    """Random-label fine-tuning restricted to the weights most salient for the forget loss."""

    name = "salun"
    requires = frozenset({"retain"})
    paper = "Fan et al., SalUn: Empowering Machine Unlearning via Gradient-based Weight Saliency, ICLR 2024"

    @dataclass
    class Config:
        mask_ratio: float = 0.5  # paper: 0.5 (share of weights updated)
        epochs: int = 10  # paper: 10
        lr: float = 0.013  # paper: 0.013 (CIFAR-10 random forgetting)
        batch_size: int = 64  # paper: 256
        weight_decay: float = 5e-4  # paper: 5e-4

        def __post_init__(self) -> None:
            if not 0 < self.mask_ratio <= 1:
                raise OblivioError(f"salun: mask_ratio must lie in (0, 1], got {self.mask_ratio}")
            require_positive("salun", epochs=self.epochs, lr=self.lr, batch_size=self.batch_size)

    @classmethod
    def search_space(cls, trial) -> dict:
        """lr and epochs (generic) and the share of salient weights updated, 0.1-0.9."""
        return super().search_space(trial) | {"mask_ratio": trial.suggest_float("mask_ratio", 0.1, 0.9)}

    def run(self, model: nn.Module, data: UnlearnData) -> dict:
        c = self.config
        masks = saliency_mask(model, data.forget, c.mask_ratio, c.batch_size)
        params = dict(model.named_parameters())
        frozen = {n: p.detach().clone() for n, p in params.items()}
        hooks = [p.register_hook(lambda g, m=masks[n]: g * m) for n, p in params.items()]

        @torch.no_grad()
        def restore() -> None:
            for n, p in params.items():
                p.copy_(torch.where(masks[n], p, frozen[n]))

        x_f, y_f = tensors_of(data.forget)
        g = torch.Generator().manual_seed(data.seed)
        shift = torch.randint(1, data.num_classes, (len(y_f),), generator=g).to(y_f.device)
        relabelled = TensorDataset(x_f, (y_f + shift) % data.num_classes)
        try:
            steps = run_epochs(
                model, ConcatDataset([relabelled, data.retain]), F.cross_entropy, epochs=c.epochs, lr=c.lr,
                batch_size=c.batch_size, seed=data.seed, weight_decay=c.weight_decay, after_step=restore,
                where="salun fine-tuning", augment=data.augment,
            )
        finally:
            for h in hooks:
                h.remove()
        kept = sum(int(m.sum()) for m in masks.values())
        total = sum(m.numel() for m in masks.values())
        return {"steps": steps, "masked_weights": kept, "total_weights": total}
