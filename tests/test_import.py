"""``oblivio import``: a model trained elsewhere, with the user's statement of what it saw, becomes a checkpoint
that forget, audit and the ledger use unchanged; every bad input is one line, exit 2, and writes nothing."""
from __future__ import annotations

import importlib.util
import json
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file
from torch.utils.data import TensorDataset

import oblivio
from oblivio import OblivioError, RandomSubset, load_checkpoint
from oblivio.checkpoint import file_sha256
from oblivio.imported import from_runs, image_files, read_entries, stated_cut, to_runs
from oblivio.pipeline import split_for_request

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "docs" / "howto" / "own-model-and-data.md"
THIRD = np.arange(3, 1437, 7)  # digits' training part has 1437 samples; every seventh is third-party


def one_error(code: int, out: str, err: str) -> str:
    assert code == 2, out + err
    assert "Traceback" not in out + err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), err
    return lines[0]


def last_error(code: int, out: str, err: str) -> str:
    """The error line of a command that prints its progress on stderr first (forget)."""
    assert code == 2 and "Traceback" not in out + err, out + err
    line = [line for line in err.splitlines() if line.strip()][-1]
    assert line.startswith("error:"), err
    return line


@pytest.fixture(scope="module")
def given(tmp_path_factory):
    """An MLP trained in Python (not by 'oblivio train') on digits' training samples outside ``THIRD``: its
    state_dict file and the third-party list as .npy."""
    folder = tmp_path_factory.mktemp("given")
    data = oblivio.load_dataset("digits")
    seen = np.setdiff1d(np.arange(len(data.y_train)), THIRD)
    model, _ = oblivio.train("mlp", TensorDataset(data.x_train[seen], data.y_train[seen]), 10, seed=3, epochs=8,
                             progress=False)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(folder / "net.safetensors"))
    np.save(folder / "third.npy", THIRD)
    return folder


@pytest.fixture(scope="module")
def imported(given, tmp_path_factory):
    """The given model imported by 'oblivio import' (run in-process once for the module)."""
    from oblivio.cli import main

    out = tmp_path_factory.mktemp("imported") / "model.safetensors"
    argv = ["oblivio", "import", "--model", "mlp", "--weights", str(given / "net.safetensors"), "--third-party",
            str(given / "third.npy"), "--out", str(out)]
    old, threads, sys.argv = sys.argv, torch.get_num_threads(), argv
    try:
        main()
    except SystemExit as e:
        assert not e.code
    finally:
        sys.argv = old
        torch.set_num_threads(threads)
    return out


def test_runs_round_trip_and_refuse_malformed_records():
    idx = np.array([0, 1, 2, 7, 9, 10])
    assert to_runs(idx) == [[0, 3], [7, 8], [9, 11]] and to_runs(np.zeros(0, np.int64)) == []
    assert from_runs(to_runs(idx), 11, "pool").tolist() == idx.tolist()
    for bad in ([[3, 2]], [[0, 3], [2, 5]], [[0, 12]], "0-3", [[0, True]]):
        with pytest.raises(OblivioError, match="increasing runs"):
            from_runs(bad, 11, "pool")


def test_stated_cut_defaults_and_refusals():
    pool, third = stated_cut(6, None, np.array([1, 4]))
    assert pool.tolist() == [0, 2, 3, 5] and third.tolist() == [1, 4]
    pool, third = stated_cut(6, np.array([0, 1]), None)
    assert third.tolist() == [2, 3, 4, 5]
    pool, third = stated_cut(6, np.array([0, 1]), np.array([5]))  # 2, 3, 4 unused
    assert pool.tolist() == [0, 1] and third.tolist() == [5]
    with pytest.raises(OblivioError, match="never saw"):
        stated_cut(6, None, None)


def test_import_records_the_given_weights_and_the_stated_cut(given, imported):
    model, meta = load_checkpoint(imported)
    state = load_checkpoint(imported)[0].state_dict()
    from safetensors.torch import load_file

    expected = load_file(str(given / "net.safetensors"))
    assert all(torch.equal(state[k], expected[k]) for k in expected)  # recorded as given
    training = meta["training"]
    assert from_runs(training["cut"]["third_party"], 1437, "third_party").tolist() == THIRD.tolist()
    assert len(from_runs(training["cut"]["pool"], 1437, "pool")) == 1437 - len(THIRD)
    record = training["imported"]
    assert record["weights"]["sha256"] == file_sha256(given / "net.safetensors")
    assert record["third_party"]["sha256"] == file_sha256(given / "third.npy") and "trained_on" not in record
    assert record["data_fingerprint"] == oblivio.load_dataset("digits").fingerprint()
    scores = meta["extra"]["scores"]
    assert scores["trained_on"] > 0.9 and scores["test"] > 0.8  # the given model, evaluated
    _, split = split_for_request(meta, RandomSubset(count=10))  # the split every later step rebuilds
    assert split.third_party_idx.tolist() == THIRD.tolist()
    assert not np.isin(split.forget_idx, THIRD).any()


def test_forget_and_audit_work_on_an_imported_checkpoint(cli, imported, tmp_path):
    dest = tmp_path / "forget.safetensors"
    code, out, err = cli("forget", "--checkpoint", imported, "--count", "20", "--method", "ft", "--set", "epochs=1",
                         "--out", dest)
    assert code == 0, out + err
    meta = load_checkpoint(dest)[1]
    assert meta["training"] == load_checkpoint(imported)[1]["training"]  # the cut travels with the lineage
    code, out, err = cli("audit", "--checkpoint", dest, "--out", tmp_path / "audit")
    assert code == 0, out + err
    report = json.loads((tmp_path / "audit" / "audit.json").read_text())
    assert report["split"]["sizes"]["third_party"] == len(THIRD)
    line = last_error(*cli("forget", "--checkpoint", imported, "--indices", str(THIRD[0]), "--method", "ft",
                          "--out", tmp_path / "no.safetensors"))
    assert "held-out third-party pool" in line


def test_ledger_files_and_processes_requests_on_an_imported_checkpoint(cli, imported, tmp_path, monkeypatch):
    monkeypatch.delenv("OBLIVIO_DB_URL", raising=False)
    monkeypatch.delenv("OBLIVIO_DB_URL_FILE", raising=False)
    db = str(tmp_path / "ledger.db")
    assert cli("requests", "register", "--checkpoint", imported, "--db", db)[0] == 0
    code, out, err = cli("requests", "add", "--ref", "t-1", "--checkpoint", imported, "--indices", "0,1,2",
                         "--db", db)
    assert code == 0 and "3 sample(s)" in out, out + err
    line = one_error(*cli("requests", "add", "--ref", "t-2", "--checkpoint", imported, "--indices", str(THIRD[1]),
                          "--db", db))
    assert "third-party" in line
    code, out, err = cli("requests", "process", "--checkpoint", imported, "--method", "ft", "--set", "epochs=1",
                         "--out-dir", tmp_path / "out", "--db", db)
    assert code == 0, out + err
    run = next((tmp_path / "out").glob("*.run-1.safetensors"))
    meta = load_checkpoint(run)[1]
    assert meta["extra"]["ledger"]["forgotten"] == [0, 1, 2] and meta["training"]["cut"]


def test_http_api_files_requests_on_an_imported_checkpoint(imported, tmp_path):
    """The API takes requests for an imported model by its weights' SHA-256 and the worker closes them."""
    pytest.importorskip("fastapi")
    pytest.importorskip("httpx")
    from fastapi.testclient import TestClient

    from oblivio.api import create_app
    from oblivio.ledger import db as ledger_db, workflow

    token = "Jx3kq9T2vLw8RzN5bY7mH4cP1sD6fG0aK2eU9iO3pQ"
    db = f"sqlite:///{tmp_path / 'ledger.db'}"
    version = workflow.register_model(imported, db=db)
    try:
        with TestClient(create_app(db=db, token=token), headers={"Authorization": f"Bearer {token}"}) as client:
            body = {"external_ref": "API-1", "model_sha256": version["weights_sha256"], "indices": [1, 2]}
            filed = client.post("/requests", json=body)
            assert filed.status_code == 201 and len(filed.json()["sample_hashes"]) == 2, filed.text
            refused = client.post("/requests", json=body | {"external_ref": "API-2", "indices": [int(THIRD[2])]})
            assert refused.status_code == 422 and "third-party" in refused.json()["detail"], refused.text
            run = workflow.work_once(db, method="ft", options={"epochs": 1}, out_dir=tmp_path)
            assert run["status"] == "closed" and run["requests"] == ["API-1"], run
            assert client.get("/requests/by-ref/API-1").json()["status"] == "closed"
    finally:
        ledger_db.dispose_all()


def test_trained_on_list_leaves_the_rest_unused(cli, given, tmp_path):
    (tmp_path / "seen.txt").write_text("# trained on\n" + "\n".join(map(str, range(0, 800))) + "\n")
    (tmp_path / "unseen.json").write_text(json.dumps(list(range(800, 1000))))
    out = tmp_path / "m.safetensors"
    code, o, e = cli("import", "--model", "mlp", "--weights", given / "net.safetensors", "--trained-on",
                     tmp_path / "seen.txt", "--third-party", tmp_path / "unseen.json", "--out", out)
    assert code == 0 and "unused 437" in o, o + e
    line = last_error(*cli("forget", "--checkpoint", out, "--indices", "1200", "--method", "ft",
                          "--out", tmp_path / "f.safetensors"))
    assert "not in the training pool" in line
    db = str(tmp_path / "ledger.db")
    line = one_error(*cli("requests", "add", "--ref", "t", "--checkpoint", out, "--indices", "1200", "--db", db))
    assert "not in the training pool" in line


def _digits_folder(path: Path, split: bool = True) -> Path:
    spec = importlib.util.spec_from_file_location("make_image_folder", ROOT / "benchmarks" / "make_image_folder.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    argv = [str(path), "--source", "digits", "--per-class", "12", "--test-per-class", "4"]
    assert script.main(argv + ([] if split else ["--no-split"])) == 0
    return path


@pytest.mark.parametrize("split", [True, False], ids=["train-test-folders", "one-folder"])
def test_image_paths_name_the_samples_of_an_image_folder(cli, given, tmp_path, split):
    root = _digits_folder(tmp_path / "png", split)
    data = oblivio.load_dataset("imagefolder", root=root)
    train_files, test_files = image_files(root, None, data.y_train.numpy())
    chosen = sorted(train_files, key=str)[5:40:3]  # any order: a path names its image
    (tmp_path / "unseen.txt").write_text("".join(f"{f.relative_to(root)}\n" for f in chosen))
    out = tmp_path / "m.safetensors"
    weights = given / "net.safetensors"
    code, o, e = cli("import", "--model", "mlp", "--weights", weights, "--dataset", "imagefolder", "--data-dir", root,
                     "--third-party", tmp_path / "unseen.txt", "--out", out)
    assert code == 0, o + e
    third = from_runs(load_checkpoint(out)[1]["training"]["cut"]["third_party"], len(data.y_train), "third_party")
    pixels = torch.stack([torch.from_numpy(np.asarray(Image.open(f), dtype=np.float32) / 255)[None] for f in chosen])
    order = np.argsort([train_files.index(f) for f in chosen])
    assert torch.equal(data.x_train[torch.as_tensor(third)], pixels[order])  # each path mapped to its own image
    (tmp_path / "bad.txt").write_text(f"{chosen[0].relative_to(root)}\n3/no-such.png\n")
    line = one_error(*cli("import", "--model", "mlp", "--weights", weights, "--dataset", "imagefolder", "--data-dir",
                          root, "--third-party", tmp_path / "bad.txt", "--out", tmp_path / "n.safetensors"))
    assert "3/no-such.png is no training image" in line
    (tmp_path / "test.txt").write_text(f"{test_files[0]}\n")  # absolute paths work too
    line = one_error(*cli("import", "--model", "mlp", "--weights", weights, "--dataset", "imagefolder", "--data-dir",
                          root, "--third-party", tmp_path / "test.txt", "--out", tmp_path / "n.safetensors"))
    assert "is in the test part" in line
    assert not (tmp_path / "n.safetensors").exists()


def test_changed_data_is_refused_on_rebuild(cli, given, tmp_path):
    data = oblivio.load_dataset("digits")
    x_tr, x_te = data.x_train[:, 0].reshape(len(data.x_train), -1).numpy(), data.x_test[:, 0].reshape(len(data.x_test), -1).numpy()
    np.savez(tmp_path / "d.npz", x_train=x_tr, y_train=data.y_train.numpy(), x_test=x_te, y_test=data.y_test.numpy())
    out = tmp_path / "m.safetensors"
    code, o, e = cli("import", "--model", "mlp", "--weights", given / "net.safetensors", "--dataset", "npz",
                     "--data-dir", tmp_path / "d.npz", "--third-party", given / "third.npy", "--out", out)
    assert code == 0, o + e
    x_tr[0] = 1 - x_tr[0]  # same size, same labels: the cut's hashes would still match
    np.savez(tmp_path / "d.npz", x_train=x_tr, y_train=data.y_train.numpy(), x_test=x_te, y_test=data.y_test.numpy())
    line = last_error(*cli("forget", "--checkpoint", out, "--count", "5", "--method", "ft",
                          "--out", tmp_path / "f.safetensors"))
    assert "differs from the data the model was imported with" in line


def _bad_lists(folder: Path) -> dict[str, Path]:
    files = {"range.txt": "0\n1437\n", "twice.txt": "4\n4\n", "words.txt": "1\nsome/image.png\n",
             "all.txt": "\n".join(map(str, range(1437))), "dict.json": '{"a": 1}', "junk.json": "[1, 2",
             "binary.txt": b"\xff\xfe\x00junk", "floats.npy": None, "broken.npy": b"not an npy file"}
    out = {}
    for name, content in files.items():
        path = folder / name
        if name == "floats.npy":
            np.save(path, np.array([0.5, 1.5]))
        elif isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)
        out[name] = path
    return out


@pytest.mark.parametrize("argv, message", [
    (("--weights", "{tmp}/absent.pt", "--third-party", "{given}/third.npy"), "--weights: {tmp}/absent.pt not found"),
    (("--weights", "{tmp}/other.safetensors", "--third-party", "{given}/third.npy"), "weights for another architecture"),
    (("--third-party", "{tmp}/range.txt"), "index 1437 is out of range; the training part has 1437 samples"),
    (("--third-party", "{tmp}/twice.txt"), "sample 4 is listed twice"),
    (("--third-party", "{tmp}/words.txt"), "'some/image.png' is not an index"),
    (("--third-party", "{given}/third.npy", "--trained-on", "{tmp}/twice.txt"), "--trained-on: sample 4 is listed twice"),
    (("--trained-on", "{tmp}/range.txt"), "out of range"),
    (("--trained-on", "{tmp}/all.txt"), "no third-party samples"),
    (("--third-party", "{tmp}/all.txt"), "no training samples"),
    (("--trained-on", "{given}/third.npy", "--third-party", "{given}/third.npy"), "both list samples [3, 10, 17"),
    ((), "say which samples the model never saw"),
    (("--third-party", "{tmp}/missing.txt"), "--third-party: {tmp}/missing.txt not found"),
    (("--third-party", "{tmp}"), "is not a file"),
    (("--third-party", "{tmp}/dict.json"), "must hold a JSON list"),
    (("--third-party", "{tmp}/junk.json"), "cannot read"),
    (("--third-party", "{tmp}/binary.txt"), "cannot read"),
    (("--third-party", "{tmp}/floats.npy"), "one-dimensional integer array"),
    (("--third-party", "{tmp}/broken.npy"), "cannot read"),
    (("--model", "cnn", "--third-party", "{given}/third.npy"), "weights for another architecture"),
    (("--model", "nope", "--third-party", "{given}/third.npy"), "unknown model 'nope'"),
    (("--third-party", "{given}/third.npy", "--data-dir", "{tmp}"), "digits is bundled"),
])
def test_bad_input_is_one_line_and_writes_nothing(cli, given, tmp_path, argv, message):
    _bad_lists(tmp_path)
    save_file({"w": torch.zeros(2)}, str(tmp_path / "other.safetensors"))
    fill = {"{tmp}": str(tmp_path), "{given}": str(given)}
    args = [re.sub("|".join(map(re.escape, fill)), lambda m: fill[m.group()], a) for a in argv]
    if "--model" not in args:
        args = ["--model", "mlp", *args]
    if "--weights" not in args:
        args += ["--weights", str(given / "net.safetensors")]
    out = tmp_path / "out" / "m.safetensors"
    line = one_error(*cli("import", *args, "--out", out))
    assert re.sub("|".join(map(re.escape, fill)), lambda m: fill[m.group()], message) in line
    assert not out.exists() and not out.with_suffix(".json").exists()


def test_read_entries_formats(tmp_path):
    (tmp_path / "a.txt").write_text("\ufeff 3\n\n# a comment\n+4  # trailing comment\ntrain/x/1.png\n")
    assert read_entries(tmp_path / "a.txt", "--third-party") == [3, 4, "train/x/1.png"]
    np.save(tmp_path / "b.npy", np.array([2, 1], dtype=np.int32))
    assert read_entries(tmp_path / "b.npy", "--third-party") == [2, 1]
    (tmp_path / "c.json").write_text('[5, "train/y/2.png"]')
    assert read_entries(tmp_path / "c.json", "--third-party") == [5, "train/y/2.png"]


# ---------------------------------------------------------------- the documented flow, run as written


def section_commands() -> list[str]:
    """The shell commands of the page's "Bring a model oblivio did not make" section, in order."""
    text = PAGE.read_text()
    start = text.index("## Bring a model oblivio did not make")
    end = text.find("\n## ", start + 1)
    section = text[start:end if end > 0 else None]
    commands = []
    for block in re.findall(r"^```bash\n(.*?)^```", section, flags=re.S | re.M):
        current = ""
        for line in block.splitlines():
            if line.lstrip().startswith("#") and not current:
                continue
            current += line.rstrip()[:-1] + " " if line.rstrip().endswith("\\") else line
            if not line.rstrip().endswith("\\"):
                if current.strip():
                    commands.append(current.strip())
                current = ""
    return commands


def section_script() -> tuple[str, str]:
    """The user's training script of the section: its file name (its first comment line) and its text."""
    text = PAGE.read_text()
    section = text[text.index("## Bring a model oblivio did not make"):]
    code = re.findall(r"^```python\n(.*?)^```", section, flags=re.S | re.M)[0]
    return code.splitlines()[0].lstrip("# ").split(":")[0].strip(), code


@pytest.mark.slow
def test_docs_bring_your_own_model_flow_runs_as_written(cli, tmp_path, monkeypatch):
    """The section's commands in a fresh folder: its ``python`` commands as processes (the data script copied
    from benchmarks/, the user's training script from the page), its ``oblivio`` commands in-process."""
    monkeypatch.delenv("OBLIVIO_DB_URL", raising=False)
    monkeypatch.delenv("OBLIVIO_DB_URL_FILE", raising=False)
    (tmp_path / "benchmarks").mkdir()
    shutil.copy(ROOT / "benchmarks" / "make_image_folder.py", tmp_path / "benchmarks")
    name, code = section_script()
    (tmp_path / name).write_text(code)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    commands = section_commands()
    assert any(c.startswith("oblivio import") for c in commands) and any(c.startswith("oblivio requests process")
                                                                          for c in commands)
    for command in commands:
        argv = shlex.split(command, comments=True)
        if argv[0] == "export":  # PYTHONPATH=$PWD: the folder is on sys.path already
            assert command == "export PYTHONPATH=$PWD", command
            continue
        if argv[0] == "python":
            env = {"PYTHONPATH": f"{ROOT / 'src'}:{tmp_path}", "PATH": str(Path(sys.executable).parent)}
            proc = subprocess.run([sys.executable, *argv[1:]], cwd=tmp_path, capture_output=True, text=True,
                                  timeout=300, env=env)
            assert proc.returncode == 0, f"{command}\n{proc.stdout}\n{proc.stderr}"
            continue
        assert argv[0] == "oblivio", command
        code, out, err = cli(*argv[1:])
        assert code == 0, f"{command}\n{out}\n{err}"
        assert "Traceback" not in out + err
    assert (tmp_path / "runs" / "imported-dm.audit" / "report.html").is_file()
    assert list((tmp_path / "runs").glob("imported.run-1.safetensors"))
    assert (tmp_path / "certificate.json").is_file()
    cut = json.loads((tmp_path / "runs" / "imported.json").read_text())["training"]["cut"]
    third = from_runs(cut["third_party"], 400, "third_party")
    assert third[:3].tolist() == [0, 10, 20] and not np.isin([5, 17, 41], third).any()  # as the page says
