"""dm redesign study (issue 8): dm against retrain and ft / rl / salun on memorising originals.

    OMP_NUM_THREADS=1 PYTHONPATH=src python benchmarks/studies/dm_study.py --cases digits-random30,bc-random10 --seeds 0,1,2
    OMP_NUM_THREADS=1 PYTHONPATH=src python benchmarks/studies/dm_study.py --cases fm-mlp-random10 --methods dm,ft --dm phi_weight=2

Each case trains an original (to ~100% train accuracy: no weight decay, many epochs) and a retrain on
the retain set with the same recipe and seed, runs each method from the original with its defaults,
and scores everything with ``oblivio.audit.measure`` (UA, RA, TA, MIA-efficacy in the SalUn
convention, backdoor ASR) and ``gap_to_retrain`` (Avg. Gap over UA, RA, TA, MIA). Prints one
Markdown row per (case, seed, model) and a mean ± std summary per (case, model), headed by the
machine, torch version, threads, date and git commit. Cases are chosen *not* to be the repository's
bench configs (other classes, triggers, targets, poison rates; another dataset).
"""
from __future__ import annotations

import argparse
import os
import platform
import subprocess
import time
from datetime import datetime, timezone

import numpy as np
import torch

import oblivio
from oblivio import Backdoor, ClassForget, RandomSubset, TrainConfig, make_split, retrain, train, unlearn
from oblivio.audit import gap_to_retrain, measure

MEMORISE = dict(weight_decay=0.0)


def _breast_cancer() -> oblivio.Dataset:
    from sklearn.datasets import load_breast_cancer

    d = load_breast_cancer()
    x, y = d.data.astype(np.float32), d.target
    perm = np.random.default_rng(0).permutation(len(y))
    test, tr = perm[:114], perm[114:]
    mu, sd = x[tr].mean(0), x[tr].std(0)
    x = (x - mu) / sd
    return oblivio.from_arrays(x[tr], y[tr], x[test], y[test], name="breast-cancer")


def _fashion(n_train: int, n_test: int) -> oblivio.Dataset:
    return oblivio.load_dataset("fashion-mnist").subset(n_train, n_test, seed=0)


# name -> (dataset factory, model, train recipe, scenario)
CASES = {
    "digits-random10": (lambda: oblivio.load_dataset("digits"), "mlp", dict(epochs=40, **MEMORISE), RandomSubset(fraction=0.1)),
    "digits-random30": (lambda: oblivio.load_dataset("digits"), "mlp", dict(epochs=40, **MEMORISE), RandomSubset(fraction=0.3)),
    "digits-class7": (lambda: oblivio.load_dataset("digits"), "mlp", dict(epochs=40, **MEMORISE), ClassForget((7,))),
    "digits-backdoor-tl": (lambda: oblivio.load_dataset("digits"), "mlp", dict(epochs=40, **MEMORISE),
                           Backdoor(fraction=0.05, target=4, patch_size=2, position="top-left")),
    "bc-random10": (_breast_cancer, "mlp", dict(epochs=60, **MEMORISE), RandomSubset(fraction=0.1)),
    "bc-random30": (_breast_cancer, "mlp", dict(epochs=60, **MEMORISE), RandomSubset(fraction=0.3)),
    "fm-mlp-random10": (lambda: _fashion(3000, 1000), "mlp", dict(epochs=40, **MEMORISE), RandomSubset(fraction=0.1)),
    "fm-mlp-class5": (lambda: _fashion(3000, 1000), "mlp", dict(epochs=40, **MEMORISE), ClassForget((5,))),
    "fm-mlp-backdoor": (lambda: _fashion(3000, 1000), "mlp", dict(epochs=40, **MEMORISE),
                        Backdoor(fraction=0.05, target=2, patch_size=3, position="top-left")),
    "fm-cnn-random10": (lambda: _fashion(3000, 1000), "cnn", dict(epochs=30, batch_size=16, lr=0.1, **MEMORISE),
                        RandomSubset(fraction=0.1)),
    "fm-cnn-class6": (lambda: _fashion(3000, 1000), "cnn", dict(epochs=30, batch_size=16, lr=0.1, **MEMORISE),
                      ClassForget((6,))),
    # gpu.yaml's recipe (SGD one-cycle, weight decay 5e-4, 15 epochs) on all of Fashion-MNIST: not memorising
    "fm-full-mlp-class6": (lambda: oblivio.load_dataset("fashion-mnist"), "mlp",
                           dict(epochs=15, batch_size=256, lr=0.1, weight_decay=5e-4, momentum=0.9), ClassForget((6,))),
}


def parse_options(text: str) -> dict:
    out = {}
    for item in filter(None, text.split(",")):
        key, value = item.split("=")
        try:
            out[key] = int(value)
        except ValueError:
            try:
                out[key] = float(value)
            except ValueError:
                out[key] = value
    return out


def header(args) -> str:
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "src"], capture_output=True, text=True).stdout.strip()
    except OSError:
        commit, dirty = "?", ""
    return (f"# dm_study {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC | {platform.platform()} | {platform.processor() or 'cpu'}"
            f" | torch {torch.__version__} threads {torch.get_num_threads()} | commit {commit}{' +dirty src' if dirty else ''}"
            f" | seeds {args.seeds} | dm options {args.dm or 'defaults'}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cases", default="digits-random30,bc-random10")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--methods", default="dm,ft,rl,salun")
    p.add_argument("--dm", default="", help="dm options, e.g. phi_weight=2,z_stop=1.5")
    args = p.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    print(header(args))
    cols = ["case", "seed", "model", "UA", "RA", "TA", "MIA", "ASR", "gap", "s", "x_retrain", "dm"]
    print("| " + " | ".join(cols) + " |\n|" + "---|" * len(cols))
    rows = []
    for case in args.cases.split(","):
        make_data, arch, recipe, scenario = CASES[case]
        data = make_data()
        for seed in map(int, args.seeds.split(",")):
            split = make_split(data, scenario, seed=seed)
            cfg = TrainConfig(seed=seed, **recipe)
            original, hist = train(arch, split.train, data.num_classes, cfg)
            t0 = time.perf_counter()
            gold, _ = retrain(arch, split.retain, data.num_classes, cfg)
            t_retrain = time.perf_counter() - t0
            want = measure(gold, split, seed=seed)
            models = [("original", original, None, None), ("retrain", gold, t_retrain, None)]
            for method in args.methods.split(","):
                options = parse_options(args.dm) if method == "dm" else {}
                res = unlearn(original, split=split, method=method, arch=arch, seed=seed, **options)
                models.append((method, res.model, res.seconds, res.info))
            for name, model, secs, info in models:
                m = measure(model, split, seed=seed)
                gap = gap_to_retrain(m, want)["avg_gap"]
                note = ""
                if name == "dm":
                    note = f"{info['steps']} steps, {info['stopped_by']}, d {info['initial_distance']:.2f}->{info['distance']:.2f}"
                elif name == "original":
                    note = f"train acc {100 * hist.accuracy[-1]:.1f}"
                row = dict(case=case, seed=seed, model=name, UA=m["UA"], RA=m["RA"], TA=m["TA"], MIA=m["MIA"],
                           ASR=m.get("ASR", float("nan")), gap=gap, s=secs or 0.0,
                           x_retrain=(secs / t_retrain) if secs else float("nan"), dm=note)
                rows.append(row)
                print("| " + " | ".join(f"{row[c]:.2f}" if isinstance(row[c], float) else str(row[c]) for c in cols) + " |",
                      flush=True)
    print("\n## mean ± std over seeds\n| case | model | UA | RA | TA | MIA | ASR | Avg. Gap | x retrain |\n|---|---|---|---|---|---|---|---|---|")
    for case in dict.fromkeys(r["case"] for r in rows):
        for name in dict.fromkeys(r["model"] for r in rows if r["case"] == case):
            sel = [r for r in rows if r["case"] == case and r["model"] == name]

            def ms(key: str) -> str:
                v = np.array([r[key] for r in sel], dtype=float)
                if np.isnan(v).all():
                    return "-"
                return f"{np.nanmean(v):.2f} ± {np.nanstd(v, ddof=1) if len(v) > 1 else 0.0:.2f}"

            print(f"| {case} | {name} | " + " | ".join(ms(k) for k in ("UA", "RA", "TA", "MIA", "ASR", "gap", "x_retrain")) + " |")


if __name__ == "__main__":
    main()
