"""Verify a forget result before it is reported: a request is never called done when nothing was forgotten.

What is measurable without a retrained model:

- every scenario: the unlearned model must differ from the original (some weight changed);
- class forgetting: forget-set accuracy must fall (unless the original already scored 0% there);
- backdoor: the share of forget samples (triggered) predicted as the target must fall (unless it
  was already 0%);
- a random subset: only the change itself -- whether the change removed the samples' influence
  needs a retrained model (``oblivio audit --retrained``).

A method whose own stopping rule proved there was nothing to forget says so in its info
(``info["nothing_to_forget"] = True`` and ``info["reason"]``, see
``methods.base.UnlearnResult``); such a result passes unchanged and the reason is reported.
"""
from __future__ import annotations

import torch
from torch import nn

from .errors import OblivioError
from .methods.base import NOTHING_TO_FORGET, UnlearnData, UnlearnResult
from .training import accuracy, attack_success_rate


class NothingForgotten(OblivioError):
    """The method returned a model that forgot nothing measurable."""


def models_differ(a: nn.Module, b: nn.Module) -> bool:
    """True when any parameter or buffer of ``a`` and ``b`` differs."""
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() != sb.keys() or any(not torch.equal(sa[k].detach().cpu(), sb[k].detach().cpu()) for k in sa)


def _forget_score(model: nn.Module, data: UnlearnData) -> tuple[str, float]:
    """The forget-set number that must fall for this request, as (what, percent)."""
    if data.backdoor_target is not None and not data.forget_classes:
        return ("share of triggered forget samples predicted as the target",
                100.0 * attack_success_rate(model, data.forget, data.backdoor_target))
    return "forget accuracy", 100.0 * accuracy(model, data.forget)


def verify_unlearning(original: nn.Module, result: UnlearnResult, data: UnlearnData) -> str:
    """A one-line account of what changed; raises ``NothingForgotten`` when the result forgot nothing."""
    who = f"method {result.method!r}"
    if result.info.get(NOTHING_TO_FORGET):
        reason = result.info.get("reason") or "the method found nothing to forget"
        return f"nothing to forget: {reason}"
    steps = result.info.get("steps")
    detail = f" ({steps} steps)" if steps is not None else ""
    if not models_differ(original, result.model):
        raise NothingForgotten(f"{who} did not change the model{detail}: nothing was forgotten; check its options")
    if not data.forget_classes and data.backdoor_target is None:
        return "model changed (whether the samples' influence is gone needs an audit against a retrained model)"
    what, before = _forget_score(original, data)
    _, after = _forget_score(result.model, data)
    if before > 0 and not after < before:
        raise NothingForgotten(
            f"{who} changed the model but its {what} did not fall ({before:.1f}% -> {after:.1f}%){detail}: "
            f"nothing measurable was forgotten; check its options"
        )
    return f"{what} {before:.1f}% -> {after:.1f}%"
