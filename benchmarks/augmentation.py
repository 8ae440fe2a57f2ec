"""Fashion-MNIST ``cnn`` test accuracy with and without training augmentation, on this machine's CPU.

    PYTHONPATH=src python benchmarks/augmentation.py --out benchmarks/results/augmentation-fashion-mnist

Trains the small CNN on a seeded subset of the Fashion-MNIST training set (``--n-train``), once per seed and
recipe (no augmentation, then ``--augment``), with ``oblivio.training.train``'s default SGD one-cycle recipe,
and scores each model on the clean training subset and the full 10,000-image test set. Writes DIR/results.json
(``"kind": "augmentation"``, with machine, commit, date, command, seeds, seconds and accuracies per recipe and
seed); ``python benchmarks/publish.py`` renders it into RESULTS.md (mean +- sd over seeds).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import torch
from torch.utils.data import TensorDataset

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ledger_throughput import git_commit  # noqa: E402 - the same header as the other producers

from oblivio.bench.report import cpu_name  # noqa: E402
from oblivio.data import load_dataset  # noqa: E402
from oblivio.training import TrainConfig, accuracy, train  # noqa: E402

KIND = "augmentation"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True, help="folder for results.json")
    ap.add_argument("--n-train", type=int, default=20000, help="seeded subset of the training set (subset seed 0)")
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--augment", default="crop:2+flip", help="the augmented recipe's spec (oblivio.augment)")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    data = load_dataset("fashion-mnist").subset(args.n_train, None, seed=0)
    train_set, test_set = TensorDataset(data.x_train, data.y_train), TensorDataset(data.x_test, data.y_test)
    doc = {"kind": KIND, "dataset": "fashion-mnist", "model": "cnn", "n_train": len(train_set),
           "n_test": len(test_set), "epochs": args.epochs, "seeds": args.seeds, "threads": args.threads,
           "recipe": {k: v for k, v in TrainConfig(epochs=args.epochs).__dict__.items()
                      if k not in ("seed", "progress", "augment", "amp")},
           "machine": f"{platform.node()}, {cpu_name()}, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f} at start",
           "python": platform.python_version(), "torch": torch.__version__, "commit": git_commit(),
           "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
           "command": " ".join(["python", "benchmarks/augmentation.py", *(argv if argv is not None else sys.argv[1:])]),
           "rows": []}
    for seed in args.seeds:
        for spec in (None, args.augment):
            start = time.perf_counter()
            model, _ = train("cnn", train_set, data.num_classes, TrainConfig(epochs=args.epochs, seed=seed, augment=spec),
                             device="cpu")
            row = {"augment": spec, "seed": seed, "seconds": round(time.perf_counter() - start, 1),
                   "train": accuracy(model, train_set), "test": accuracy(model, test_set)}
            doc["rows"].append(row)
            print(json.dumps(row), flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(doc, indent=1) + "\n")
    print(f"wrote {args.out / 'results.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
