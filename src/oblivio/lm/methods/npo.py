"""NPO: negative preference optimisation (Zhang, Lin, Bai, Mei 2024, "Negative Preference Optimization: From
Catastrophic Collapse to Effective Unlearning", arXiv 2404.05868).

Forget loss -(2/beta) E log sigmoid(-beta (log p_theta(a|q) - log p_ref(a|q))) over summed answer log-probs,
the reference the model as given, plus a retain NLL term as in the authors' NPO-GD and OpenUnlearning's NPO
(gamma 1, alpha 1, beta 0.1). A bounded, ever-weaker push where GA's is unbounded.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch.nn.functional as F

from ..training import answer_nll
from .base import LMUnlearner, frozen, gradient_loop, register, retain_nll


@register
class NPO(LMUnlearner):
    name = "npo"
    paper = "Negative Preference Optimization (Zhang et al., COLM 2024)"
    requires = frozenset({"retain"})

    @dataclass
    class Config:
        lr: float = 1e-3
        epochs: int = 10
        batch_size: int = 16
        beta: float = 0.1
        gamma: float = 1.0
        alpha: float = 1.0

    def run(self, model, data):
        c = self.config
        ref = frozen(model)

        def loss(m, fb, rb):
            cur = answer_nll(m, fb, normalise=False)
            with_ref = answer_nll(ref, fb, normalise=False).detach()
            forget = -F.logsigmoid(c.beta * (cur - with_ref)).mean() * 2 / c.beta
            return c.gamma * forget + c.alpha * retain_nll(m, rb)

        return gradient_loop(model, data, c, loss)
