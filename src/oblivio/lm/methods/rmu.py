"""RMU: representation misdirection of the forget answers' hidden states.

Paper: Li et al., "The WMDP Benchmark: Measuring and Reducing Malicious Use with Unlearning", ICML 2024
(arXiv 2403.03218). Loss: on forget answers, MSE between layer ``layer``'s hidden states and ``c * u`` (u a fixed
random unit vector, seeded); on retain answers, ``alpha`` x MSE to the frozen original's hidden states. Only the
MLP weights of ``layer`` and the two layers below it are trained, as in the authors' code; AdamW without weight
decay. Stopping rule: ``epochs`` x ceil(|forget| / ``batch_size``) steps.

Options:
- ``lr`` (1e-3): the AdamW rate.
- ``epochs`` (10) / ``batch_size`` (16): the step budget; forget and retain batches.
- ``layer`` (-1: the middle block, (n_layers - 1) // 2): the block whose output is steered (clamped to the last).
- ``steering`` (4): c as a multiple of the original's mean hidden-state norm on the forget set.
- ``alpha`` (10): weight of the retain term.

Departures from the paper (no design note):
- The steering coefficient is relative (``steering`` x that norm), because a tiny model's activation scale is not
  Zephyr-7B's (the paper's absolute c = 6.5, alpha = 1200).
- The MSE is averaged over answer positions only, because the facts to forget or keep are in the answers.
- Hidden states come from ``output_hidden_states`` rather than a forward hook (same values).
- Retain batches are drawn from the retain authors and the world facts, because oblivio's corpus has world facts
  every model must keep.
- The default rate is for oblivio's small models (OpenUnlearning's TOFU recipe tunes billion-parameter ones at 1e-5).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..training import IGNORE
from .base import LMUnlearner, Streams, check_finite, frozen, register, steps_for


def _hidden(model, batch, layer: int) -> torch.Tensor:
    out = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, output_hidden_states=True)
    return out.hidden_states[layer + 1]  # [0] is the embeddings


def _mlp_params(model, layers: list[int]) -> list[torch.nn.Parameter]:
    names = [f".{i}.mlp." for i in layers]
    return [p for n, p in model.named_parameters() if any(k in n for k in names)]


@register
class RMU(LMUnlearner):
    name = "rmu"
    paper = "The WMDP Benchmark: Measuring and Reducing Malicious Use with Unlearning (Li et al., ICML 2024)"
    requires = frozenset({"retain"})

    @dataclass
    class Config:
        lr: float = 1e-3
        epochs: int = 10
        batch_size: int = 16
        layer: int = -1  # -1: the middle layer
        steering: float = 4.0
        alpha: float = 10.0

    def run(self, model, data):
        c = self.config
        n_layers = int(getattr(model.config, "n_layer", None) or model.config.num_hidden_layers)
        layer = c.layer if c.layer >= 0 else max(0, (n_layers - 1) // 2)
        layer = min(layer, n_layers - 1)
        ref = frozen(model)
        params = _mlp_params(model, list(range(max(0, layer - 2), layer + 1)))
        for p in model.parameters():
            p.requires_grad_(False)
        for p in params:
            p.requires_grad_(True)
        streams = Streams(model, data, c.batch_size)
        with torch.no_grad():
            f = streams.forget.to(streams.dev)
            h = _hidden(ref, f, layer)
            scale = float(h.norm(dim=-1)[f.attention_mask.bool()].mean())
        g = torch.Generator().manual_seed(data.seed)
        u = torch.rand(h.shape[-1], generator=g)
        u = (u / u.norm() * c.steering * scale).to(streams.dev)
        opt = torch.optim.AdamW(params, lr=c.lr, weight_decay=0.0)
        steps = steps_for(c, data)
        model.train()
        for step in range(steps):
            fb, _ = streams.next_forget()
            fm = (fb.labels != IGNORE)
            loss = ((_hidden(model, fb, layer) - u) ** 2).mean(-1)[fm].mean()
            rb = streams.next_retain()
            if rb is not None:
                rm = rb.labels != IGNORE
                with torch.no_grad():
                    kept = _hidden(ref, rb, layer)
                loss = loss + c.alpha * ((_hidden(model, rb, layer) - kept) ** 2).mean(-1)[rm].mean()
            check_finite(loss, f"method 'rmu' step {step + 1}")
            opt.zero_grad()
            loss.backward()
            opt.step()
        for p in model.parameters():
            p.requires_grad_(True)
        model.eval()
        return {"steps": steps, "layer": layer, "steering_norm": float(u.norm()), "final_loss": float(loss.detach()) if steps else None}
