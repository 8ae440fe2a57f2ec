"""Datasets: bundled digits, IDX Fashion-MNIST, CIFAR pickle batches, user arrays and .npz."""
import gzip
import pickle
import struct

import numpy as np
import pytest
import torch

from oblivio import OblivioError, from_arrays, load_dataset
from oblivio.data import read_idx


def test_digits_shapes_and_range(digits):
    assert digits.info.num_classes == 10 and digits.info.input_shape == (1, 8, 8)
    assert digits.x_train.shape == (1437, 1, 8, 8) and digits.x_test.shape == (360, 1, 8, 8)
    assert 0.0 <= digits.x_train.min() and digits.x_train.max() <= 1.0
    assert set(digits.y_test.tolist()) == set(range(10))


def _write_idx(path, array: np.ndarray) -> None:
    code = {np.uint8: 0x08}[array.dtype.type]
    header = bytes([0, 0, code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.tobytes())


def test_fashion_mnist_reads_idx_files(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    tr_x, te_x = rng.integers(0, 256, (12, 28, 28), dtype=np.uint8), rng.integers(0, 256, (5, 28, 28), dtype=np.uint8)
    tr_y, te_y = np.arange(12, dtype=np.uint8) % 10, np.arange(5, dtype=np.uint8)
    for name, arr in [("train-images-idx3-ubyte", tr_x), ("train-labels-idx1-ubyte", tr_y),
                      ("t10k-images-idx3-ubyte", te_x), ("t10k-labels-idx1-ubyte", te_y)]:
        _write_idx(tmp_path / f"{name}.gz", arr)
    monkeypatch.setenv("OBLIVIO_FASHION_MNIST_DIR", str(tmp_path))
    ds = load_dataset("fashion-mnist")
    assert ds.x_train.shape == (12, 1, 28, 28) and ds.x_test.shape == (5, 1, 28, 28)
    assert torch.allclose(ds.x_train[3, 0], torch.from_numpy(tr_x[3]).float() / 255)
    assert ds.y_train.tolist() == tr_y.tolist()


def test_fashion_mnist_missing_files_says_how_to_install(tmp_path):
    with pytest.raises(OblivioError, match="apt-get install dataset-fashion-mnist"):
        load_dataset("fashion-mnist", root=tmp_path)


def test_read_idx_rejects_truncated_file(tmp_path):
    p = tmp_path / "bad-idx1-ubyte"
    p.write_bytes(bytes([0, 0, 8, 1]) + struct.pack(">I", 10) + b"\x01\x02")
    with pytest.raises(OblivioError, match="truncated"):
        read_idx(p)


@pytest.mark.parametrize("name,files,key,classes", [
    ("cifar10", [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"], "labels", 10),
    ("cifar100", ["train", "test"], "fine_labels", 100),
])
def test_cifar_pickle_batches(tmp_path, name, files, key, classes):
    rng = np.random.default_rng(1)
    for f in files:
        batch = {"data": rng.integers(0, 256, (4, 3072), dtype=np.uint8), key: [0, 1, classes - 1, 2]}
        with open(tmp_path / f, "wb") as fh:
            pickle.dump(batch, fh)
    ds = load_dataset(name, root=tmp_path)
    assert ds.info.input_shape == (3, 32, 32) and ds.info.num_classes == classes
    assert len(ds.y_train) == 4 * (len(files) - 1) and len(ds.y_test) == 4
    assert ds.y_train.max().item() == classes - 1


def test_cifar_missing_directory_is_clear(tmp_path):
    with pytest.raises(OblivioError, match="never downloads"):
        load_dataset("cifar10", root=tmp_path / "nope")


def test_user_arrays_and_npz(tmp_path):
    x = np.random.default_rng(0).random((50, 6)).astype(np.float32)
    y = np.arange(50) % 3
    ds = from_arrays(x[:40], y[:40], x[40:], y[40:])
    assert ds.info.input_shape == (1, 1, 6) and ds.num_classes == 3
    np.savez(tmp_path / "mine.npz", x=x, y=y)
    ds2 = load_dataset("npz", path=tmp_path / "mine.npz")
    assert len(ds2.y_train) == 40 and len(ds2.y_test) == 10 and ds2.info.name == "mine"


def test_unknown_dataset_is_named():
    with pytest.raises(OblivioError, match="unknown dataset 'mnist2'"):
        load_dataset("mnist2")


def test_label_out_of_range_and_shape_mismatch():
    with pytest.raises(OblivioError, match="labels must lie"):
        from_arrays(np.zeros((4, 3)), [0, 1, 2, 3], np.zeros((2, 3)), [0, 1], num_classes=3)
    with pytest.raises(OblivioError, match="differ in shape"):
        from_arrays(np.zeros((4, 3)), [0, 1, 0, 1], np.zeros((2, 5)), [0, 1])
