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
    digits = load_config(BENCHMARKS / "digits.yaml")  # no augmentation: no key, so its hash and cache keys stay
    assert "augment" not in digits.train and "augment" not in digits.base_spec()["train"]


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


def _weights(model) -> list:
    return [t.detach().clone() for t in model.state_dict().values()]


def _same(a, b) -> bool:
    return all(x.equal(y) for x, y in zip(a, b))


@pytest.mark.parametrize("method, options", [("ft", {"epochs": 1}), ("l1-sparse", {"epochs": 1}),
                                             ("salun", {"epochs": 1}), ("retrain", {"epochs": 1})])
def test_methods_that_fine_tune_use_the_recipes_augmentation(splits, original, method, options):
    from oblivio import unlearn

    split = splits["random"]
    run = lambda augment: _weights(unlearn(original("random"), split=split, method=method, seed=0, device="cpu",  # noqa: E731
                                           verify="record", augment=augment, **options).model)
    plain, aug, again = run(None), run("crop:1+flip"), run("flip+crop:1")
    assert _same(aug, again) and not _same(plain, aug)  # seeded, and the batches did change


def test_methods_that_do_not_fine_tune_ignore_it(splits, original):
    from oblivio import unlearn

    run = lambda augment: _weights(unlearn(original("random"), split=splits["random"], method="ga", seed=0,  # noqa: E731
                                           device="cpu", verify="record", augment=augment).model)
    assert _same(run(None), run("crop:1+flip"))


def test_cli_records_the_recipe_and_forget_carries_it_on(cli, tmp_path):
    model = tmp_path / "m.safetensors"
    code, out, err = cli("train", "--epochs", "2", "--augment", "flip+crop:1", "--out", model, "--no-progress")
    assert code == 0, err
    meta = json.loads(model.with_suffix(".json").read_text())
    assert meta["extra"]["train_config"]["augment"] == "crop:1+flip"
    forgot = tmp_path / "f.safetensors"
    code, out, err = cli("forget", "--checkpoint", model, "--count", "5", "--method", "ft", "--out", forgot)
    assert code == 0, err
    assert json.loads(forgot.with_suffix(".json").read_text())["extra"]["unlearning"]["recipe"]["augment"] == "crop:1+flip"
    code, out, err = cli("train", "--augment", "rotate", "--out", tmp_path / "x.safetensors", "--no-progress")
    assert code == 2 and err.strip().splitlines() == ["error: augment: bad part 'rotate' in 'rotate'; use crop:P "
                                                      "and/or flip, each once, joined by + (e.g. crop:4+flip)"]
