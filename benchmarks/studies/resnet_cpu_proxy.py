"""benchmarks/gpu.yaml scaled down to run on a CPU: the same grid (every method with gpu.yaml's options,
random 10% / class 3 / backdoor, the same SGD one-cycle recipe) on a narrow ResNet-18 and a
Fashion-MNIST subset, over several seeds. It looks for the failures and collapses gpu.yaml would show,
where no GPU is at hand.

    OMP_NUM_THREADS=2 PYTHONPATH=src python benchmarks/studies/resnet_cpu_proxy.py --seeds 0,1,2 --out runs/bench/resnet-proxy
    ... --methods scrub,neggrad+ --scenarios random        # a subset
    ... --model mlp --n-train 0 --seeds 0                  # full-scale dry run: all of Fashion-MNIST, a small model

The architecture is gpu.yaml's CIFAR-style ResNet-18 (BatchNorm, residual blocks, 11M -> 0.7M
parameters) at a quarter of the width (16 base channels instead of 64), registered here as
``resnet18-w16``: about 1.4 ms per image and training step on two CPU cores instead of 13 ms.
It is a proxy, not gpu.yaml: a GPU run of gpu.yaml is still the measurement that counts. It found the
collapses a GPU run would show (scrub, l1-sparse, neggrad+; RESULTS.md) before any device time was spent;
``--model mlp --n-train 0`` (54k pool, 5,400-sample forget sets, 190-step epochs: a GPU run's step counts,
which the 4k subset does not have) found boundary failing on its first 85-step epoch.
"""
from __future__ import annotations

import argparse
import functools
from pathlib import Path

import yaml
from rich.console import Console

from oblivio.bench import print_report, run_benchmark
from oblivio.bench.config import parse_config
from oblivio.models import ResNet18, register_model

ROOT = Path(__file__).resolve().parents[1]  # benchmarks/, where gpu.yaml is


def proxy_config(seeds: list[int], n_train: int, epochs: int, methods: list[str] | None,
                 scenarios: list[str] | None, model: str = "resnet18-w16") -> dict:
    """gpu.yaml with ``model``, on an ``n_train``-image subset (0: gpu.yaml's full dataset), on the CPU."""
    doc = yaml.safe_load((ROOT / "gpu.yaml").read_text())
    doc["name"] = "resnet-cpu-proxy"
    if n_train:
        doc["dataset"] = {"name": "fashion-mnist", "n_train": n_train, "n_test": 1000, "subset_seed": 0}
    doc["model"] = model
    doc["train"] = dict(doc["train"], epochs=epochs)
    doc["seeds"] = seeds
    doc["device"] = "cpu"
    doc.pop("output", None)
    if methods:
        keep = set(methods)
        doc["methods"] = [m for m in doc["methods"] if (m if isinstance(m, str) else next(iter(m))) in keep]
    if scenarios:
        doc["scenarios"] = {k: v for k, v in doc["scenarios"].items() if k in scenarios}
    return doc


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--n-train", type=int, default=4000, help="Fashion-MNIST subset: pool + third-party (0: all)")
    p.add_argument("--model", default="resnet18-w16", help="resnet18-w16 (the proxy) or any registered model")
    p.add_argument("--epochs", type=int, default=15)
    p.add_argument("--methods", default=None, help="comma-separated subset of gpu.yaml's methods")
    p.add_argument("--scenarios", default=None, help="comma-separated subset of random,class,backdoor")
    p.add_argument("--out", default="runs/bench/resnet-cpu-proxy")
    a = p.parse_args()
    register_model("resnet18-w16", functools.partial(ResNet18, width=16))
    doc = proxy_config([int(s) for s in a.seeds.split(",")], a.n_train, a.epochs,
                       a.methods.split(",") if a.methods else None, a.scenarios.split(",") if a.scenarios else None, a.model)
    result = run_benchmark(parse_config(doc, source="resnet_cpu_proxy.py"), a.out)
    print_report(result, Console(width=160))


if __name__ == "__main__":
    main()
