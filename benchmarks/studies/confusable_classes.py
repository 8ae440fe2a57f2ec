"""Forgetting a class the model confuses with others: dm against populations of retrained models.

Fashion-MNIST MLP originals that memorise (the recipe of benchmarks/population-fashion-mnist.yaml: a seeded
3,000-image subset, 60 epochs of SGD, no weight decay), two confusable pairs, each class forgotten in turn:
T-shirt (0) / shirt (6) and pullover (2) / coat (4). Per class: ``--members`` originals (seeds 1..M) each
unlearned by every variant, M models retrained without the class (the reference) and M more (the noise floor).

Per variant: KLoM (mean over the class's training samples, KL of the binned margin histograms, unlearned vs
retrained populations), the mean margin, the Spearman correlation of per-example mean margins with the retrains'
(does each sample land where a retrain puts it), where the mass goes (mean KL from the retrains' average
distribution over the remaining classes to the variant's, and top-1 agreement with it), test accuracy on the
remaining classes, steps and time. Also which statistic of the original predicts a retrain's per-example margin.

    python benchmarks/studies/confusable_classes.py --out docs/design/confusable-classes.md
    python benchmarks/studies/confusable_classes.py --out x.md --variants '{"dm": {}, "lr 3e-3": {"lr": 3e-3}, "no ramp": {"MATCH_RAMP": 1}}'
"""
from __future__ import annotations

import argparse
import json
import subprocess
import time
from unittest import mock
from concurrent.futures import ProcessPoolExecutor
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch
from scipy.stats import spearmanr

import oblivio
from oblivio.audit.population import klom, margins
from oblivio.audit.verdict import remaining_test_accuracy
from oblivio.bench.report import cpu_name
from oblivio.methods import dm as dm_module
from oblivio.methods.dm import mass_logit
from oblivio.training import predict

CLASSES = {0: "T-shirt", 6: "shirt", 2: "pullover", 4: "coat"}
EPOCHS = 60


def fit(part, seed: int):
    cfg = oblivio.TrainConfig(epochs=EPOCHS, batch_size=64, lr=0.05, optimizer="sgd", weight_decay=0.0,
                              momentum=0.9, seed=seed)
    start = time.perf_counter()
    model = oblivio.train("mlp", part, 10, cfg, device="cpu")[0]
    return model, time.perf_counter() - start


def others(logits: np.ndarray, cls: int) -> np.ndarray:
    """Distribution over the remaining classes (the forgotten one masked out), per model and example."""
    p = torch.as_tensor(logits).softmax(-1).numpy()
    p[..., cls] = 0.0
    return p / p.sum(-1, keepdims=True)


def study(cls: int, members: int, variants: dict[str, dict]) -> dict:
    torch.set_num_threads(1)
    data = oblivio.load_dataset("fashion-mnist").subset(3000, 1000, seed=0)
    split = oblivio.make_split(data, oblivio.ClassForget(classes=[cls]), seed=0)
    y = split.forget.tensors[1].numpy()

    def on_forget(model) -> np.ndarray:
        return predict(model, split.forget)[0].numpy()

    def remaining_accuracy(model) -> float:
        return remaining_test_accuracy(predict(model, split.test)[0], split.test.tensors[1], (cls,))

    retrained = [fit(split.retain, 100 + s) for s in range(members)]
    floor = [fit(split.retain, 200 + s) for s in range(members)]
    originals = [fit(split.train, 1 + s)[0] for s in range(members)]
    R = np.stack([on_forget(m) for m, _ in retrained])
    r_margin, r_where = margins(R, y), others(R, cls).mean(0)
    retrain_time = float(np.mean([t for _, t in retrained]))

    def row(name: str, L: np.ndarray, models, seconds=None, steps=None) -> dict:
        m = margins(L, y)
        p = others(L, cls)
        return {"name": name, "klom": float(klom(m, r_margin).mean()), "margin": float(m.mean()),
                "spearman": float(spearmanr(m.mean(0), r_margin.mean(0))[0]),
                "where_kl": float((r_where * (np.log(r_where + 1e-12) - np.log(p + 1e-12))).sum(-1).mean()),
                "top1": float((p.argmax(-1) == r_where.argmax(-1)).mean()),
                "remaining_test": float(np.mean([remaining_accuracy(u) for u in models])),
                "time": None if seconds is None else float(np.mean(seconds)) / retrain_time,
                "steps": steps}

    rows = [row("retrain (other seeds): noise floor", np.stack([on_forget(m) for m, _ in floor]), [m for m, _ in floor]),
            row("original", np.stack([on_forget(m) for m in originals]), originals)]
    for name, options in variants.items():
        unlearned, seconds, steps = [], [], []
        constants = {k: v for k, v in options.items() if k.isupper()}  # dm's derived settings, e.g. OTHERS_SHARE
        options = {k: v for k, v in options.items() if not k.isupper()}
        with mock.patch.dict(vars(dm_module), constants):  # restored afterwards
            for model in originals:
                start = time.perf_counter()
                result = oblivio.unlearn(model, split=split, method="dm", seed=0, train_epochs=EPOCHS,
                                         verify="record", device="cpu", **options)
                seconds.append(time.perf_counter() - start)
                unlearned.append(result.model)
                steps.append(int(result.info.get("steps", 0)))
        rows.append(row(name, np.stack([on_forget(u) for u in unlearned]), unlearned, seconds,
                        f"{int(np.median(steps))} ({min(steps)}-{max(steps)})"))
    # which statistic of the original (member 1) ranks the forget samples as a retrain's margin does
    L0 = torch.as_tensor(on_forget(originals[0]))
    masked = L0.index_fill(1, torch.tensor([cls]), float("-inf"))
    predictors = {
        "the forgotten-mass logit (what dm's quantile matching sorts by)": mass_logit(L0, torch.tensor([cls])),
        "evidence for the other classes, logsumexp of their logits": masked.logsumexp(1),
        "the forgotten class's own logit": L0[:, cls],
    }
    ranks = {k: float(spearmanr(v.numpy(), r_margin.mean(0))[0]) for k, v in predictors.items()}
    return {"class": cls, "n": len(y), "rows": rows, "predictors": ranks, "retrain_time": retrain_time,
            "retrain_self": float(spearmanr(r_margin[0], r_margin[1:].mean(0))[0])}


def fmt(x, spec: str) -> str:
    return "" if x is None else format(x, spec)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--members", type=int, default=8)
    parser.add_argument("--variants", default='{"dm (defaults)": {}, "dm without the other-class anchor": '
                        '{"OTHERS_SHARE": 0.0}}', help="JSON: row name -> dm options (UPPER-CASE: dm's constants)")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    variants = json.loads(args.variants)
    start = time.perf_counter()
    with ProcessPoolExecutor(args.workers) as pool:
        results = list(pool.map(study, CLASSES, [args.members] * len(CLASSES), [variants] * len(CLASSES)))
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                            cwd=Path(__file__).parent).stdout.strip()
    lines = [
        "# Forgetting classes the model confuses",
        "",
        f"<!-- generated by `python benchmarks/studies/confusable_classes.py --out {args.out}"
        + (f" --variants '{args.variants}'" if args.variants != parser.get_default("variants") else "")
        + "`: do not edit -->",
        "",
        f"Fashion-MNIST MLP, 3,000-image subset (seed 0), {EPOCHS} epochs SGD lr 0.05, no weight decay; "
        f"{args.members} originals (seeds 1-{args.members}) unlearned per row, {args.members} retrains without the "
        f"class (seeds 100+) as the reference, {args.members} more (seeds 200+) as the noise floor. Commit `{commit}`, "
        f"{datetime.now(timezone.utc).date()}, {cpu_name()} (1 thread per worker, {args.workers} workers), "
        f"{time.perf_counter() - start:.0f} s.",
        "",
        "KLoM: mean over the class's training samples (lower is better; the noise floor is two retrained populations). "
        "Margin: the forgotten label's logit minus the logsumexp of the others, mean. Spearman: per-example mean "
        "margins against the retrains' (does each sample land where retraining puts it). Where-KL / top-1: the "
        "retrains' average distribution over the remaining classes against the row's (where the mass goes). "
        "Remaining test: test accuracy on the other classes. Time: x one retrain.",
        "",
    ]
    for res in results:
        lines += [f"## Forgetting {CLASSES[res['class']]} (class {res['class']}, {res['n']} training samples)", "",
                  "| row | KLoM | margin | Spearman | where-KL | top-1 | remaining test % | steps | x retrain |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for r in res["rows"]:
            lines.append(f"| {r['name']} | {r['klom']:.2f} | {r['margin']:.1f} | {r['spearman']:+.2f} | "
                         f"{r['where_kl']:.3f} | {r['top1']:.3f} | {r['remaining_test']:.1f} | {r['steps'] or ''} | "
                         f"{fmt(r['time'], '.2f')} |")
        lines += ["", f"Retrain's per-example margin ranked by a statistic of original 1 (Spearman; one retrain "
                      f"against the others: {res['retrain_self']:+.2f}):", ""]
        lines += [f"- {k}: {v:+.2f}" for k, v in res["predictors"].items()]
        lines.append("")
    args.out.write_text("\n".join(lines))
    print(args.out.read_text())


if __name__ == "__main__":
    main()
