"""SimNPO: reference-free, length-normalised NPO.

Paper: Fan et al., "Simplicity Prevails: Rethinking Negative Preference Optimization for LLM Unlearning",
NeurIPS 2025 (arXiv 2410.07163). Forget loss ``-(2/beta) E log sigmoid(beta (NLL(a|q) / |a| - delta))``, no
reference model; total ``gamma * forget + alpha * NLL(retain)``. AdamW without weight decay, gradient norm clipped
at 1 (``gradient_loop``). Stopping rule: ``epochs`` x ceil(|forget| / ``batch_size``) steps.

Options (loss parameters are OpenUnlearning's TOFU defaults):
- ``lr`` (1e-3): the AdamW rate.
- ``epochs`` (10) / ``batch_size`` (16): the step budget; forget and retain batches.
- ``beta`` (4.5): inverse temperature.
- ``delta`` (0): margin on the length-normalised NLL (OpenUnlearning's form; the paper's margin is beta x delta).
- ``gamma`` (0.125) / ``alpha`` (1): weights of the forget and retain terms.

Departures from the paper (no design note):
- Retain batches are drawn from the retain authors and the world facts, because oblivio's corpus has world facts
  every model must keep.
- The default rate is for oblivio's small models (OpenUnlearning's TOFU recipe tunes billion-parameter ones at 1e-5).
"""
from __future__ import annotations

from dataclasses import dataclass

from ..training import answer_nll
from .base import LMUnlearner, gradient_loop, negative_preference, register, retain_nll


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
            forget = negative_preference(answer_nll(m, fb) - c.delta, c.beta)
            return c.gamma * forget + c.alpha * retain_nll(m, rb)

        return gradient_loop(model, data, c, loss)
