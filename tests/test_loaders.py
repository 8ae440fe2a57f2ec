"""Loaders for data oblivio did not make (issue 23): image folders and CSV tables, in Python and through the CLI."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import oblivio
from oblivio import OblivioError, load_dataset
from oblivio.data import load_from_spec

ROOT = Path(__file__).resolve().parents[1]


def png(path: Path, size=(8, 8), mode="L", seed=0, fmt=None) -> np.ndarray:
    """Write one random image; returns its pixels."""
    rng = np.random.default_rng(seed)
    shape = (size[1], size[0]) + ((3,) if mode == "RGB" else ())
    pixels = rng.integers(0, 256, shape, dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path, format=fmt)
    return pixels


def folder(root: Path, classes: dict[str, int], size=(8, 8), mode="L") -> Path:
    """root/<class>/<i>.png with classes[name] images each (distinct random pixels)."""
    seed = 0
    for name, n in classes.items():
        for i in range(n):
            seed += 1
            png(root / name / f"{i:03d}.png", size, mode, seed)
    return root


def table(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def iris_like(path: Path, label="species", n=40) -> Path:
    rng = np.random.default_rng(0)
    rows = [f"a,b,{label},c"]
    for i in range(n):
        name = ["setosa", "versicolor", "virginica"][i % 3]
        x = rng.normal(size=3) + (i % 3)
        rows.append(f"{x[0]:.3f},{x[1]:.3f},{name},{x[2]:.3f}")
    return table(path, "\n".join(rows) + "\n")


# ---------------------------------------------------------------- image folders in Python


def test_image_folder_classes_sorted_split_seeded_and_pixels_kept(tmp_path):
    root = folder(tmp_path / "pets", {"dog": 10, "cat": 10, "emu": 10})
    data = load_dataset("imagefolder", root=root)
    assert data.info.class_names == ("cat", "dog", "emu") and data.num_classes == 3
    assert data.info.name == "pets" and data.info.input_shape == (1, 8, 8)
    assert (len(data.y_train), len(data.y_test)) == (24, 6)
    assert np.bincount(data.y_test.numpy()).tolist() == [2, 2, 2]  # stratified
    assert data.fingerprint() == load_dataset("imagefolder", root=root).fingerprint()  # seeded
    pixels = np.asarray(Image.open(root / "cat" / "000.png")) / 255.0
    assert any(np.allclose(x[0].numpy(), pixels) for x in data.x_train) or \
        any(np.allclose(x[0].numpy(), pixels) for x in data.x_test)
    assert float(data.x_train.min()) >= 0.0 and float(data.x_train.max()) <= 1.0
    other = load_dataset("imagefolder", root=root, test_fraction=0.5)
    assert (len(other.y_train), len(other.y_test)) == (15, 15)


def test_train_and_test_folders_are_the_split(tmp_path):
    folder(tmp_path / "d" / "train", {"a": 5, "b": 4})
    folder(tmp_path / "d" / "test", {"a": 2, "b": 1})
    data = load_dataset("imagefolder", root=tmp_path / "d")
    assert data.y_train.tolist() == [0] * 5 + [1] * 4 and data.y_test.tolist() == [0, 0, 1]
    with pytest.raises(OblivioError, match="test_fraction does not apply"):
        load_dataset("imagefolder", root=tmp_path / "d", test_fraction=0.3)


def test_mode_follows_the_majority_or_the_option(tmp_path):
    root = folder(tmp_path / "m", {"a": 3, "b": 3})
    png(root / "a" / "rgb.PNG", mode="RGB", seed=99)  # upper-case suffix counts
    png(root / "b" / "photo.jpg", mode="RGB", seed=98, fmt="JPEG")
    (root / "a" / "notes.txt").write_text("not an image")
    png(root / "b" / ".hidden.png", size=(3, 3))  # hidden: ignored (its size would clash)
    gray = load_dataset("imagefolder", root=root)
    assert gray.info.input_shape == (1, 8, 8) and len(gray.y_train) + len(gray.y_test) == 8
    rgb = load_dataset("imagefolder", root=root, mode="RGB")
    assert rgb.info.input_shape == (3, 8, 8)
    for name in ("x", "y", "z", "w"):
        png(root / "a" / f"{name}.png", mode="RGB", seed=ord(name))
    assert load_dataset("imagefolder", root=root).info.input_shape == (3, 8, 8)  # 6 RGB vs 6 L: ties go to RGB


def test_images_in_subfolders_of_a_class_count(tmp_path):
    root = folder(tmp_path / "n", {"a": 2, "b": 3})
    png(root / "a" / "more" / "deep.png", seed=7)
    data = load_dataset("imagefolder", root=root)
    assert np.bincount(np.concatenate([data.y_train.numpy(), data.y_test.numpy()])).tolist() == [3, 3]


# ---------------------------------------------------------------- CSV in Python


def test_csv_string_labels_sorted_and_the_label_option(tmp_path):
    data = load_dataset("csv", path=iris_like(tmp_path / "iris.csv"), label="species")
    assert data.info.class_names == ("setosa", "versicolor", "virginica")
    assert data.info.input_shape == (1, 1, 3) and (len(data.y_train), len(data.y_test)) == (32, 8)
    assert data.info.name == "iris"
    with pytest.raises(OblivioError, match=r"no label column 'label' in the header \(a, b, species, c\)"):
        load_dataset("csv", path=tmp_path / "iris.csv")


def test_csv_integer_labels_in_numeric_order_blank_lines_and_bom(tmp_path):
    rows = ["\ufeffx1,x2,label"] + [f"{i},{i * 2}.5,{[1, 2, 10][i % 3]}" for i in range(12)] + ["", ""]
    data = load_dataset("csv", path=table(tmp_path / "t.csv", "\n".join(rows)))
    assert data.info.class_names == ("1", "2", "10")
    x = np.concatenate([data.x_train.numpy(), data.x_test.numpy()]).reshape(-1, 2)
    y = np.concatenate([data.y_train.numpy(), data.y_test.numpy()])
    assert sorted(x[:, 0].tolist()) == list(range(12))
    assert all(y[x[:, 0] == i][0] == i % 3 for i in range(12))  # 1 -> 0, 2 -> 1, 10 -> 2


# ---------------------------------------------------------------- through the CLI


def one_error(code: int, out: str, err: str) -> str:
    assert code == 2, (code, out, err)
    assert "Traceback" not in out + err
    lines = err.strip().splitlines()  # forget's step log precedes it on stderr
    assert [ln for ln in lines if "error" in ln.lower()] == lines[-1:] and lines[-1].startswith("error: "), err
    return lines[-1]


def test_image_folder_train_forget_audit(cli, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    folder(tmp_path / "imgs", {"cat": 12, "dog": 12, "emu": 12}, size=(8, 8), mode="RGB")
    code, out, err = cli("train", "--dataset", "imagefolder", "--data-dir", "imgs", "--model", "cnn", "--epochs", "2",
                         "--no-progress", "--out", "runs/m.safetensors")
    assert code == 0, out + err
    meta = json.loads((tmp_path / "runs" / "m.json").read_text())
    assert meta["dataset"] == "imagefolder" and meta["num_classes"] == 3 and meta["input_shape"] == [3, 8, 8]
    assert meta["training"]["data"]["root"] == str((tmp_path / "imgs").resolve())
    assert meta["training"]["class_names"] == ["cat", "dog", "emu"]
    rebuilt = load_from_spec(meta["training"]["data"])
    assert rebuilt.info.class_names == ("cat", "dog", "emu")
    assert rebuilt.fingerprint() == load_dataset("imagefolder", root=tmp_path / "imgs").fingerprint()

    code, out, err = cli("forget", "--checkpoint", "runs/m.safetensors", "--classes", "1", "--method", "ft",
                         "--out", "runs/f.safetensors")
    assert code == 0, out + err
    code, out, err = cli("audit", "--checkpoint", "runs/f.safetensors")
    assert code == 0, out + err
    assert (tmp_path / "runs" / "f.audit" / "audit.json").is_file()

    # the data changed under the model: a renamed class, then one class too many
    (tmp_path / "imgs" / "dog").rename(tmp_path / "imgs" / "dingo")
    line = one_error(*cli("forget", "--checkpoint", "runs/m.safetensors", "--classes", "0", "--out", "runs/g.safetensors"))
    assert "class names do not match the model's: class 1 is 'dingo' in the data but 'dog' in the checkpoint" in line
    folder(tmp_path / "imgs", {"fox": 3})
    line = one_error(*cli("audit", "--checkpoint", "runs/f.safetensors"))
    assert "imgs has 4 classes (cat, dingo, emu, fox) but the model outputs 3" in line


def test_csv_train_forget_and_sidecar_options(cli, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    iris_like(tmp_path / "iris.csv", label="kind", n=60)
    code, out, err = cli("train", "--dataset", "csv", "--data-dir", "iris.csv", "--data-option", "label=kind",
                         "--data-option", "test_fraction=0.25", "--epochs", "3", "--no-progress",
                         "--out", "runs/t.safetensors")
    assert code == 0, out + err
    spec = json.loads((tmp_path / "runs" / "t.json").read_text())["training"]["data"]
    assert spec["path"] == str((tmp_path / "iris.csv").resolve()) and spec["root"] is None
    assert spec["options"] == {"label": "kind", "test_fraction": 0.25}
    data = load_from_spec(spec)
    assert data.info.class_names == ("setosa", "versicolor", "virginica") and len(data.y_test) == 15
    code, out, err = cli("forget", "--checkpoint", "runs/t.safetensors", "--count", "5", "--method", "ft",
                         "--out", "runs/t-f.safetensors")
    assert code == 0, out + err


def test_npz_sidecar_is_unchanged(cli, tmp_path, monkeypatch):
    """Datasets without options or class names keep the spec they had."""
    monkeypatch.chdir(tmp_path)
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "d.npz", x=rng.normal(size=(60, 4)).astype("float32"), y=np.arange(60) % 2)
    code, out, err = cli("train", "--dataset", "npz", "--data-dir", "d.npz", "--epochs", "1", "--no-progress",
                         "--out", "runs/n.safetensors")
    assert code == 0, out + err
    training = json.loads((tmp_path / "runs" / "n.json").read_text())["training"]
    assert set(training["data"]) == {"name", "root", "n_train", "n_test", "path"} and "class_names" not in training


def _bad_image_inputs(tmp: Path) -> dict[str, tuple[list[str], str]]:
    """name -> (train arguments after --data-dir's value is set up, the message expected)."""
    cases = {}
    cases["missing folder"] = (["--data-dir", str(tmp / "nope")], "image folder not found: ")
    loose = tmp / "loose"
    png(loose / "a.png")
    png(loose / "b.png")
    cases["no class folders"] = (["--data-dir", str(loose)], "no class folders; expected")
    empty = folder(tmp / "empty", {"a": 3})
    (empty / "b").mkdir()
    (empty / "b" / "readme.txt").write_text("no images")
    cases["empty class"] = (["--data-dir", str(empty)], "empty class folder (no .png, .jpg or .jpeg image)")
    broken = folder(tmp / "broken", {"a": 3, "b": 3})
    (broken / "b" / "bad.png").write_bytes(b"\x89PNG not really")
    cases["unreadable image"] = (["--data-dir", str(broken)], f"{broken / 'b' / 'bad.png'}: unreadable image (")
    truncated = folder(tmp / "truncated", {"a": 3, "b": 3}, size=(32, 32))
    whole = (truncated / "b" / "001.png").read_bytes()
    (truncated / "b" / "001.png").write_bytes(whole[: len(whole) // 2])
    cases["truncated image"] = (["--data-dir", str(truncated)], f"{truncated / 'b' / '001.png'}: unreadable image (")
    mixed = folder(tmp / "mixed", {"a": 3, "b": 3})
    png(mixed / "b" / "big.png", size=(10, 6))
    cases["mixed sizes"] = (["--data-dir", str(mixed)],
                            f"images differ in size: {mixed / 'a' / '000.png'} is 8x8, {mixed / 'b' / 'big.png'} is 10x6")
    few = folder(tmp / "few", {"a": 4, "b": 1})
    cases["a class of one image"] = (["--data-dir", str(few)], "too few images: class 'b' has 1")
    small = folder(tmp / "small", {str(c): 2 for c in range(4)})
    cases["too few images"] = (["--data-dir", str(small)], "too few images: 8 in 4 classes give a test part of 2")
    one = folder(tmp / "one", {"only": 4})
    cases["one class"] = (["--data-dir", str(one)], "one class folder (only); a classifier needs at least 2 classes")
    half = folder(tmp / "half" / "train", {"a": 2, "b": 2}).parent
    cases["train without test"] = (["--data-dir", str(half)], "has a train/ folder but no test/ folder")
    skew = tmp / "skew"
    folder(skew / "train", {"a": 2, "b": 2})
    folder(skew / "test", {"a": 1, "c": 1})
    cases["classes differ"] = (["--data-dir", str(skew)], "different class folders (only in train/: b; only in test/: c)")
    cases["a file"] = (["--data-dir", str(tmp / "loose" / "a.png")], "is not a folder")
    cases["no data dir"] = ([], "imagefolder needs a folder: --data-dir ROOT")
    ok = folder(tmp / "ok", {"a": 3, "b": 3})
    cases["bad mode"] = (["--data-dir", str(ok), "--data-option", "mode=CMYK"], "mode must be L (grayscale), RGB or auto")
    cases["bad fraction"] = (["--data-dir", str(ok), "--data-option", "test_fraction=1.5"], "test_fraction must be")
    cases["unknown option"] = (["--data-dir", str(ok), "--data-option", "label=x"],
                               "dataset imagefolder has no option 'label'; its options: mode, test_fraction")
    cases["malformed option"] = (["--data-dir", str(ok), "--data-option", "mode"], "--data-option expects key=value")
    return cases


def test_bad_image_folders_end_in_one_error_line(cli, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for name, (args, expected) in _bad_image_inputs(tmp_path).items():
        line = one_error(*cli("train", "--dataset", "imagefolder", *args, "--epochs", "1", "--no-progress",
                              "--out", "runs/x.safetensors"))
        assert expected in line, (name, line)
    assert not (tmp_path / "runs" / "x.safetensors").exists()


CSV_CASES = {
    "missing file": (None, "csv file not found: "),
    "empty file": ("", "empty file; expected a header row"),
    "no label column": ("a,b,class\n1,2,x\n", "no label column 'label' in the header (a, b, class)"),
    "non-numeric feature": ("a,b,label\n1,2,x\n3,4,y\n5,six,x\n", "line 4, column 'b': 'six' is not a finite number"),
    "missing value": ("a,b,label\n1,,x\n", "line 2, column 'b': '' is not a finite number"),
    "infinite value": ("a,label\ninf,x\n", "line 2, column 'a': 'inf' is not a finite number"),
    "one class": ("a,label\n1,x\n2,x\n3,x\n", "one class ('x') in column 'label'; a classifier needs at least 2"),
    "ragged row": ("a,b,label\n1,2,x\n3,y\n", "line 3 has 2 values, the header has 3"),
    "empty label": ("a,label\n1,x\n2, \n", "line 3: empty label in column 'label'"),
    "only a label": ("label\nx\ny\n", "no feature columns besides the label column 'label'"),
    "no rows": ("a,label\n", "no data rows under the header"),
    "duplicate column": ("a,a,label\n1,2,x\n", "the header names column 'a' more than once"),
    "too few rows": ("a,label\n1,x\n2,y\n3,x\n4,y\n", "too few rows: 4 in 2 classes give a test part of 1"),
    "not UTF-8": (b"a,label\n\xff\xfe,x\n", "not UTF-8 text"),
}


@pytest.mark.parametrize("name", CSV_CASES)
def test_bad_csv_files_end_in_one_error_line(cli, tmp_path, monkeypatch, name):
    monkeypatch.chdir(tmp_path)
    text, expected = CSV_CASES[name]
    path = tmp_path / "data.csv"
    if isinstance(text, bytes):
        path.write_bytes(text)
    elif text is not None:
        path.write_text(text)
    line = one_error(*cli("train", "--dataset", "csv", "--data-dir", str(path), "--epochs", "1", "--no-progress",
                          "--out", "runs/x.safetensors"))
    assert expected in line, line


def test_csv_directory_and_unknown_option(cli, tmp_path):
    line = one_error(*cli("train", "--dataset", "csv", "--data-dir", str(tmp_path), "--out", str(tmp_path / "x.safetensors")))
    assert "is a directory; the csv dataset needs a .csv file" in line
    iris_like(tmp_path / "i.csv")
    line = one_error(*cli("train", "--dataset", "csv", "--data-dir", str(tmp_path / "i.csv"), "--data-option", "mode=L",
                          "--out", str(tmp_path / "x.safetensors")))
    assert "dataset csv has no option 'mode'; its options: label, test_fraction" in line


def test_load_dataset_refuses_an_unknown_option(tmp_path):
    with pytest.raises(OblivioError, match="dataset digits has no option 'colour'; its options: test_fraction"):
        load_dataset("digits", colour=True)
    assert {"imagefolder", "csv"} <= set(oblivio.available_datasets())


# ---------------------------------------------------------------- benchmarks/make_image_folder.py


def _script():
    spec = importlib.util.spec_from_file_location("make_image_folder", ROOT / "benchmarks" / "make_image_folder.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_make_image_folder_writes_digits_in_the_image_folder_layout(tmp_path, capsys):
    script = _script()
    assert script.main([str(tmp_path / "d"), "--source", "digits", "--per-class", "4", "--test-per-class", "2"]) == 0
    assert "wrote 40 training and 20 test images of digits" in capsys.readouterr().out
    assert sorted(p.name for p in (tmp_path / "d" / "train").iterdir()) == [str(i) for i in range(10)]
    data = load_dataset("imagefolder", root=tmp_path / "d")
    assert data.info.class_names == tuple(str(i) for i in range(10)) and data.info.input_shape == (1, 8, 8)
    digits = load_dataset("digits")
    # a written image is the digits image it names (PNG keeps 8-bit pixels: within 1/255 after rounding)
    first = sorted((tmp_path / "d" / "train" / "3").iterdir())[0]
    pixels = np.asarray(Image.open(first)) / 255.0
    assert np.abs(pixels - digits.x_train[int(first.stem), 0].numpy()).max() <= 0.5 / 255 + 1e-6
    assert int(digits.y_train[int(first.stem)]) == 3

    assert script.main([str(tmp_path / "flat"), "--source", "digits", "--no-split", "--per-class", "3",
                        "--test-per-class", "1"]) == 0
    assert len(list((tmp_path / "flat" / "7").iterdir())) == 4
    assert load_dataset("imagefolder", root=tmp_path / "flat", test_fraction=0.25).num_classes == 10


def test_make_image_folder_bad_input_is_one_line(tmp_path, capsys):
    script = _script()
    assert script.main([str(tmp_path / "d"), "--source", "digits", "--per-class", "1", "--test-per-class", "1"]) == 0
    capsys.readouterr()
    for argv, expected in (([str(tmp_path / "d"), "--source", "digits"], "already exists and is not an empty folder"),
                           ([str(tmp_path / "e"), "--source", "mnist"], "--source must be fashion-mnist or digits"),
                           ([str(tmp_path / "e"), "--data-dir", str(tmp_path / "nothing")], "Fashion-MNIST files not found"),
                           ([str(tmp_path / "e"), "--source", "digits", "--per-class", "0"], "--per-class must be at least 1")):
        assert script.main(argv) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error: ") and expected in err[0], (argv, err)


def test_ledger_processes_a_request_on_an_image_folder_model(cli, tmp_path, monkeypatch):
    """The ledger reloads the image folder from the checkpoint's sidecar to forget a filed request."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("OBLIVIO_DB_URL_FILE", raising=False)
    monkeypatch.setenv("OBLIVIO_DB_URL", f"sqlite:///{tmp_path / 'ledger.db'}")
    folder(tmp_path / "imgs", {"cat": 10, "dog": 10})
    assert cli("train", "--dataset", "imagefolder", "--data-dir", "imgs", "--epochs", "3", "--no-progress",
               "--out", "runs/m.safetensors")[0] == 0
    code, out, err = cli("requests", "add", "--ref", "t-1", "--checkpoint", "runs/m.safetensors", "--indices", "3,4")
    assert code == 0, out + err
    code, out, err = cli("requests", "process", "--checkpoint", "runs/m.safetensors", "--method", "rl")
    assert code == 0, out + err
    assert (tmp_path / "runs" / "m.run-1.safetensors").is_file()
