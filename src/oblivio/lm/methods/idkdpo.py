"""idkdpo: DPO towards a refusal, with the forget answer as the rejected one.

Paper: TOFU's "I don't know" target (Maini et al., "TOFU: A Task of Fictitious Unlearning for LLMs", COLM 2024,
arXiv 2401.06121) with the DPO loss of Rafailov et al., "Direct Preference Optimization: Your Language Model is
Secretly a Reward Model", NeurIPS 2023 (arXiv 2305.18290), as OpenUnlearning's IdkDPO. Preferred: a refusal;
rejected: the forget answer; reference: a frozen copy of the model as given; loss ``-(2/beta) E log sigmoid(beta
(log-ratio(refusal) - log-ratio(answer)))`` over summed answer log-probabilities (the 2/beta scale is
OpenUnlearning's), total ``gamma * dpo + alpha * NLL(retain)``. AdamW without weight decay, gradient norm clipped
at 1 (``gradient_loop``). Stopping rule: ``epochs`` x ceil(|forget| / ``batch_size``) steps.

Options (loss parameters are OpenUnlearning's DPO):
- ``lr`` (1e-3): the AdamW rate.
- ``epochs`` (10) / ``batch_size`` (16): the step budget; forget and retain batches.
- ``beta`` (0.1): inverse temperature of the preference loss.
- ``gamma`` (1) / ``alpha`` (1): weights of the DPO and retain terms.

Departures from the papers (no design note):
- The refusals are four fixed strings (``REFUSALS``), the i-th forget sample always paired with the same one, where
  TOFU samples from 100, so the preferred answer of a sample is deterministic.
- Retain batches are drawn from the retain authors and the world facts, because oblivio's corpus has world facts
  every model must keep.
- The default rate is for oblivio's small models (OpenUnlearning's TOFU recipe tunes billion-parameter ones at 1e-5).
"""
from __future__ import annotations

from dataclasses import dataclass

from ..models import n_positions
from ..training import answer_nll, encode
from .base import LMUnlearner, frozen, gradient_loop, negative_preference, register, retain_nll

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
            dpo = negative_preference((win - win_ref) - (lose - lose_ref), c.beta)
            return c.gamma * dpo + c.alpha * retain_nll(m, rb)

        return gradient_loop(model, data, c, loss, state)
