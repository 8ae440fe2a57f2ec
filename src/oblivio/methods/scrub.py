"""SCRUB: teacher-student unlearning that alternates forgetting on the forget set with distillation on the retain set.

Paper: Kurmanji et al., "Towards Unbounded Machine Unlearning", NeurIPS 2023 (reference code: meghdadk/SCRUB,
``train_distill``). The teacher is the frozen original, the student a copy. Each of ``sgda_epochs`` epochs runs,
while epoch <= ``msteps``, a max-step pass over the forget set with loss -KL(teacher || student) at temperature
``kd_T``, then a min-step pass over the retain set with loss ``gamma * CE + alpha * KL`` (KL scaled by T^2, per
sample). One SGD optimiser serves both. Stopping rule: the fixed epoch budget (plus the safeguard below).

Options (defaults from upstream's ``large_scale_unlearning.ipynb`` unless said):
- ``sgda_epochs`` (3): epochs of max + min steps.
- ``msteps`` (2): epochs that include a max-step pass.
- ``lr`` (0.004; upstream 5e-4): SGD rate, momentum 0.9.
- ``kd_T`` (4): distillation temperature.
- ``gamma`` (0.99) / ``alpha`` (0.001): weights of CE and KL in the min-steps.
- ``batch_size`` (64) / ``forget_batch_size`` (32): retain and forget batches (upstream 256 / 512).
- ``weight_decay`` (5e-4); ``lr_decay_epochs`` ((3, 5, 9)) and ``lr_decay_rate`` (0.1): the rate's milestones.
- ``max_grad_norm`` (None): optional cap on the max-step gradient norm.
- ``max_retain_drop`` (0.15) / ``max_backoffs`` (3): the max-step safeguard (1 = off).

Departures from the paper (evidence in docs/design/scrub.md):
- Rate and batches are tuned on digits: upstream's rate and 512-sample forget batches do too few steps on small data.
- A max-step pushes only forget samples the student still gives the teacher's class (judged in eval mode), since
  -KL is unbounded below and the unmasked update diverged (NaN) or collapsed the model.
- KL is computed from log-probabilities on both sides (``kl_per_sample``), so an underflowed probability gives no NaN.
- Safeguard (``info["safeguard"]``, ``info["max_step_backoffs"]``): a max-step costing more than ``max_retain_drop``
  of retain-probe accuracy is undone, momentum dropped and the rate halved; after ``max_backoffs`` halvings the
  max-steps end (the min-steps go on), because BatchNorm ResNets ran away from the first max-step.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..training import check_finite, make_optimizer
from .base import UnlearnData, Unlearner, register
from ..batching import DeviceData
from .common import RetainGuard, device_of, make_loader, require_positive


def kl_per_sample(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """KL(teacher || student) of the temperature-softened distributions, per sample, from log-probabilities
    on both sides (finite for any finite logits: no 0 * log 0 or log of an underflowed probability)."""
    log_s = F.log_softmax(student_logits / temperature, dim=1)
    log_t = F.log_softmax(teacher_logits / temperature, dim=1)
    return (log_t.exp() * (log_t - log_s)).sum(1)


@torch.no_grad()
def predict_eval(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The classes ``model`` predicts for ``x`` in eval mode (BatchNorm on its running statistics, as the
    model is used and as the teacher runs); the model's mode is restored."""
    was = model.training
    model.eval()
    try:
        return model(x).argmax(1)
    finally:
        model.train(was)


@register
class Scrub(Unlearner):
    """Alternate forget-set KL maximisation with retain-set distillation and cross-entropy."""

    name = "scrub"
    requires = frozenset({"retain"})
    paper = "Kurmanji et al., Towards Unbounded Machine Unlearning, NeurIPS 2023"

    @dataclass
    class Config:
        sgda_epochs: int = 3  # code: 3 (large-scale notebook, whose other settings these are; small-scale: 10)
        msteps: int = 2  # code: 2; max-steps stop after this many epochs
        lr: float = 0.004  # code: 5e-4 (ResNet, CIFAR); tuned on digits (0.005 already hurts retain)
        kd_T: float = 4.0  # code: 4
        gamma: float = 0.99  # code: 0.99, weight of cross-entropy in min-steps
        alpha: float = 0.001  # code: 0.001, weight of KL in min-steps
        batch_size: int = 64  # code: 256 (retain loader of the notebook); smaller for small data
        forget_batch_size: int = 32  # code: 512 (forget loader); smaller, so max-steps happen on small data
        weight_decay: float = 5e-4  # code: 5e-4
        lr_decay_epochs: tuple[int, ...] = (3, 5, 9)  # code: (3, 5, 9) (no decay within 3 epochs)
        lr_decay_rate: float = 0.1  # code: 0.1
        max_grad_norm: float | None = None  # not in the paper: optional max-step gradient norm cap; see above
        max_retain_drop: float = 0.15  # not in the paper: safeguard on the max-steps (1 = off); see above
        max_backoffs: int = 3  # not in the paper: halvings of the max-step rate before the safeguard ends them

        def __post_init__(self) -> None:
            require_positive(
                "scrub",
                sgda_epochs=self.sgda_epochs, lr=self.lr, kd_T=self.kd_T, batch_size=self.batch_size,
                forget_batch_size=self.forget_batch_size, max_retain_drop=self.max_retain_drop,
            )

    def run(self, model: nn.Module, data: UnlearnData) -> dict:
        c = self.config
        dev = device_of(model)
        teacher = copy.deepcopy(model).eval()
        opt = make_optimizer(model.parameters(), "sgd", c.lr, c.weight_decay)
        T2 = c.kd_T**2

        def kl(student_logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
            with torch.no_grad():
                t_logits = teacher(x)
            return kl_per_sample(student_logits.float(), t_logits.float(), c.kd_T).mean() * T2

        def max_loss(x: torch.Tensor) -> torch.Tensor | None:
            """-KL over the forget samples the student still assigns to the teacher's class (None: all forgotten)."""
            with torch.no_grad():
                t_logits = teacher(x)
                still = predict_eval(model, x) == t_logits.argmax(1)
            if not still.any():
                return None
            logits = model(x)
            per_sample = kl_per_sample(logits.float(), t_logits.float(), c.kd_T) * T2
            return -(per_sample * still).sum() / len(x)

        def set_lr(lr: float) -> None:
            for group in opt.param_groups:
                group["lr"] = lr

        def step(loss: torch.Tensor, where: str, clip: float | None = None) -> None:
            check_finite(loss, where)
            opt.zero_grad()
            loss.backward()
            if clip is not None:
                torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
            opt.step()

        forget, retain = DeviceData(data.forget, dev), DeviceData(data.retain, dev)
        guard = RetainGuard(model, data, c.max_retain_drop, max_backoffs=c.max_backoffs)
        max_steps = min_steps = skipped = 0
        max_scale = 1.0  # the max-steps' share of the scheduled rate, halved by each backoff
        info: dict = {}
        model.train()
        for epoch in range(1, c.sgda_epochs + 1):
            decay = c.lr_decay_rate ** sum(epoch > m for m in c.lr_decay_epochs)
            set_lr(c.lr * decay)
            if epoch <= c.msteps and "safeguard" not in info:
                for x, _ in make_loader(forget, c.forget_batch_size, data.seed + 2 * epoch):
                    loss = max_loss(x)
                    if loss is None:
                        skipped += 1
                        continue
                    saved = guard.snapshot(model)
                    set_lr(c.lr * decay * max_scale)
                    step(loss, f"scrub max-step epoch {epoch}", c.max_grad_norm)
                    if guard.active and not guard.check(model):
                        # undo the step and drop the momentum that carries the runaway; halve the max-step
                        # rate, or end the max-steps once that has been done max_backoffs times
                        model.load_state_dict(saved)
                        opt.state.clear()
                        guard.backoff(epoch, max_steps + 1)
                        if guard.backoffs > guard.max_backoffs:
                            info = guard.record("retain_drop", max_steps + 1)
                            break
                        max_scale /= 2
                        continue
                    max_steps += 1
                set_lr(c.lr * decay)
            for x, y in make_loader(retain, c.batch_size, data.seed + 2 * epoch + 1):
                logits = model(x)
                step(c.gamma * F.cross_entropy(logits, y) + c.alpha * kl(logits, x), f"scrub min-step epoch {epoch}")
                min_steps += 1
        model.eval()
        info = info | ({"max_step_backoffs": guard.backoffs} if guard.backoffs else {})
        return {"max_steps": max_steps, "min_steps": min_steps, "max_steps_skipped": skipped} | info
