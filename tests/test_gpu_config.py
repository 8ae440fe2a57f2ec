"""benchmarks/gpu.yaml: it parses, names every method, and (shrunk to a few hundred samples, one epoch,
the small CNN instead of ResNet-18, on the CPU) runs end to end with a device-stating header."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from oblivio.bench import run_benchmark
from oblivio.bench.config import load_config
from oblivio.methods import available_methods
from oblivio.training import TrainConfig, train

CONFIG = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu.yaml"


def test_gpu_config_is_full_scale_resnet18_with_every_method():
    cfg = load_config(CONFIG)
    assert cfg.model == "resnet18" and cfg.dataset["name"] == "fashion-mnist"
    assert cfg.dataset["n_train"] is None and cfg.dataset["n_test"] is None  # full data: 54k / 6k / 10k
    assert cfg.third_party_fraction == 0.1
    assert set(cfg.methods) == set(available_methods()) - {"retrain"}
    assert set(cfg.scenarios) == {"random", "class", "backdoor"}


def test_resnet18_trains_a_step_on_cpu_with_the_gpu_recipe(tmp_path):
    cfg = load_config(CONFIG)
    x, y = torch.rand(16, 1, 28, 28), torch.arange(16) % 10
    recipe = TrainConfig(**(cfg.train | {"epochs": 1, "batch_size": 8}))
    model, history = train("resnet18", torch.utils.data.TensorDataset(x, y), 10, recipe, device="cpu")
    assert len(history.loss) == 1 and torch.isfinite(torch.tensor(history.loss)).all()


@pytest.mark.slow
def test_gpu_config_runs_end_to_end_when_shrunk(tmp_path):
    cfg = load_config(CONFIG)
    small = dataclasses.replace(
        cfg, dataset=cfg.dataset | {"n_train": 250, "n_test": 60}, model="cnn", train=cfg.train | {"epochs": 1},
        methods=cfg.methods | {"dm": {"max_steps": 10}}, threads=1,
    )
    result = run_benchmark(small, tmp_path, progress=False, device="cpu")
    assert not result.errors, result.errors
    assert result.header["device"] == "cpu" and result.header["gpu"] is None
    methods = {r["method"] for r in result.runs}
    assert methods == {"original", "retrain", "retrain (other seed)"} | set(cfg.methods)
    assert "device: cpu" in (tmp_path / "results.md").read_text()
