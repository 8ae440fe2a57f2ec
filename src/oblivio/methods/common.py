"""Small building blocks shared by several unlearning methods."""
from __future__ import annotations

import copy
from typing import Callable, Iterable, Iterator

import torch
from torch import nn
import torch.nn.functional as F
from torch.utils.data import Dataset as TorchDataset

from ..augment import batch_transform
from ..batching import DeviceData
from ..training import check_finite, make_optimizer, tensors_of  # noqa: F401 - re-exported for methods
from .base import probe_set


def device_of(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def make_loader(
    data: TorchDataset | DeviceData, batch_size: int, seed: int, shuffle: bool = True, device: torch.device | str = "cpu"
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """One pass over ``data`` in mini-batches on ``device``: shuffled with ``seed`` in a seeded DataLoader's
    order (deterministic for a seed), or in order. Pass a ``DeviceData`` to keep the data on the device across calls."""
    batches = data if isinstance(data, DeviceData) else DeviceData(data, device)
    return batches.epoch(batch_size, torch.Generator().manual_seed(seed) if shuffle else None)


def cycle(loader: Iterable) -> Iterator:
    """Iterate a re-iterable loader forever (a new shuffle each pass)."""
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
    after_epoch: Callable[[int], bool] | None = None,
    where: str = "unlearning",
    guard: "RetainGuard | None" = None,
    check_every: int | None = None,
    on_backoff: Callable[[], None] | None = None,
    augment: str | None = None,
) -> int:
    """Minimise ``loss_fn(logits, y)`` over ``data`` for some epochs; return the number of steps.

    ``after_step`` runs after each optimiser step (e.g. to restore masked weights);
    ``after_epoch(epoch)`` after each epoch (1-based), and training stops when it returns False.
    With an active ``guard``, the retain probe is checked after every epoch (and every ``check_every``
    steps within one, for long epochs); when it fell too far, the steps since the last good check are
    undone (weights and momentum) and the learning rate halved, at most ``guard.max_backoffs`` times;
    then training stops (``guard.backoffs``, ``guard.undone``, ``guard.summary()`` say what happened; the
    returned step count includes the undone steps). ``on_backoff``, when given, is called at each backoff
    that training survives instead of halving the learning rate (e.g. to weaken a penalty term that caused
    the drop). ``augment`` (an ``oblivio.augment`` spec) transforms every input batch, seeded from ``seed``.
    """
    dev = device_of(model)
    batches = DeviceData(data, dev)
    transform = batch_transform(augment, tuple(batches.x.shape[1:]) if batches.x is not None
                                else tuple(torch.as_tensor(data[0][0]).shape), seed) if augment else None
    opt = make_optimizer(model.parameters(), optimizer, lr, weight_decay)
    guarding = guard is not None and guard.active
    good = guard.snapshot(model) if guarding else None
    steps = kept = 0  # steps taken; steps at the last check that held

    def checked(epoch: int) -> bool | None:
        """Check the probe: True when it held, False after a backoff, None when training must stop."""
        nonlocal good, kept
        if guard.check(model):
            good, kept = guard.snapshot(model), steps
            return True
        model.load_state_dict(good)
        opt.state.clear()
        guard.backoff(epoch, steps, undone=steps - kept)
        kept = steps
        if guard.backoffs > guard.max_backoffs:
            return None
        if on_backoff is not None:
            on_backoff()
        else:
            for group in opt.param_groups:
                group["lr"] /= 2
        return False

    model.train()
    for epoch in range(1, epochs + 1):
        held: bool | None = True
        for i, (x, y) in enumerate(make_loader(batches, batch_size, seed + epoch - 1), 1):
            if transform is not None:
                x = transform(x)
            loss = loss_fn(model(x), y)
            check_finite(loss, f"{where} epoch {epoch}")
            opt.zero_grad()
            loss.backward()
            opt.step()
            if after_step is not None:
                after_step()
            steps += 1
            if guarding and check_every and i % check_every == 0 and i * batch_size < len(batches):
                if checked(epoch) is None:
                    held = None
                    break
        if guarding and held is not None:
            held = checked(epoch)
        if held is None:
            break
        if held and after_epoch is not None and not after_epoch(epoch):
            break
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


def tensor_batches(
    data: TorchDataset, batch_size: int, seed: int, device: torch.device | str | None = None
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Shuffled (x, y) mini-batches forever, a new seeded permutation each pass; sliced straight from
    the tensors, kept on ``device`` when given (else where they are)."""
    take = DeviceData(data, "cpu" if device is None else device).take
    n = len(data)
    gen = torch.Generator().manual_seed(seed)
    while True:
        perm = torch.randperm(n, generator=gen)
        for i in range(0, n, batch_size):
            yield take(perm[i : i + batch_size])


@torch.no_grad()
def probe_accuracy(model: nn.Module, batches: DeviceData) -> float:
    """Accuracy on ``batches`` in eval mode (the training mode is restored); raises ``OblivioError`` when the
    model's outputs are NaN/inf (it diverged)."""
    from ..errors import OblivioError

    was = model.training
    model.eval()
    correct = 0
    for x, y in batches.epoch(512):
        logits = model(x)
        if not torch.isfinite(logits).all():
            raise OblivioError("the model's outputs became NaN/inf (diverged); lower the learning rate")
        correct += int((logits.argmax(1) == y).sum())
    model.train(was)
    return correct / len(batches)


class RetainGuard:
    """Watches accuracy on a small retain probe (third-party samples when there is no retain set) while
    a method runs, against the original model's accuracy on the same probe.

    ``check(model)`` returns True while the model is within ``max_drop`` (a share, 0.05 = 5 points) of
    the original's probe accuracy; methods use it to stop (and roll back) before they collapse a model.
    Inactive (always True) when there is neither a retain nor a third-party set, or when ``max_drop`` >= 1
    (the methods' ``max_retain_drop=1``: off).
    """

    def __init__(self, model: nn.Module, data, max_drop: float, size: int = 512, max_backoffs: int = 0):
        probe = probe_set(data, size) if max_drop < 1 else None
        self.max_drop = max_drop
        self.max_backoffs = max_backoffs  # backoffs allowed before a method stops (run_epochs: undo steps, halve lr)
        self.backoffs = 0
        self.undone = 0  # optimiser steps undone by backoffs (their weights were restored)
        self.passed = 0  # checks that held
        self._backoff: tuple[int, int, float] | None = None  # (epoch, step, probe accuracy) of the latest backoff
        self.batches = DeviceData(probe, device_of(model)) if probe is not None else None
        self.baseline = self.accuracy(model) if self.batches is not None else None
        self.last: float | None = self.baseline

    @property
    def active(self) -> bool:
        return self.batches is not None

    def accuracy(self, model: nn.Module) -> float:
        """Probe accuracy; raises ``OblivioError`` when the model's outputs are NaN/inf (it diverged)."""
        return probe_accuracy(model, self.batches)

    def snapshot(self, model: nn.Module) -> dict | None:
        """A copy of the weights to restore if the next step or epoch fails the check (None when inactive)."""
        return copy.deepcopy(model.state_dict()) if self.active else None

    def check(self, model: nn.Module) -> bool:
        if self.batches is None:
            return True
        self.last = self.accuracy(model)
        held = self.last >= self.baseline - self.max_drop
        self.passed += held
        return held

    def backoff(self, epoch: int, step: int, undone: int = 0) -> None:
        """Note that ``run_epochs`` undid its last ``undone`` steps, up to ``step`` of ``epoch`` (1-based): the
        last check failed."""
        self.backoffs += 1
        self.undone += undone
        self._backoff = (epoch, step, self.last)

    def summary(self) -> dict:
        """The ``info`` entry of ``run_epochs``'s backoffs (the latest one): empty when the guard never fired."""
        if self._backoff is None:
            return {}
        epoch, step, acc = self._backoff
        return {"safeguard": "retain_drop_stop" if self.backoffs > self.max_backoffs else "retain_drop_backoff",
                "safeguard_epoch": epoch, "safeguard_step": step, "backoffs": self.backoffs, "steps_undone": self.undone,
                "probe_retain_acc_original": round(self.baseline, 4), "probe_retain_acc_at_stop": round(acc, 4)}

    def record(self, what: str, step: int) -> dict:
        """The ``info`` entry of a guard that fired: what it did, when, and the probe accuracies."""
        return {"safeguard": what, "safeguard_step": step, "probe_retain_acc_original": round(self.baseline, 4),
                "probe_retain_acc_at_stop": round(self.last, 4)}
