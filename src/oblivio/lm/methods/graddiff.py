"""graddiff: ascent on the forget answers plus descent on retained answers (TOFU's "Grad. Diff.").

Paper: TOFU, Maini et al., "TOFU: A Task of Fictitious Unlearning for LLMs", COLM 2024 (arXiv 2401.06121), after
Liu, Liu and Stone, "Continual Learning and Private Unlearning", CoLLAs 2022 (arXiv 2203.12817). Loss:
``-gamma * NLL(forget) + alpha * NLL(retain)``, mean token NLLs of the answers; AdamW without weight decay,
gradient norm clipped at 1 (``gradient_loop``). Stopping rule: ``epochs`` x ceil(|forget| / ``batch_size``) steps.

Options (loss weights are OpenUnlearning's):
- ``lr`` (1e-3): the AdamW rate.
- ``epochs`` (5) / ``batch_size`` (16): the step budget; forget and retain batches.
- ``gamma`` (1): weight of the forget (ascent) term.
- ``alpha`` (1): weight of the retain (descent) term.

Departures from the papers (no design note):
- Retain batches are drawn from the retain authors and the world facts, because oblivio's corpus has world facts
  every model must keep.
- The default rate is for oblivio's small models (OpenUnlearning's TOFU recipe tunes billion-parameter ones at 1e-5).
"""
from __future__ import annotations

from dataclasses import dataclass

from .base import LMUnlearner, gradient_loop, mean_token_nll, register, retain_nll


@register
class GradDiff(LMUnlearner):
    name = "graddiff"
    paper = "TOFU (Maini et al., 2024), after Liu et al., Continual Learning and Private Unlearning (2022)"
    requires = frozenset({"retain"})

    @dataclass
    class Config:
        lr: float = 1e-3
        epochs: int = 5
        batch_size: int = 16
        gamma: float = 1.0  # forget-loss weight
        alpha: float = 1.0  # retain-loss weight

    def run(self, model, data):
        c = self.config
        return gradient_loop(model, data, c, lambda m, fb, rb: -c.gamma * mean_token_nll(m, fb) + c.alpha * retain_nll(m, rb))
