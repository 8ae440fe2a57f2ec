"""GA: gradient ascent on the forget answers (TOFU's first baseline; Jang et al. 2023, "Knowledge Unlearning
for Mitigating Privacy Risks in Language Models")."""
from __future__ import annotations

from dataclasses import dataclass

from .base import LMUnlearner, gradient_loop, mean_token_nll, register


@register
class GradientAscent(LMUnlearner):
    name = "ga"
    paper = "Knowledge Unlearning for Mitigating Privacy Risks in Language Models (Jang et al., ACL 2023)"

    @dataclass
    class Config:
        lr: float = 1e-3
        epochs: int = 5
        batch_size: int = 16

    def run(self, model, data):
        return gradient_loop(model, data, self.config, lambda m, fb, rb: -mean_token_nll(m, fb))
