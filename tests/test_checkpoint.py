"""Checkpoints: bit-exact round trip, sidecar checks, atomic writes, no pickle."""
import json

import pytest
import torch

from oblivio import OblivioError, build_model, load_checkpoint, save_checkpoint
from oblivio.checkpoint import sidecar_path


def _save(path, arch="cnn"):
    model = build_model(arch, (1, 8, 8), 10, seed=1)
    save_checkpoint(path, model, arch=arch, input_shape=(1, 8, 8), num_classes=10, dataset="digits", seed=1)
    return model


@pytest.mark.parametrize("arch", ["mlp", "cnn", "resnet18"])
def test_round_trip_is_bit_exact(tmp_path, arch):
    model = _save(tmp_path / "m.safetensors", arch)
    loaded, meta = load_checkpoint(tmp_path / "m.safetensors")
    assert meta["arch"] == arch and meta["dataset"] == "digits" and meta["seed"] == 1
    for (k, a), (k2, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert k == k2 and a.dtype == b.dtype and torch.equal(a, b)
    x = torch.rand(3, 1, 8, 8)
    model.eval()
    assert torch.equal(model(x), loaded(x))


def test_no_temp_files_left_behind(tmp_path):
    _save(tmp_path / "m.safetensors")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.json", "m.safetensors"]


def test_sidecar_not_matching_the_model_is_refused(tmp_path):
    path = tmp_path / "m.safetensors"
    _save(path, "cnn")
    meta = json.loads(sidecar_path(path).read_text())
    meta["arch"] = "mlp"
    sidecar_path(path).write_text(json.dumps(meta))
    with pytest.raises(OblivioError, match="does not match the model"):
        load_checkpoint(path)


def test_changed_weights_are_refused(tmp_path):
    path = tmp_path / "m.safetensors"
    _save(path)
    _save(tmp_path / "other.safetensors", "mlp")
    path.write_bytes((tmp_path / "other.safetensors").read_bytes())
    with pytest.raises(OblivioError, match="SHA-256 differs"):
        load_checkpoint(path)


def test_missing_checkpoint_or_sidecar(tmp_path):
    with pytest.raises(OblivioError, match="checkpoint not found"):
        load_checkpoint(tmp_path / "none.safetensors")
    path = tmp_path / "m.safetensors"
    _save(path)
    sidecar_path(path).unlink()
    with pytest.raises(OblivioError, match="no sidecar"):
        load_checkpoint(path)


def test_failed_write_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "m.safetensors"
    _save(path)
    before = path.read_bytes()
    import oblivio.checkpoint as ck

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(ck, "save_bytes", boom)  # the weights write fails
    with pytest.raises(OblivioError, match="cannot write .*: disk full"):  # one line, no traceback
        _save(path, "mlp")
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.json", "m.safetensors"]


def test_custom_module_needs_the_model(tmp_path):
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))
    path = tmp_path / "c.safetensors"
    save_checkpoint(path, model, arch=None, input_shape=(1, 8, 8), num_classes=10)
    with pytest.raises(OblivioError, match="pass the model"):
        load_checkpoint(path)
    loaded, _ = load_checkpoint(path, torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10)))
    assert torch.equal(loaded[1].weight, model[1].weight)
