"""Small building blocks shared by several unlearning methods."""
from __future__ import annotations

from typing import Callable, Iterator

import torch
from torch import nn
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset as TorchDataset

from ..training import check_finite, make_optimizer, tensors_of  # noqa: F401 - re-exported for methods


def device_of(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def make_loader(data: TorchDataset, batch_size: int, seed: int, shuffle: bool = True) -> DataLoader:
    """A seeded, shuffled DataLoader (deterministic for a seed)."""
    return DataLoader(data, batch_size=batch_size, shuffle=shuffle, generator=torch.Generator().manual_seed(seed))


def cycle(loader: DataLoader) -> Iterator:
    """Iterate a loader forever (a new shuffle each pass)."""
    while True:
        yield from loader


def run_epochs(
    model: nn.Module,
    data: TorchDataset,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    *,
    epochs: int,
    lr: float,
    batch_size: int,
    seed: int,
    optimizer: str = "sgd",
    weight_decay: float = 0.0,
    after_step: Callable[[], None] | None = None,
    where: str = "unlearning",
) -> int:
    """Minimise ``loss_fn(logits, y)`` over ``data`` for some epochs; return the number of steps.

    ``after_step`` runs after each optimiser step (e.g. to restore masked weights).
    """
    dev = device_of(model)
    opt = make_optimizer(model.parameters(), optimizer, lr, weight_decay)
    steps = 0
    model.train()
    for epoch in range(epochs):
        for x, y in make_loader(data, batch_size, seed + epoch):
            loss = loss_fn(model(x.to(dev)), y.to(dev))
            check_finite(loss, f"{where} epoch {epoch + 1}")
            opt.zero_grad()
            loss.backward()
            opt.step()
            if after_step is not None:
                after_step()
            steps += 1
    model.eval()
    return steps


def cross_entropy(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits, y)


def soft_kl(student_logits: torch.Tensor, teacher_probs: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """KL(teacher || student) per sample, averaged over the batch; the student's logits are divided by ``temperature``.

    ``teacher_probs`` are probabilities (already softened by the caller), so a mixture of teachers can be passed.
    """
    return F.kl_div(F.log_softmax(student_logits / temperature, dim=1), teacher_probs, reduction="batchmean")


def require_positive(method: str, **values: float) -> None:
    """Raise ``OblivioError`` naming the first option of ``method`` that is not > 0."""
    from ..errors import OblivioError

    for name, value in values.items():
        if not value > 0:
            raise OblivioError(f"{method}: option {name} must be positive, got {value}")


def tensor_batches(data: TorchDataset, batch_size: int, seed: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Shuffled (x, y) mini-batches forever, a new seeded permutation each pass; sliced straight from
    the tensors (much faster than a DataLoader's per-sample collation for small models)."""
    x, y = tensors_of(data)
    gen = torch.Generator().manual_seed(seed)
    while True:
        perm = torch.randperm(len(y), generator=gen)
        for i in range(0, len(y), batch_size):
            idx = perm[i : i + batch_size]
            yield x[idx], y[idx]
