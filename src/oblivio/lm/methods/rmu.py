"""RMU: representation misdirection (Li et al. 2024, "The WMDP Benchmark: Measuring and Reducing Malicious Use
with Unlearning", arXiv 2403.03218).

On forget answers, push layer ``layer``'s hidden states towards c x u (u a fixed random unit vector); on
retain answers, keep them equal to the original's (MSE, weight alpha); only the MLP weights of ``layer`` and
the two layers below it are trained, as in the authors' code. Departures: the steering coefficient is
relative (``steering`` x the original's mean hidden-state norm on the forget set) because a tiny model's
activation scale is not Zephyr's (the paper's absolute 6.5 / alpha 1200); the hidden states are
``output_hidden_states`` rather than a forward hook; MSE is averaged over answer positions only.
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
