"""NPO: negative preference optimisation, a bounded push away from the forget answers.

Paper: Zhang, Lin, Bai and Mei, "Negative Preference Optimization: From Catastrophic Collapse to Effective
Unlearning", COLM 2024 (arXiv 2404.05868). Forget loss ``-(2/beta) E log sigmoid(-beta (log p(a|q) - log
p_ref(a|q)))`` over summed answer log-probabilities, the reference a frozen copy of the model as given; total
``gamma * forget + alpha * NLL(retain)``, the authors' retain-regularised variant and OpenUnlearning's NPO. Where
GA's push is unbounded, NPO's weakens as the answers become unlikely. AdamW without weight decay, gradient norm
clipped at 1 (``gradient_loop``). Stopping rule: ``epochs`` x ceil(|forget| / ``batch_size``) steps.

Options (loss parameters are OpenUnlearning's):
- ``lr`` (1e-3): the AdamW rate.
- ``epochs`` (10) / ``batch_size`` (16): the step budget; forget and retain batches.
- ``beta`` (0.1): inverse temperature of the preference loss.
- ``gamma`` (1) / ``alpha`` (1): weights of the forget and retain terms.

Departures from the paper (no design note):
- Retain batches are drawn from the retain authors and the world facts, because oblivio's corpus has world facts
  every model must keep.
- The default rate is for oblivio's small models (OpenUnlearning's TOFU recipe tunes billion-parameter ones at 1e-5).
"""
from __future__ import annotations

from dataclasses import dataclass

from ..training import answer_nll
from .base import LMUnlearner, frozen, gradient_loop, negative_preference, register, retain_nll


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
            forget = negative_preference(cur - with_ref, c.beta)
            return c.gamma * forget + c.alpha * retain_nll(m, rb)

        return gradient_loop(model, data, c, loss)
