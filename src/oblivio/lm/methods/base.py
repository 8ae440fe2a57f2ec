"""The language-model unlearning interface: what a method may use (``LMUnlearnData``), the base class and the
registry, and the pieces most methods share (batch streams, a frozen reference copy, the retain loss)."""
from __future__ import annotations

import copy
import dataclasses
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from ...errors import OblivioError
from ..data import QA, LMTokenizer
from ..training import Batch, TrainConfig, answer_nll, batches, encode_answers


@dataclass
class LMUnlearnData:
    """What a method may use. ``reference`` is the third-party pool: authors never trained on (dm's unseen
    data); ``world`` facts every model keeps. ``train`` and ``model_spec`` let ``retrain`` rebuild the
    original recipe (architecture config, training config, seed)."""

    tokenizer: LMTokenizer
    forget: list[QA]
    retain: list[QA]
    world: list[QA] = field(default_factory=list)
    reference: list[QA] = field(default_factory=list)
    seed: int = 0
    train: TrainConfig | None = None
    model_spec: dict | None = None  # {"arch": ..., "config": ...}

    @classmethod
    def from_splits(cls, tokenizer: LMTokenizer, splits, seed: int = 0, train: TrainConfig | None = None,
                    model_spec: dict | None = None) -> "LMUnlearnData":
        """The data of ``splits`` in both wordings (``with_paraphrases``: what the model was trained on)."""
        from ..data import with_paraphrases

        return cls(tokenizer, with_paraphrases(splits.qa("forget")), with_paraphrases(splits.qa("retain")),
                   splits.qa("world"), with_paraphrases(splits.qa("reference")), seed, train, model_spec)


@dataclass
class LMResult:
    model: Any
    method: str
    config: dict
    seconds: float
    info: dict = field(default_factory=dict)


LM_METHODS: dict[str, type["LMUnlearner"]] = {}


def register(cls):
    LM_METHODS[cls.name] = cls
    return cls


def get_lm_method(name: str) -> type["LMUnlearner"]:
    if name not in LM_METHODS:
        raise OblivioError(f"unknown language-model method {name!r}; choose from {', '.join(sorted(LM_METHODS))}")
    return LM_METHODS[name]


class LMUnlearner(ABC):
    """A method: ``name``, ``paper``, ``requires`` (subset of {"retain", "reference"}), a ``Config`` dataclass
    with working defaults, and ``run`` on a copy of the model (the input is never modified)."""

    name: ClassVar[str]
    paper: ClassVar[str] = ""
    requires: ClassVar[frozenset[str]] = frozenset()

    @dataclass
    class Config:
        lr: float = 1e-3
        epochs: int = 10
        batch_size: int = 16

    def __init__(self, **options):
        names = {f.name for f in dataclasses.fields(self.Config)}
        unknown = sorted(set(options) - names)
        if unknown:
            raise OblivioError(f"method {self.name!r} has no option {unknown[0]!r}; options: {', '.join(sorted(names))}")
        self.config = self.Config(**options)

    @abstractmethod
    def run(self, model, data: LMUnlearnData) -> dict[str, Any]:
        """Unlearn in place; return info."""

    def unlearn(self, model, data: LMUnlearnData) -> LMResult:
        if not data.forget:
            raise OblivioError("the forget set is empty: nothing to unlearn")
        for need in self.requires:
            if not getattr(data, need):
                raise OblivioError(f"method {self.name!r} needs a {need} set")
        work = copy.deepcopy(model)
        start = time.perf_counter()
        torch.manual_seed(data.seed)
        info = self.run(work, data) or {}
        work.eval()
        return LMResult(work, self.name, dataclasses.asdict(self.config), time.perf_counter() - start, info)


def unlearn_lm(model, data: LMUnlearnData, method: str, **options) -> LMResult:
    return get_lm_method(method)(**options).unlearn(model, data)


def frozen(model):
    """A frozen copy of ``model`` (the reference / original)."""
    ref = copy.deepcopy(model).eval()
    for p in ref.parameters():
        p.requires_grad_(False)
    return ref


class Streams:
    """Encoded forget / retain (+ world) sets and endless seeded batch streams over them."""

    def __init__(self, model, data: LMUnlearnData, batch_size: int, seed_offset: int = 0):
        from ..models import n_positions

        n = n_positions(model)
        self.dev = next(model.parameters()).device
        self.forget = encode_answers(data.tokenizer, data.forget, n)
        kept = data.retain + data.world
        self.retain = encode_answers(data.tokenizer, kept, n) if kept else None
        self.reference = encode_answers(data.tokenizer, data.reference, n) if data.reference else None
        s = data.seed + seed_offset
        self._f = batches(len(self.forget), batch_size, s)
        self._r = batches(len(self.retain), batch_size, s + 1) if self.retain is not None else None

    def next_forget(self) -> tuple[Batch, torch.Tensor]:
        idx = next(self._f)
        return self.forget.select(idx).to(self.dev), idx

    def next_retain(self) -> Batch | None:
        return self.retain.select(next(self._r)).to(self.dev) if self._r is not None else None


def retain_nll(model, batch: Batch | None) -> torch.Tensor:
    """Mean token NLL on a retain batch (0 without one)."""
    return torch.zeros(()) if batch is None else mean_token_nll(model, batch)


def kl_to(model, ref, batch: Batch) -> torch.Tensor:
    """Mean over labelled positions of KL(ref || model) of the next-token distributions."""
    from ..training import IGNORE

    logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits[:, :-1].float()
    with torch.no_grad():
        ref_logits = ref(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits[:, :-1].float()
    mask = batch.labels[:, 1:] != IGNORE
    kl = F.kl_div(logits.log_softmax(-1), ref_logits.log_softmax(-1), log_target=True, reduction="none").sum(-1)
    return (kl * mask).sum() / mask.sum().clamp(min=1)


def check_finite(loss: torch.Tensor, where: str) -> None:
    if not torch.isfinite(loss):
        raise OblivioError(f"{where}: the loss is not finite (lower lr)")


def steps_for(config, data: LMUnlearnData) -> int:
    """TOFU counts unlearning in epochs over the forget set: ``epochs`` x ceil(|forget| / batch_size)."""
    return int(config.epochs) * -(-len(data.forget) // int(config.batch_size))


def gradient_loop(model, data: LMUnlearnData, config, loss_fn, state: dict | None = None) -> dict:
    """AdamW on ``loss_fn(model, forget_batch, retain_batch)`` for ``steps_for`` steps (the shared loop of the
    loss-based baselines); returns steps and the last loss."""
    if config.lr <= 0 or config.epochs < 0 or config.batch_size <= 0:
        raise OblivioError("lr and batch_size must be positive, epochs at least 0")
    streams = Streams(model, data, config.batch_size)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=config.lr, weight_decay=0.0)
    steps, last = steps_for(config, data), float("nan")
    model.train()
    for step in range(steps):
        fb, idx = streams.next_forget()
        if state is not None:  # the forget samples' positions, for losses that pair them with something
            state["idx"] = idx
        loss = loss_fn(model, fb, streams.next_retain())
        check_finite(loss, f"step {step + 1}")
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        last = float(loss.detach())
    model.eval()
    return {"steps": steps, "final_loss": last}


def mean_token_nll(model, batch: Batch) -> torch.Tensor:
    """Mean NLL over every answer token of ``batch`` (tokens, not samples, weigh equally)."""
    from ..training import IGNORE

    return answer_nll(model, batch, normalise=False).sum() / (batch.labels != IGNORE).sum()


def negative_preference(margin: torch.Tensor, beta: float) -> torch.Tensor:
    """-(2 / beta) x mean log sigmoid(beta x margin): the loss NPO, SimNPO and DPO put on a per-sample margin."""
    return -F.logsigmoid(beta * margin).mean() * 2 / beta
