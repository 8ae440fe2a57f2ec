"""The GPU recipes (benchmarks/resnet18-fashion-mnist.yaml, benchmarks/cifar10.yaml): they load, keep their
protocol, and their plumbing runs on the CPU on a tiny generated image folder with everything else shrunk."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from oblivio.bench import parse_config, run_benchmark
from oblivio.bench.config import load_config, load_yaml

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def image_folder(root: Path, mode: str, classes: int = 3, per_class: int = 10) -> Path:
    """root/train/<k>/<i>.png and root/test/<k>/<i>.png: 8x8 images whose brightness depends on the class."""
    rng = np.random.default_rng(0)
    channels = 3 if mode == "RGB" else 1
    for part, n in (("train", per_class), ("test", per_class // 2)):
        for k in range(classes):
            (root / part / str(k)).mkdir(parents=True)
            for i in range(n):
                pixels = np.clip(rng.normal(60 + 70 * k, 30, (8, 8, channels)), 0, 255).astype(np.uint8)
                Image.fromarray(pixels.squeeze(-1) if channels == 1 else pixels, mode).save(root / part / str(k) / f"{i}.png")
    return root


def test_the_recipes_keep_their_protocol():
    fm, cifar = load_config(BENCHMARKS / "resnet18-fashion-mnist.yaml"), load_config(BENCHMARKS / "cifar10.yaml")
    assert fm.model == cifar.model == "resnet18"
    assert fm.dataset["name"] == "fashion-mnist" and fm.dataset["n_train"] is None  # the full data set
    assert fm.train["augment"] == cifar.train["augment"] == "crop:4+flip"
    assert cifar.third_party_fraction == 0.1  # 50,000 -> a 45,000-sample pool
    assert cifar.scenarios["random"]["count"] == 4500 and cifar.scenarios["class"]["kind"] == "class"
    assert {"salun", "l1-sparse", "ft"} <= set(cifar.methods)


@pytest.mark.parametrize("name, mode", [("resnet18-fashion-mnist", "L"), ("cifar10", "RGB")])
def test_recipe_plumbing_runs_on_a_tiny_image_folder(tmp_path, name, mode):
    doc = load_yaml((BENCHMARKS / f"{name}.yaml").read_text())
    root = image_folder(tmp_path / "images", mode)
    doc |= {"dataset": {"name": "imagefolder", "root": str(root), "options": {"mode": mode}},
            "train": doc["train"] | {"epochs": 1, "batch_size": 8},
            "methods": {m: {"epochs": 1} for m in ("ft", "salun") if m in doc["methods"]},
            "model": "cnn", "threads": 1, "output": None}  # resnet18 here takes ~15 s on a shared CPU
    doc["scenarios"] = {"random": {"count": 3}, **{k: v for k, v in doc["scenarios"].items() if k == "class"}}
    cfg = parse_config(doc)
    run_benchmark(cfg, tmp_path / "out", progress=False)
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert results["config"]["train"]["augment"] == "crop:4+flip"  # the recipe is in the bench's output
    assert results["config"]["model"] == doc["model"]
    rows = {(r["scenario"], r["method"]) for r in results["runs"]}
    assert {("random", "retrain"), ("class", "retrain"), ("random", "salun"), ("class", "ft")} <= rows
