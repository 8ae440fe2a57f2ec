"""retrain: the gold standard, the original recipe (architecture, training config, seed) on retain + world only.

Exact unlearning (the convention of the unlearning literature, e.g. Bourtoule et al., "Machine Unlearning",
IEEE S&P 2021, arXiv 1912.03817; TOFU's retain model, Maini et al., COLM 2024, arXiv 2401.06121). A fresh model
of ``data.model_spec`` is trained by ``train_lm`` with ``data.train`` on the retain and world answers; its weights
replace the model's. Needs the original's model spec and training config (an error otherwise). Stopping rule: the
original's number of epochs, i.e. its step budget scaled by the share of its training answers that remain (TOFU's
retain model trains for the same epochs as the full one; the same steps would fit retain answers more often than
the original did and make every unlearned model look less useful than "retrained").

Options:
- ``seed_offset`` (0): added to ``data.seed`` for the initialisation and the training; a second retrain with
  another offset measures the noise floor.

Departures: none (exact by construction); TOFU's retain model is fine-tuned from a pretrained base, oblivio's small
models are trained from scratch as the original was.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from ...errors import OblivioError
from ..models import build_lm
from ..training import TrainConfig, train_lm
from .base import LMUnlearner, register


def same_epochs(train: TrainConfig, n_kept: int, n_original: int) -> TrainConfig:
    """``train`` with its steps scaled from ``n_original`` training answers to ``n_kept`` (at least one step)."""
    return dataclasses.replace(train, steps=max(1, round(train.steps * n_kept / max(1, n_original))))


@register
class Retrain(LMUnlearner):
    name = "retrain"
    paper = "exact unlearning: train again without the forget set"
    requires = frozenset({"retain"})

    @dataclass
    class Config:
        seed_offset: int = 0  # a second retrain with another seed measures the noise floor

    def run(self, model, data):
        if not data.model_spec or data.train is None:
            raise OblivioError("method 'retrain' needs the original's model spec and training config")
        fresh = build_lm(data.model_spec["arch"], config=data.model_spec["config"], seed=data.seed + self.config.seed_offset)
        kept = data.retain + data.world
        info = train_lm(fresh, data.tokenizer, kept, same_epochs(data.train, len(kept), len(kept) + len(data.forget)),
                        seed=data.seed + self.config.seed_offset)
        model.load_state_dict(fresh.state_dict())
        return {"train": info}
