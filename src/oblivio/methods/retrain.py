"""retrain: the gold standard, a fresh model trained from scratch on the retain set only."""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from torch import nn

from ..models import build_model
from ..training import TrainConfig, dataset_shape, fresh_copy, train
from .base import UnlearnData, Unlearner, register
from .common import device_of


@register
class Retrain(Unlearner):
    """Exact unlearning by retraining from scratch on the retain set (the reference every method is compared with).

    Convention of the unlearning literature (e.g. Bourtoule et al., "Machine Unlearning", S&P 2021;
    the "Retrain" row of SalUn / Unlearn-Sparse tables). The fresh model is ``data.arch`` built with the
    run's seed (the same initialisation ``training.retrain`` uses), or, for a custom model, a copy
    of it with every layer re-initialised (``training.fresh_copy``). Options mirror ``TrainConfig``.
    """

    name = "retrain"
    paper = "Bourtoule et al., Machine Unlearning (IEEE S&P 2021): retraining from scratch"
    requires = frozenset({"retain"})

    @dataclass
    class Config:
        epochs: int = 20
        batch_size: int = 64
        lr: float = 0.05
        optimizer: str = "sgd"
        weight_decay: float = 5e-4
        momentum: float = 0.9

    def run(self, model: nn.Module, data: UnlearnData) -> dict[str, Any]:
        config = TrainConfig(**asdict(self.config), seed=data.seed)
        shape, _ = dataset_shape(data.retain)
        fresh = build_model(data.arch, shape, data.num_classes, seed=data.seed) if data.arch else None
        if fresh is None or fresh.state_dict().keys() != model.state_dict().keys():
            fresh = fresh_copy(model, data.seed)
        fresh, history = train(fresh, data.retain, data.num_classes, config, device=device_of(model))
        model.load_state_dict(fresh.state_dict())
        return {"epochs": config.epochs, "final_loss": history.loss[-1], "init": data.arch or "fresh_copy"}
