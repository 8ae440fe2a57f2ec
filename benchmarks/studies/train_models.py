"""Train time and test accuracy of each registered model, plus backdoor attack success rate.

    python benchmarks/studies/train_models.py --dataset digits
    python benchmarks/studies/train_models.py --dataset fashion-mnist --epochs mlp=5,cnn=5,resnet18=1

Prints a Markdown table with the machine, torch version, seed and date.
"""
from __future__ import annotations

import argparse
import os
import platform
import time
from datetime import datetime, timezone

import torch

from oblivio import Backdoor, RandomSubset, TrainConfig, attack_success_rate, load_dataset, make_split, train
from oblivio.training import accuracy


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", default="digits")
    p.add_argument("--models", default="mlp,cnn,resnet18")
    p.add_argument("--epochs", default="mlp=20,cnn=20,resnet18=20", help="per model, e.g. mlp=5,cnn=5,resnet18=1")
    p.add_argument("--n-train", type=int, default=None, help="seeded subset of the training set")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--backdoor-model", default="cnn", help="model whose backdoor attack success rate is measured (none: skip)")
    args = p.parse_args()

    epochs = {k: int(v) for k, v in (kv.split("=") for kv in args.epochs.split(","))}
    data = load_dataset(args.dataset)
    if args.n_train:
        data = data.subset(args.n_train, seed=args.seed)
    print(f"machine: {platform.machine()} {platform.processor() or ''}, {os.cpu_count()} CPUs, "
          f"torch {torch.__version__} ({torch.get_num_threads()} threads); seed {args.seed}; "
          f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC")
    clean = make_split(data, RandomSubset(count=1), seed=args.seed)
    print(f"\n{args.dataset}: train pool {len(clean.train)}, test {len(clean.test)}\n")
    print("| model | epochs | train time (s) | test accuracy (%) |\n|---|---|---|---|")
    for arch in args.models.split(","):
        start = time.perf_counter()
        model, _ = train(arch, clean.train, data.num_classes, TrainConfig(seed=args.seed, epochs=epochs[arch]))
        seconds = time.perf_counter() - start
        print(f"| {arch} | {epochs[arch]} | {seconds:.1f} | {100 * accuracy(model, clean.test):.2f} |", flush=True)

    if args.backdoor_model == "none":
        return
    poisoned = make_split(data, Backdoor(fraction=0.1, target=0), seed=args.seed)
    arch = args.backdoor_model
    model, _ = train(arch, poisoned.train, data.num_classes, TrainConfig(seed=args.seed, epochs=epochs[arch]))
    asr = attack_success_rate(model, poisoned.test_triggered, 0)
    print(f"\nbackdoor (BadNets {'x'.join(map(str, poisoned.scenario.patch_for(data.info.input_shape)))} px patch, 10% poisoned, target 0), "
          f"{arch}: attack success rate {100 * asr:.2f}%, clean test accuracy {100 * accuracy(model, poisoned.test):.2f}%")


if __name__ == "__main__":
    main()
