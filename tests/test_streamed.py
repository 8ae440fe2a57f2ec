"""Streamed data (issue 23): any map-style Dataset, and image folders read from disk batch by batch."""
from __future__ import annotations

import json
import resource
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file
from torch.utils.data import Dataset, TensorDataset

from oblivio import OblivioError
from oblivio import parts, streamed
from oblivio.batching import DeviceData
from oblivio.parts import labels_of, select, tensors_of
from oblivio.data import load_dataset
from oblivio.methods import available_methods
from oblivio.training import TrainConfig, predict, train
from oblivio.unlearning import unlearn


class Generated(Dataset):
    """Samples computed from their index: nothing held in memory, no ``tensors`` attribute."""

    def __init__(self, n: int, shape=(1, 8, 8), classes: int = 3):
        self.n, self.shape, self.classes = n, shape, classes

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int):
        g = torch.Generator().manual_seed(int(i))
        y = i % self.classes
        return torch.rand(self.shape, generator=g) + y, y


def stacked(data: Dataset) -> TensorDataset:
    xs, ys = zip(*(data[i] for i in range(len(data))))
    return TensorDataset(torch.stack(xs), torch.tensor(ys))


@pytest.fixture
def tiny_budget(monkeypatch):
    """Pretend the process may stack at most 6,000 bytes (23 of these samples), so the data here is streamed."""
    monkeypatch.setattr(parts, "memory_budget", lambda: 6000)
    monkeypatch.setattr(streamed, "memory_budget", lambda: 6000)


def test_a_dataset_over_the_budget_is_streamed_and_trains_to_the_same_weights(tiny_budget):
    data = Generated(120)
    batches = DeviceData(data, "cpu")
    assert batches.streamed is not None and batches.x is None
    assert torch.equal(labels_of(data), torch.arange(120) % 3)
    config = TrainConfig(epochs=2, batch_size=16, seed=3)
    a, _ = train("mlp", data, 3, config, device="cpu")
    b, _ = train("mlp", stacked(data), 3, config, device="cpu")
    for (k, v), w in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(v, w), k
    logits, y = predict(a, data, batch_size=32)
    ref_logits, ref_y = predict(b, stacked(data), batch_size=32)
    assert torch.equal(y, ref_y) and torch.allclose(logits, ref_logits)


def test_stacking_over_the_budget_is_a_one_line_error_and_select_reads_only_the_picked(tiny_budget):
    data = Generated(120)
    with pytest.raises(OblivioError, match="in memory, over the"):
        tensors_of(data)
    few = select(data, [5, 7])
    x, y = tensors_of(few)  # two samples fit
    assert torch.equal(x[1], data[7][0]) and y.tolist() == [2, 1]


@pytest.mark.parametrize("method", [m for m in available_methods() if m != "retrain"])
def test_every_method_runs_on_streamed_parts(tiny_budget, method):
    data = Generated(150)
    forget, retain, third = select(data, range(0, 15)), select(data, range(15, 120)), select(data, range(120, 150))
    model, _ = train("mlp", select(data, range(120)), 3, TrainConfig(epochs=3, batch_size=16, seed=0), device="cpu")
    result = unlearn(model, forget=forget, retain=retain, third_party=third, method=method, seed=0, verify="record")
    assert result.model is not model


def write_pngs(root: Path, per_class: int, side: int, classes: int = 4, seed: int = 0) -> Path:
    """root/{train,test}/c<k>/<i>.png: striped grayscale images (small PNGs that decode large)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:side, 0:side] / side
    for part, n in (("train", per_class), ("test", max(2, per_class // 4))):
        for k in range(classes):
            (root / part / f"c{k}").mkdir(parents=True)
            for i in range(n):
                wave = np.sin(2 * np.pi * 3 * (k + 1) * (xx if k % 2 else yy) + rng.uniform(0, 6.3))
                pixels = 0.5 + rng.uniform(0.3, 0.5) * wave
                Image.fromarray((pixels * 255).astype(np.uint8)).save(root / part / f"c{k}" / f"{i}.png")
    return root


def test_a_streamed_image_folder_holds_the_same_pixels_and_gives_the_same_model(tmp_path, cli):
    root = write_pngs(tmp_path / "stripes", 12, 16)
    lazy = load_dataset("imagefolder", root=root, stream=True)
    eager = load_dataset("imagefolder", root=root, stream=False)
    assert isinstance(lazy.x_train, streamed.StreamedImages) and isinstance(eager.x_train, torch.Tensor)
    assert torch.equal(lazy.x_train.materialize(), eager.x_train) and torch.equal(lazy.y_test, eager.y_test)
    assert lazy.fingerprint() == eager.fingerprint()
    for s in ("true", "false"):
        code, _, err = cli("train", "--dataset", "imagefolder", "--data-dir", root, "--data-option", f"stream={s}",
                           "--epochs", "2", "--out", tmp_path / f"{s}.safetensors", "--no-progress")
        assert code == 0, err
    a, b = load_file(tmp_path / "true.safetensors"), load_file(tmp_path / "false.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)
    code, _, err = cli("train", "--dataset", "imagefolder", "--data-dir", root, "--data-option", "stream=maybe",
                       "--out", tmp_path / "x.safetensors")
    assert code == 2 and err.count("\n") == 1 and "stream must be true, false or auto" in err
    code, _, err = cli("train", "--dataset", "imagefolder", "--data-dir", root, "--data-option", "stream=true",
                       "--backdoor", "--out", tmp_path / "x.safetensors")
    assert code == 2 and "streamed from disk" in err


def _capped(cap_bytes: int):
    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_DATA, (cap_bytes, resource.getrlimit(resource.RLIMIT_DATA)[1]))
    return limit


@pytest.mark.slow
def test_train_forget_audit_under_a_memory_cap_smaller_than_the_data(tmp_path):
    """2,400 training images of 256x256 decode to 600 MiB of floats; every command runs with its data segment
    capped at 1,100 MiB (the CLI alone takes ~500 MiB, its DataLoader worker as much again by this count), so
    none may hold the decoded training set; the same training with streaming turned off (~1.9 GiB) fails."""
    root = write_pngs(tmp_path / "big", 600, 256)
    cap = _capped(1100 << 20)

    def oblivio(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "oblivio.cli", *args], preexec_fn=cap, capture_output=True,
                              text=True, cwd=tmp_path, timeout=600)

    model = ("--model", "mlp", "--model-arg", "hidden=16", "--epochs", "2", "--no-progress")
    eager = oblivio("train", "--dataset", "imagefolder", "--data-dir", str(root), "--data-option", "stream=false",
                    "--out", "eager.safetensors", *model)
    assert eager.returncode == 2 and eager.stderr.startswith("error:") and "MiB" in eager.stderr
    run = oblivio("train", "--dataset", "imagefolder", "--data-dir", str(root), "--out", "m.safetensors", *model)
    assert run.returncode == 0, run.stderr
    run = oblivio("forget", "--checkpoint", "m.safetensors", "--out", "f.safetensors", "--scenario", "class",
                  "--classes", "1")
    assert run.returncode == 0, run.stderr
    run = oblivio("audit", "--checkpoint", "f.safetensors")
    assert run.returncode == 0, run.stderr
    report = json.loads((tmp_path / "f.audit" / "audit.json").read_text())
    assert "unlearned" in json.dumps(report)
