"""GradDiff: ascent on the forget answers plus descent on retain and world answers (TOFU's "Grad. Diff.";
Liu et al. 2022, "Continual Learning and Private Unlearning"). OpenUnlearning's weights: gamma 1, alpha 1."""
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
