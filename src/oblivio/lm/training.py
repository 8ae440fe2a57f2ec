"""Encoding QA pairs for a causal LM, per-sample answer losses, and the training loop that memorises them.

A sample is ``prompt(question) + " " + answer + <eos>``; only the answer's tokens (and the eos) carry labels,
as in TOFU's fine-tuning, so a loss measures the answer given the question.
"""
from __future__ import annotations

import random
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..errors import OblivioError
from .data import QA, LMTokenizer, prompt

IGNORE = -100


@dataclass
class Batch:
    input_ids: torch.Tensor  # (n, t), right-padded
    labels: torch.Tensor  # IGNORE outside the answer
    attention_mask: torch.Tensor

    def __len__(self) -> int:
        return len(self.input_ids)

    def to(self, device) -> "Batch":
        return Batch(self.input_ids.to(device), self.labels.to(device), self.attention_mask.to(device))

    def select(self, idx) -> "Batch":
        return Batch(self.input_ids[idx], self.labels[idx], self.attention_mask[idx])


def encode(tokenizer: LMTokenizer, pairs: list[tuple[str, str]], max_len: int) -> Batch:
    """Encode (question, answer) pairs; labels only on the answer and eos. Too-long samples are an error."""
    rows, labels = [], []
    for q, a in pairs:
        p = tokenizer.encode(prompt(q))
        ans = tokenizer.encode(" " + a) + [tokenizer.eos_id]
        if len(p) + len(ans) > max_len:
            raise OblivioError(f"a sample has {len(p) + len(ans)} tokens, over the model's {max_len}: {q!r}")
        rows.append(p + ans)
        labels.append([IGNORE] * len(p) + ans)
    t = max((len(r) for r in rows), default=1)
    ids = torch.full((len(rows), t), tokenizer.pad_id, dtype=torch.long)
    lab = torch.full((len(rows), t), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(rows), t), dtype=torch.long)
    for i, (r, l) in enumerate(zip(rows, labels)):
        ids[i, : len(r)] = torch.tensor(r)
        lab[i, : len(l)] = torch.tensor(l)
        mask[i, : len(r)] = 1
    return Batch(ids, lab, mask)


def encode_answers(tokenizer: LMTokenizer, qas: list[QA], max_len: int, which: str = "answer") -> Batch:
    """Encode each QA with its ``answer`` or ``paraphrased`` answer."""
    return encode(tokenizer, [(qa.question, getattr(qa, which)) for qa in qas], max_len)


def token_logprobs(model, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token log-probabilities of the labels (n, t-1) and the mask of labelled positions."""
    logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits[:, :-1].float()
    labels = batch.labels[:, 1:]
    mask = labels != IGNORE
    lp = -F.cross_entropy(logits.transpose(1, 2), labels.clamp(min=0), reduction="none")
    return lp * mask, mask


def answer_nll(model, batch: Batch, normalise: bool = True) -> torch.Tensor:
    """Per-sample answer NLL: summed over answer tokens, or divided by their number (``normalise``)."""
    lp, mask = token_logprobs(model, batch)
    nll = -lp.sum(1)
    return nll / mask.sum(1).clamp(min=1) if normalise else nll


@torch.no_grad()
def answer_losses(model, batch: Batch, chunk: int = 256, normalise: bool = True) -> torch.Tensor:
    """``answer_nll`` without gradients, in chunks."""
    model.eval()
    dev = next(model.parameters()).device
    out = [answer_nll(model, batch.select(slice(i, i + chunk)).to(dev), normalise).cpu()
           for i in range(0, len(batch), chunk)]
    return torch.cat(out) if out else torch.zeros(0)


def batches(n: int, size: int, seed: int):
    """Endless shuffled index batches over ``range(n)`` (seeded)."""
    if n <= 0:
        raise OblivioError("cannot draw batches from an empty set")
    rng = random.Random(seed)
    while True:
        order = list(range(n))
        rng.shuffle(order)
        for i in range(0, n, size):
            yield torch.tensor(order[i : i + size])


@dataclass
class TrainConfig:
    """How a model memorises its facts: AdamW, linear warm-up then cosine decay, ``steps`` steps."""

    steps: int = 1500
    lr: float = 3e-3
    batch_size: int = 64
    weight_decay: float = 0.0
    warmup: int = 50

    def spec(self) -> dict:
        return dict(self.__dict__)


def train_lm(model, tokenizer: LMTokenizer, qas: list[QA], config: TrainConfig | None = None, seed: int = 0,
             progress=None) -> dict:
    """Fit ``model`` to the answers of ``qas`` (in place); returns the final mean loss and seconds."""
    import math

    c = config or TrainConfig()
    if not qas:
        raise OblivioError("nothing to train on")
    from .models import n_positions

    data = encode_answers(tokenizer, qas, n_positions(model))
    dev = next(model.parameters()).device
    opt = torch.optim.AdamW(model.parameters(), lr=c.lr, weight_decay=c.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / max(c.warmup, 1)) * 0.5 * (
        1 + math.cos(math.pi * min(s, c.steps) / max(c.steps, 1))))
    it = batches(len(data), c.batch_size, seed)
    start, loss = time.perf_counter(), torch.tensor(float("nan"))
    model.train()
    torch.manual_seed(seed)
    for step in range(c.steps):
        b = data.select(next(it)).to(dev)
        loss = answer_nll(model, b, normalise=False).sum() / (b.labels != IGNORE).sum()
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        if progress is not None and (step + 1) % 100 == 0:
            progress(step + 1, c.steps, float(loss.detach()))
    model.eval()
    return {"final_loss": float(loss.detach()), "seconds": time.perf_counter() - start, "steps": c.steps}
