"""A checkpoint's lineage: what earlier requests forgot stays out of the retain set and counts for dm."""
from __future__ import annotations

import json

import numpy as np
import pytest

from oblivio.checkpoint import read_sidecar
from oblivio.pipeline import split_with_lineage
from oblivio.scenarios import ClassForget, RandomSubset




@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A digits MLP checkpoint (3 epochs) and the training-pool indices of two disjoint requests."""
    from oblivio import load_dataset, save_checkpoint, train
    from oblivio.pipeline import training_spec, training_split
    from oblivio.training import TrainConfig

    root = tmp_path_factory.mktemp("lineage")
    data = load_dataset("digits")
    split = training_split(data, 0, 0.1, None)
    model = train("mlp", split.train, data.num_classes, TrainConfig(epochs=3, seed=0))[0]
    path = root / "m.safetensors"
    save_checkpoint(path, model, arch="mlp", input_shape=data.info.input_shape, num_classes=data.num_classes,
                    dataset="digits", seed=0, training=training_spec({"name": "digits"}, split))
    pool = split.pool_idx
    return path, tuple(int(i) for i in pool[:20]), tuple(int(i) for i in pool[20:32])


def test_a_second_request_keeps_the_first_out_of_the_retain_set(trained, cli, tmp_path):
    path, first, second = trained
    one, two = tmp_path / "one.safetensors", tmp_path / "two.safetensors"
    code, out, err = cli("forget", "--checkpoint", path, "--out", one, "--scenario", "random", "--indices",
                    ",".join(map(str, first)), "--method", "ft")
    assert code == 0, out + err
    code, out, err = cli("forget", "--checkpoint", one, "--out", two, "--scenario", "random", "--indices",
                    ",".join(map(str, second)), "--method", "dm")
    assert code == 0, out + err
    assert "20 forgotten earlier in this model's lineage stay out of the retain set" in " ".join(err.split())
    record = read_sidecar(two)["extra"]["unlearning"]
    assert record["forgotten"] == sorted(first + second)
    assert record["info"]["lineage_samples"] == 20 and "underpowered" not in record["info"]  # 32 in all: a set
    code, _, err = cli("forget", "--checkpoint", two, "--out", tmp_path / "three.safetensors", "--scenario", "random",
                       "--indices", ",".join(map(str, first[:3])))
    assert code == 2 and "already forgotten by this checkpoint's lineage" in err


def test_lineage_split_of_a_class_request_leaves_earlier_samples_out(trained, cli, tmp_path):
    path, first, _ = trained
    one = tmp_path / "one.safetensors"
    assert cli("forget", "--checkpoint", path, "--out", one, "--scenario", "random", "--indices",
               ",".join(map(str, first)), "--method", "ft")[0] == 0
    lineage = split_with_lineage(read_sidecar(one), ClassForget((3,)))
    retain = set(lineage.split.retain_idx.tolist())
    assert not retain & set(first) - set(lineage.split.forget_idx.tolist())
    assert set(lineage.previous.tolist()) == set(first) - set(lineage.request.forget_idx.tolist())
    # the recorded spec is the request's own, so an audit rebuilds it
    assert lineage.request.spec()["hashes"]["pool"] != lineage.split.hashes()["pool"]
    plain = split_with_lineage(json.loads(json.dumps(read_sidecar(path))), RandomSubset(indices=first))
    assert plain.previous.size == 0 and np.array_equal(plain.split.pool_idx, plain.request.pool_idx)
