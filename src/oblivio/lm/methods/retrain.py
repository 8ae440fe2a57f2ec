"""Retrain: the gold standard, the original recipe (architecture, training config, seed) on retain + world only."""
from __future__ import annotations

from dataclasses import dataclass

from ...errors import OblivioError
from ..models import build_lm
from ..training import TrainConfig, train_lm
from .base import LMUnlearner, register


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
        info = train_lm(fresh, data.tokenizer, data.retain + data.world, data.train or TrainConfig(),
                        seed=data.seed + self.config.seed_offset)
        model.load_state_dict(fresh.state_dict())
        return {"train": info}
