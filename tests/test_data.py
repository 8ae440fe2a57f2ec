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
    with pytest.raises(OblivioError, match="out of range for 3 classes"):
        from_arrays(np.zeros((4, 3)), [0, 1, 2, 3], np.zeros((2, 3)), [0, 1], num_classes=3)
    with pytest.raises(OblivioError, match="differ in shape"):
        from_arrays(np.zeros((4, 3)), [0, 1, 0, 1], np.zeros((2, 5)), [0, 1])


# -- validation of user data (issue 10, case 1) ------------------------------------------------------

def _npz(tmp_path, name="data.npz", **arrays):
    path = tmp_path / name
    np.savez(path, **arrays)
    return path


def _xy(n=40, classes=4, seed=0):
    rng = np.random.default_rng(seed)
    return rng.random((n, 8, 8)).astype(np.float32), np.arange(n) % classes


def test_npz_nan_pixels_are_refused_with_file_key_and_index(tmp_path):
    x, y = _xy()
    x[7, 2, 3] = np.nan
    x[9, 0, 0] = np.inf
    path = _npz(tmp_path, x=x, y=y)
    with pytest.raises(OblivioError, match=r"data.npz: x: sample 7 has a NaN or infinite value \(2 such samples\)"):
        load_dataset("npz", path=path)


def test_stray_label_does_not_grow_the_class_count(tmp_path):
    x, y = _xy(classes=10)
    y[5] = 42
    with pytest.raises(OblivioError, match="label 42 at index 5 leaves class 10 without any sample"):
        load_dataset("npz", path=_npz(tmp_path, x_train=x, y_train=y, x_test=x[:5], y_test=y[:5] % 10))
    # a declared class count makes 42 plainly out of range
    with pytest.raises(OblivioError, match="label 42 at index 5 is out of range for 10 classes"):
        load_dataset("npz", path=_npz(tmp_path, "d2.npz", x=x, y=y, num_classes=np.int64(10)))


@pytest.mark.parametrize("labels,match", [
    (np.arange(40) % 4 + 0.5, r"labels must be integers; index 0 holds"),
    (np.array([str(i % 4) for i in range(40)]), "labels must be integer class indices, got dtype <U1"),
    (np.where(np.arange(40) == 3, -1, np.arange(40) % 4), "labels must be >= 0; index 3 holds -1"),
])
def test_bad_labels_are_refused(tmp_path, labels, match):
    x, _ = _xy()
    with pytest.raises(OblivioError, match=match):
        load_dataset("npz", path=_npz(tmp_path, x=x, y=labels))


def test_integral_float_labels_are_accepted(tmp_path):
    x, y = _xy()
    data = load_dataset("npz", path=_npz(tmp_path, x=x, y=y.astype(np.float64)))
    assert data.num_classes == 4 and data.y_train.dtype == torch.int64


def test_length_mismatch_empty_and_non_npz(tmp_path):
    x, y = _xy()
    with pytest.raises(OblivioError, match="x_train has 40 samples but y_train has 39 labels"):
        load_dataset("npz", path=_npz(tmp_path, x_train=x, y_train=y[:-1], x_test=x, y_test=y))
    with pytest.raises(OblivioError, match="no samples"):
        load_dataset("npz", path=_npz(tmp_path, "e.npz", x=np.zeros((0, 4)), y=np.zeros(0, dtype=int)))
    bogus = tmp_path / "notes.npz"
    bogus.write_text("hello, not a zip")
    with pytest.raises(OblivioError, match="notes.npz: not a readable .npz file"):
        load_dataset("npz", path=bogus)
    with pytest.raises(OblivioError, match="is a directory"):
        load_dataset("npz", path=tmp_path)


def test_from_arrays_validates_tensors():
    x = torch.zeros(6, 1, 2, 2)
    x[4, 0, 1, 1] = float("nan")
    with pytest.raises(OblivioError, match="x_train: sample 4 has a NaN"):
        from_arrays(x, torch.tensor([0, 1, 0, 1, 0, 1]), x[:2], torch.tensor([0, 1]))


def test_digits_refuses_a_data_dir(tmp_path):
    with pytest.raises(OblivioError, match="digits .* takes no --data-dir"):
        load_dataset("digits", root=tmp_path)
