"""Hugging Face data and models on local disk (issue 23): ``hf-disk`` and ``parquet`` datasets, and a local
image-classification model folder (``--model hf:FOLDER``), in Python and through the CLI; every bad input one
line, exit 2."""
from __future__ import annotations

import json
import re
import shlex
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

datasets = pytest.importorskip("datasets")
transformers = pytest.importorskip("transformers")

from datasets import ClassLabel, DatasetDict, Features, Image, Value  # noqa: E402
from datasets import Dataset as HFDataset  # noqa: E402
from PIL import Image as PILImage  # noqa: E402

from oblivio import OblivioError, build_model, load_checkpoint, load_dataset  # noqa: E402
from oblivio.data import load_from_spec  # noqa: E402
from oblivio.hf_models import FACTORY, HFImageClassifier  # noqa: E402
from oblivio.models import model_arch  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
NAMES = [f"digit-{i}" for i in range(10)]
QUIET = ("--no-progress", "--out")


def digits(n: int = 600) -> tuple[np.ndarray, np.ndarray]:
    """The first ``n`` of scikit-learn's digits as uint8 (N, 8, 8) pixels and labels."""
    from sklearn.datasets import load_digits

    d = load_digits()
    return (d.images[:n] * 255 / 16).astype(np.uint8), d.target[:n]


def image_dataset(px: np.ndarray, y: np.ndarray, names=NAMES) -> HFDataset:
    features = Features({"img": Image(), "label": ClassLabel(names=list(names))})
    return HFDataset.from_dict({"img": [PILImage.fromarray(a) for a in px], "label": y.tolist()}, features=features)


def vit(path: Path, labels: int = 10, id2label: dict | None = None, channels: int = 1, size: int = 8) -> Path:
    """A tiny untrained ViT image classifier written with save_pretrained (no hub)."""
    from transformers import ViTConfig, ViTForImageClassification

    config = ViTConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
                       image_size=size, patch_size=4, num_channels=channels, num_labels=labels,
                       **({"id2label": id2label} if id2label else {}))
    torch.manual_seed(0)
    ViTForImageClassification(config).save_pretrained(path)
    return path


@pytest.fixture(scope="module", autouse=True)
def quiet():
    """No ``datasets`` or ``transformers`` progress bars while the tests write their folders (the CLI's stderr is
    checked)."""
    from transformers.utils import logging

    was, bars = datasets.are_progress_bars_disabled(), logging.is_progress_bar_enabled()
    datasets.disable_progress_bars()
    logging.disable_progress_bar()
    yield
    if not was:
        datasets.enable_progress_bars()
    if bars:
        logging.enable_progress_bar()


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> Path:
    """digits as a save_to_disk folder (Image + ClassLabel) and as Parquet (arrays + string labels), a tiny ViT."""
    root = tmp_path_factory.mktemp("hf")
    px, y = digits()
    image_dataset(px, y).save_to_disk(root / "digits-hf")
    HFDataset.from_dict({"pixels": list(px), "digit": [f"d{v}" for v in y]}).to_parquet(root / "digits.parquet")
    vit(root / "tiny-vit")
    return root


def one_error(code: int, out: str, err: str) -> str:
    assert code == 2, (code, out, err)
    assert "Traceback" not in out + err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


# ---------------------------------------------------------------- datasets in Python


def test_hf_disk_images_class_names_seeded_split_and_given_splits(folders, tmp_path):
    data = load_dataset("hf-disk", root=folders / "digits-hf")
    px, y = digits()
    assert data.info.class_names == tuple(NAMES) and data.info.input_shape == (1, 8, 8)
    assert (len(data.y_train), len(data.y_test)) == (480, 120) and data.info.name == "digits-hf"
    assert np.bincount(data.y_test.numpy()).min() >= 11  # stratified
    assert data.fingerprint() == load_dataset("hf-disk", root=folders / "digits-hf").fingerprint()
    first = torch.from_numpy(px[0] / 255.0).float()
    assert any(torch.allclose(x[0], first) for x in torch.cat([data.x_train, data.x_test]))
    assert len(load_dataset("hf-disk", root=folders / "digits-hf", test_fraction=0.5).y_test) == 300

    DatasetDict(train=image_dataset(px[:500], y[:500]), test=image_dataset(px[500:], y[500:]),
                validation=image_dataset(px[:20], y[:20])).save_to_disk(tmp_path / "dd")
    data = load_dataset("hf-disk", root=tmp_path / "dd")
    assert data.y_train.tolist() == y[:500].tolist() and data.y_test.tolist() == y[500:].tolist()
    assert torch.allclose(data.x_test[0, 0], torch.from_numpy(px[500] / 255.0).float())
    with pytest.raises(OblivioError, match="test_fraction does not apply"):
        load_dataset("hf-disk", root=tmp_path / "dd", test_fraction=0.3)


def test_parquet_arrays_tables_and_split_files(folders, tmp_path):
    px, y = digits()
    data = load_dataset("parquet", root=folders / "digits.parquet", image="pixels", label="digit")
    assert data.info.class_names == tuple(f"d{i}" for i in range(10)) and data.info.input_shape == (1, 8, 8)
    assert float(data.x_train.max()) == 1.0  # uint8 arrays scaled by 1/255

    rng = np.random.default_rng(0)
    table = {"a": rng.normal(size=90), "b": rng.integers(0, 5, 90), "ok": rng.random(90) > 0.5,
             "label": [3, 10, 7] * 30}
    HFDataset.from_dict(table).to_parquet(tmp_path / "table.parquet")
    data = load_dataset("parquet", root=tmp_path / "table.parquet", test_fraction=0.2)
    assert data.info.input_shape == (1, 1, 3) and data.info.class_names == ("3", "7", "10")  # integers by value
    assert (len(data.y_train), len(data.y_test)) == (72, 18)

    for layout in ("hub", "folders"):
        root = tmp_path / layout
        for part, rows in (("train", slice(0, 500)), ("test", slice(500, None))):
            file = root / f"{part}-00000-of-00001.parquet" if layout == "hub" else root / part / "0000.parquet"
            file.parent.mkdir(parents=True, exist_ok=True)
            image_dataset(px[rows], y[rows]).to_parquet(file)
        data = load_dataset("parquet", root=root)
        assert data.info.class_names == tuple(NAMES) and data.y_test.tolist() == y[500:].tolist(), layout

    rgb = rng.random((20, 4, 5, 3)).astype(np.float32)  # channels last, floats used as they are
    HFDataset.from_dict({"a": list(rgb), "label": [0, 1] * 10}).to_parquet(tmp_path / "rgb.parquet")
    data = load_dataset("parquet", root=tmp_path / "rgb.parquet", image="a")
    assert data.info.input_shape == (3, 4, 5)
    assert any(torch.allclose(x, torch.from_numpy(rgb[0].transpose(2, 0, 1))) for x in data.x_train) or \
        any(torch.allclose(x, torch.from_numpy(rgb[0].transpose(2, 0, 1))) for x in data.x_test)

    # an image column written without datasets' metadata (pandas) is still read as images
    image_dataset(px, y).with_format("arrow")[:].to_pandas().to_parquet(tmp_path / "pandas.parquet")
    data = load_dataset("parquet", root=tmp_path / "pandas.parquet")
    assert data.info.input_shape == (1, 8, 8) and data.info.class_names == tuple(str(i) for i in range(10))


# ---------------------------------------------------------------- through the CLI


def test_hf_disk_and_parquet_train_and_forget(cli, folders, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, out, err = cli("train", "--dataset", "hf-disk", "--data-dir", folders / "digits-hf", "--data-option",
                         "image=img", "--epochs", "3", *QUIET, "runs/h.safetensors")
    assert code == 0, out + err
    meta = json.loads((tmp_path / "runs" / "h.json").read_text())
    assert meta["training"]["data"]["root"] == str(folders / "digits-hf") and meta["dataset"] == "hf-disk"
    assert meta["training"]["data"]["options"] == {"image": "img"} and meta["training"]["class_names"] == NAMES
    assert load_from_spec(meta["training"]["data"]).fingerprint() == load_dataset(
        "hf-disk", root=folders / "digits-hf").fingerprint()
    code, out, err = cli("forget", "--checkpoint", "runs/h.safetensors", "--classes", "3", "--method", "ft",
                         "--out", "runs/h-f.safetensors")
    assert code == 0, out + err

    code, out, err = cli("train", "--dataset", "parquet", "--data-dir", folders / "digits.parquet", "--data-option",
                         "image=pixels", "--data-option", "label=digit", "--epochs", "3", *QUIET, "runs/p.safetensors")
    assert code == 0, out + err
    code, out, err = cli("forget", "--checkpoint", "runs/p.safetensors", "--count", "10", "--method", "ft",
                         "--out", "runs/p-f.safetensors")
    assert code == 0, out + err
    assert json.loads((tmp_path / "runs" / "p-f.json").read_text())["training"]["class_names"][3] == "d3"


def _bad_inputs(tmp: Path, folders: Path) -> dict[str, tuple[str, list[str], str]]:
    """name -> (dataset, train arguments, the message expected)."""
    px, y = digits(60)
    cases = {"no data dir": ("hf-disk", [], "hf-disk needs --data-dir DIR"),
             "missing folder": ("hf-disk", ["--data-dir", tmp / "nope"], "not found"),
             "a file": ("hf-disk", ["--data-dir", folders / "digits.parquet"], "is not a folder; hf-disk needs"),
             "missing parquet": ("parquet", ["--data-dir", tmp / "nope.parquet"], "nope.parquet not found")}
    (tmp / "plain").mkdir()
    cases["not a datasets folder"] = ("hf-disk", ["--data-dir", tmp / "plain"], "is not a datasets folder")
    cases["no parquet files"] = ("parquet", ["--data-dir", tmp / "plain"], "no .parquet files in the folder")
    (tmp / "junk.parquet").write_bytes(b"not parquet at all")
    cases["not parquet"] = ("parquet", ["--data-dir", tmp / "junk.parquet"], "not a readable Parquet file")
    hf = folders / "digits-hf"
    cases["missing label column"] = ("hf-disk", ["--data-dir", hf, "--data-option", "label=y"],
                                     "no label column 'y'; its columns: img, label")
    cases["missing image column"] = ("hf-disk", ["--data-dir", hf, "--data-option", "image=pixels"],
                                     "no image column 'pixels'; its columns: img, label")
    cases["unknown option"] = ("hf-disk", ["--data-dir", hf, "--data-option", "mode=L"],
                               "dataset hf-disk has no option 'mode'; its options: image, label, test_fraction")
    cases["bad fraction"] = ("hf-disk", ["--data-dir", hf, "--data-option", "test_fraction=2"], "test_fraction must be")
    images = [PILImage.fromarray(a) for a in px]
    images[7] = images[7].resize((10, 6))
    HFDataset.from_dict({"img": images, "label": y.tolist()},
                        features=Features({"img": Image(), "label": Value("int64")})).save_to_disk(tmp / "mixed")
    cases["mixed image sizes"] = ("hf-disk", ["--data-dir", tmp / "mixed"],
                                  "images differ in size: row 0 of all is 8x8, row 7 of all is 10x6")

    def save(name: str, table: dict, kind: str = "parquet") -> Path:
        ds = HFDataset.from_dict(table)
        path = tmp / (f"{name}.parquet" if kind == "parquet" else name)
        ds.to_parquet(path) if kind == "parquet" else ds.save_to_disk(path)
        return path

    rows = {"a": list(range(20)), "label": ["x", "y"] * 10}
    cases["non-numeric feature"] = ("parquet", ["--data-dir", save("words", rows | {"name": ["w"] * 20})],
                                    "column 'name' holds string values, not numbers")
    cases["missing value"] = ("parquet", ["--data-dir", save("gap", rows | {"b": [1.0] * 19 + [None]})],
                              "row 19 of all, column 'b': missing value")
    cases["infinite value"] = ("parquet", ["--data-dir", save("inf", rows | {"b": [1.0] * 19 + [np.inf]})],
                               "row 19 of all, column 'b': inf is not a finite number")
    cases["float labels"] = ("parquet", ["--data-dir", save("floaty", {"a": [1, 2], "label": [0.5, 1.5]})],
                             "label column 'label' holds float64 values")
    cases["one class"] = ("parquet", ["--data-dir", save("one", {"a": [1, 2, 3], "label": ["x"] * 3})],
                          "one class ('x') in column 'label'")
    cases["too few rows"] = ("parquet", ["--data-dir", save("few", {"a": [1, 2, 3, 4], "label": ["x", "y"] * 2})],
                             "too few rows: 4 in 2 classes give a test part of 1")
    HFDataset.from_dict({"a": [1.0], "label": ["x"]}).select([]).to_parquet(tmp / "none.parquet")
    cases["no rows"] = ("parquet", ["--data-dir", tmp / "none.parquet"], "none.parquet: no rows")
    ragged = save("ragged", {"x": [[1, 2], [1, 2, 3]] * 5, "label": [0, 1] * 5})
    cases["ragged arrays"] = ("parquet", ["--data-dir", ragged, "--data-option", "image=x"],
                              "arrays in column 'x' differ in shape: row 0 of all is (2,), row 1 is (3,)")
    cases["string arrays"] = ("parquet", ["--data-dir", save("strings", {"x": [["a", "b"]] * 10, "label": [0, 1] * 5}),
                                          "--data-option", "image=x"], "column 'x' holds string values, not images")
    HFDataset.from_dict({"a": images, "b": images, "label": y.tolist()}, features=Features(
        {"a": Image(), "b": Image(), "label": Value("int64")})).save_to_disk(tmp / "two-images")
    cases["two image columns"] = ("hf-disk", ["--data-dir", tmp / "two-images"],
                                  "2 image columns (a, b); choose one with --data-option image=COLUMN")
    two = tmp / "two"
    two.mkdir()
    shutil.copy(tmp / "words.parquet", two / "a.parquet")
    shutil.copy(tmp / "gap.parquet", two / "b.parquet")
    cases["files differ"] = ("parquet", ["--data-dir", two], "a.parquet and b.parquet have different columns")
    DatasetDict(train=image_dataset(px, y), test=image_dataset(px[:0], y[:0])).save_to_disk(tmp / "empty-test")
    cases["empty split"] = ("hf-disk", ["--data-dir", tmp / "empty-test"], "empty-test: the test split is empty")
    (tmp / "empty-pq" / "test").mkdir(parents=True)
    image_dataset(px, y).to_parquet(tmp / "empty-pq" / "train.parquet")
    image_dataset(px[:0], y[:0]).to_parquet(tmp / "empty-pq" / "test" / "0.parquet")
    cases["empty parquet split"] = ("parquet", ["--data-dir", tmp / "empty-pq"], "empty-pq: the test split is empty")
    DatasetDict(a=image_dataset(px, y), b=image_dataset(px, y)).save_to_disk(tmp / "ab")
    cases["no train split"] = ("hf-disk", ["--data-dir", tmp / "ab"], "splits a, b but no 'train' split")
    unlabelled = image_dataset(px, y).cast_column("label", Value("int64")).map(
        lambda r, i: {"label": -1 if i == 5 else r["label"]}, with_indices=True)
    unlabelled.cast_column("label", ClassLabel(names=NAMES)).save_to_disk(tmp / "unlabelled")
    cases["unlabelled row"] = ("hf-disk", ["--data-dir", tmp / "unlabelled"],
                               "row 5 of all: label -1 is not one of the 10 classes of column 'label'")
    return cases


def test_bad_data_ends_in_one_error_line(cli, folders, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for name, (dataset, args, expected) in _bad_inputs(tmp_path, folders).items():
        line = one_error(*cli("train", "--dataset", dataset, *args, "--epochs", "1", *QUIET, "runs/x.safetensors"))
        assert expected in line, (name, line)
    assert not (tmp_path / "runs" / "x.safetensors").exists()


# ---------------------------------------------------------------- a local Hugging Face model folder


def test_hf_model_folder_train_forget_audit_ledger_without_the_folder(cli, folders, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    shutil.copytree(folders / "tiny-vit", tmp_path / "vit")
    data = ("--dataset", "hf-disk", "--data-dir", folders / "digits-hf")
    # --epochs 0: the folder's weights recorded as they are
    code, out, err = cli("train", *data, "--model", "hf:vit", "--epochs", "0", *QUIET, "runs/given.safetensors")
    assert code == 0, out + err
    model, meta = load_checkpoint(tmp_path / "runs" / "given.safetensors")
    assert isinstance(model, HFImageClassifier) and meta["arch"].startswith(FACTORY + " ")
    assert meta["extra"]["hf_model"]["folder"] == str(tmp_path / "vit")
    folder_weights = transformers.AutoModelForImageClassification.from_pretrained(tmp_path / "vit").state_dict()
    assert all(torch.equal(model.model.state_dict()[k], v) for k, v in folder_weights.items())

    code, out, err = cli("train", *data, "--model", "hf:vit", "--epochs", "6", "--optimizer", "adam", "--lr", "0.01",
                         *QUIET, "runs/vit.safetensors")
    assert code == 0, out + err
    assert json.loads((tmp_path / "runs" / "vit.json").read_text())["extra"]["scores"]["test"] > 0.5  # it learned
    shutil.rmtree(tmp_path / "vit")  # the sidecar's config rebuilds the model: the folder is no longer needed
    for method in ("ft", "retrain"):
        code, out, err = cli("forget", "--checkpoint", "runs/vit.safetensors", "--classes", "3", "--method", method,
                             "--set", "epochs=2", "--out", f"runs/{method}.safetensors")
        assert code == 0, out + err
    retrained = load_checkpoint(tmp_path / "runs" / "retrain.safetensors")[0]
    assert isinstance(retrained, HFImageClassifier)
    code, out, err = cli("audit", "--checkpoint", "runs/ft.safetensors", "--retrained", "runs/retrain.safetensors")
    assert code == 0, out + err
    assert (tmp_path / "runs" / "ft.audit" / "audit.json").is_file()
    # the ledger files a deletion request on the model and processes it
    monkeypatch.delenv("OBLIVIO_DB_URL_FILE", raising=False)
    monkeypatch.setenv("OBLIVIO_DB_URL", f"sqlite:///{tmp_path / 'ledger.db'}")
    code, out, err = cli("requests", "add", "--ref", "t-1", "--checkpoint", "runs/vit.safetensors", "--indices", "3,4")
    assert code == 0, out + err
    code, out, err = cli("requests", "process", "--checkpoint", "runs/vit.safetensors", "--method", "ft")
    assert code == 0, out + err
    assert isinstance(load_checkpoint(tmp_path / "runs" / "vit.run-1.safetensors")[0], HFImageClassifier)


def test_bad_hf_model_folders_are_refused(cli, folders, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    from transformers import GPT2Config

    vit(tmp_path / "three", labels=3)
    vit(tmp_path / "named", id2label={i: f"class-{i}" for i in range(10)})
    (tmp_path / "empty").mkdir()
    GPT2Config(n_layer=1, n_embd=8, n_head=2).save_pretrained(tmp_path / "gpt")
    (tmp_path / "gpt" / "model.safetensors").write_bytes(b"")
    shutil.copy(folders / "tiny-vit" / "config.json", tmp_path / "empty" / "config.json")
    data = ("--dataset", "hf-disk", "--data-dir", folders / "digits-hf", "--epochs", "0")
    for model, expected in (
        ("hf:three", "has 3 labels (config num_labels) but the data has 10 classes"),
        ("hf:named", "class 0 is 'digit-0' in the data but 'class-0' in the model's config id2label"),
        ("hf:nowhere", "nowhere not found"),
        ("hf:", "--model hf:PATH needs the model folder's path"),
        ("hf:empty", "has no weights (model.safetensors or pytorch_model.bin)"),
        (f"hf:{folders}", "has no config.json"),
        ("hf:gpt", "gpt2 models have no image-classification head"),
    ):
        line = one_error(*cli("train", *data, "--model", model, *QUIET, "runs/x.safetensors"))
        assert expected in line, (model, line)
    line = one_error(*cli("train", *data, "--model", f"hf:{folders / 'tiny-vit'}", "--model-arg", "width=3",
                          *QUIET, "runs/x.safetensors"))
    assert "--model-arg does not apply to hf: models" in line
    csv = tmp_path / "t.csv"
    csv.write_text("a,b,label\n" + "".join(f"{i},{i % 3},{i % 2}\n" for i in range(40)))
    vit(tmp_path / "two", labels=2)
    line = one_error(*cli("train", "--dataset", "csv", "--data-dir", csv, "--model", f"hf:{tmp_path / 'two'}",
                          "--epochs", "0", *QUIET, "runs/x.safetensors"))
    assert "an image-classification model needs images; the data is a table of shape (1, 1, 2)" in line


def test_wrapper_repeats_gray_resizes_and_normalises():
    """A 3-channel 16x16 model with a processor's mean/std takes 1-channel 8x8 images as its processor would."""
    from transformers import ViTConfig

    config = ViTConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
                       image_size=16, patch_size=4, num_channels=3, num_labels=4).to_diff_dict()
    config = {k: v for k, v in config.items() if k not in ("transformers_version", "dtype")} | {"model_type": "vit"}
    arch = model_arch(FACTORY, {"config": config, "mean": [0.5, 0.4, 0.3], "std": [0.2, 0.2, 0.2]})
    net = build_model(arch, (1, 8, 8), 4, seed=0).eval()
    assert net(torch.rand(2, 1, 8, 8)).shape == (2, 4)
    x = torch.rand(2, 1, 8, 8)
    manual = torch.nn.functional.interpolate(x.expand(-1, 3, -1, -1), size=(16, 16), mode="bilinear")
    manual = (manual - torch.tensor([0.5, 0.4, 0.3]).view(1, 3, 1, 1)) / 0.2
    with torch.no_grad():
        assert torch.allclose(net(x), net.model(pixel_values=manual).logits, atol=1e-6)
    again = build_model(arch, (1, 8, 8), 4, seed=0)
    assert all(torch.equal(a, b) for a, b in zip(net.state_dict().values(), again.state_dict().values()))  # seeded
    assert set(net.state_dict()) == {f"model.{k}" for k in net.model.state_dict()}  # mean/std not in checkpoints
    with pytest.raises(OblivioError, match="takes 3-channel images but the data has 2 channels"):
        build_model(arch, (2, 8, 8), 4)


# ---------------------------------------------------------------- the docs


def test_docs_hugging_face_section_runs(cli, tmp_path, monkeypatch):
    """The 'Hugging Face datasets and models' section of 'Your own model and data': its Python block writes the
    folders, its shell block's commands run in-process."""
    page = (ROOT / "docs" / "howto" / "own-model-and-data.md").read_text()
    start = page.index("## Hugging Face datasets and models")
    section = page[start:page.index("\n## ", start + 1)]
    python = re.findall(r"^```python\n(.*?)^```", section, flags=re.S | re.M)
    bash = re.findall(r"^```bash\n(.*?)^```", section, flags=re.S | re.M)
    assert python and bash
    monkeypatch.chdir(tmp_path)
    for block in python:
        exec(block, {})
    ran = 0
    for block in bash:
        for line in block.splitlines():
            argv = shlex.split(line, comments=True)
            if argv and argv[0] == "oblivio":
                code, out, err = cli(*argv[1:])
                assert code == 0, f"{line}\n{out}\n{err}"
                ran += 1
    assert ran >= 4
