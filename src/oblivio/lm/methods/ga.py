"""ga: gradient ascent on the forget answers (TOFU's first baseline).

Paper: Jang et al., "Knowledge Unlearning for Mitigating Privacy Risks in Language Models", ACL 2023
(arXiv 2210.01504), a baseline of TOFU (Maini et al., COLM 2024, arXiv 2401.06121). Loss: minus the mean token NLL
of the forget answers (questions unlabelled); AdamW without weight decay, gradient norm clipped at 1
(``gradient_loop``). Stopping rule: ``epochs`` x ceil(|forget| / ``batch_size``) steps, TOFU's epoch count.

Options:
- ``lr`` (1e-3): the AdamW rate.
- ``epochs`` (5) / ``batch_size`` (16): the step budget and the forget batch.

Departures from the papers (no design note):
- A fixed budget, where Jang et al. stop once extraction likelihood and memorisation accuracy reach those of unseen
  text, so that every LM method gets the same TOFU-style budget.
- The default rate is for oblivio's small models (OpenUnlearning's TOFU recipe tunes billion-parameter ones at 1e-5).
"""
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
