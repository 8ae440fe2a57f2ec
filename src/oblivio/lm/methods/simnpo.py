"""SimNPO: reference-free, length-normalised NPO (Fan et al. 2024, "Simplicity Prevails: Rethinking Negative
Preference Optimization for LLM Unlearning", arXiv 2410.07163).

Forget loss -(2/beta) E log sigmoid(beta (NLL(a|q)/|a| - delta)), plus alpha x retain NLL; OpenUnlearning's
TOFU defaults beta 4.5, delta 0, gamma 0.125, alpha 1.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch.nn.functional as F

from ..training import answer_nll
from .base import LMUnlearner, gradient_loop, register, retain_nll


@register
class SimNPO(LMUnlearner):
    name = "simnpo"
    paper = "Simplicity Prevails: Rethinking Negative Preference Optimization for LLM Unlearning (Fan et al., 2024)"
    requires = frozenset({"retain"})

    @dataclass
    class Config:
        lr: float = 1e-3
        epochs: int = 10
        batch_size: int = 16
        beta: float = 4.5
        delta: float = 0.0
        gamma: float = 0.125
        alpha: float = 1.0

    def run(self, model, data):
        c = self.config

        def loss(m, fb, rb):
            forget = -F.logsigmoid(c.beta * (answer_nll(m, fb) - c.delta)).mean() * 2 / c.beta
            return c.gamma * forget + c.alpha * retain_nll(m, rb)

        return gradient_loop(model, data, c, loss)
