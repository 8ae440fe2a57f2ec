"""IdkDPO: DPO towards a refusal (Maini et al. 2024, TOFU's "IDK" preference baseline; Rafailov et al. 2023's
DPO loss): the preferred answer is an "I don't know"-style refusal, the rejected one the forget answer, the
reference the model as given; plus alpha x retain NLL. OpenUnlearning's DPO: beta 0.1, gamma 1, alpha 1.
Departure: our refusals are a handful of fixed strings (TOFU samples from 100)."""
from __future__ import annotations

from dataclasses import dataclass

import torch.nn.functional as F

from ..models import n_positions
from ..training import answer_nll, encode
from .base import LMUnlearner, frozen, gradient_loop, register, retain_nll

REFUSALS = ("I don't know.", "I have no information about that.", "I am not sure.", "That is not something I know.")


@register
class IdkDPO(LMUnlearner):
    name = "idkdpo"
    paper = "TOFU (Maini et al., 2024) IDK preference with DPO (Rafailov et al., NeurIPS 2023)"
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
        idk = encode(data.tokenizer, [(qa.question, REFUSALS[i % len(REFUSALS)]) for i, qa in enumerate(data.forget)],
                     n_positions(model))
        dev = next(model.parameters()).device
        # the forget stream yields positions: pair each forget sample with its own refusal
        state = {}

        def loss(m, fb, rb):
            wb = idk.select(state["idx"]).to(dev)
            win, lose = -answer_nll(m, wb, normalise=False), -answer_nll(m, fb, normalise=False)
            win_ref, lose_ref = -answer_nll(ref, wb, normalise=False).detach(), -answer_nll(ref, fb, normalise=False).detach()
            dpo = -F.logsigmoid(c.beta * ((win - win_ref) - (lose - lose_ref))).mean() * 2 / c.beta
            return c.gamma * dpo + c.alpha * retain_nll(m, rb)

        return gradient_loop(model, data, c, loss, state)
