"""Models from the user's code (``--model package.module:factory`` with ``--model-arg``) and weights (``--weights``):
recorded in the sidecar, rebuilt by forget (retrain included) and load_checkpoint; every bad input one line, exit 2."""
from __future__ import annotations

import textwrap

import pytest
import torch
from safetensors.torch import save_file

from oblivio import OblivioError, build_model, load_checkpoint
from oblivio.models import model_arch, parse_model_args

FACTORY = textwrap.dedent('''
    from torch import nn

    def make_net(input_shape, num_classes, width=16, act="relu"):
        d = 1
        for s in input_shape:
            d *= s
        return nn.Sequential(nn.Flatten(), nn.Linear(d, width), nn.ReLU() if act == "relu" else nn.Tanh(),
                             nn.Linear(width, num_classes))

    def digits_net(width=8, num_classes=10):  # keywords only, as torchvision.models' factories
        return nn.Sequential(nn.Flatten(), nn.Linear(64, width), nn.ReLU(), nn.Linear(width, num_classes))

    def not_a_module(input_shape, num_classes):
        return "a string"

    def broken(input_shape, num_classes):
        raise ValueError("width must be even")

    NOT_CALLABLE = 5
''')

SMALL = ("--n-train", "300", "--n-test", "100", "--no-progress")


@pytest.fixture
def factories(tmp_path, monkeypatch):
    """A module ``user_nets`` with model factories, importable for the test."""
    pkg = tmp_path / "code"
    pkg.mkdir()
    (pkg / "user_nets.py").write_text(FACTORY)
    monkeypatch.syspath_prepend(str(pkg))
    return "user_nets"


def one_error(code: int, out: str, err: str) -> str:
    assert code == 2, out + err
    assert "Traceback" not in out + err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), err
    return lines[0]


def test_factory_model_trains_and_forget_rebuilds_it(cli, factories, tmp_path):
    out = tmp_path / "orig.safetensors"
    code, o, e = cli("train", "--model", "user_nets:make_net", "--model-arg", "width=24", "--model-arg", "act=tanh",
                     "--epochs", "2", *SMALL, "--out", out)
    assert code == 0, o + e
    model, meta = load_checkpoint(out)  # rebuilt from the sidecar alone
    assert meta["arch"] == 'user_nets:make_net {"act": "tanh", "width": 24}'
    assert model[1].out_features == 24 and isinstance(model[2], torch.nn.Tanh)
    for method in ("retrain", "ft"):
        dest = tmp_path / f"{method}.safetensors"
        code, o, e = cli("forget", "--checkpoint", out, "--count", "10", "--method", method, "--out", dest,
                         "--set", "epochs=1")
        assert code == 0, o + e
        forgot, fmeta = load_checkpoint(dest)
        assert fmeta["arch"] == meta["arch"] and forgot[1].out_features == 24
        if method == "retrain":  # a fresh build of the factory (with its arguments), not a re-initialised copy
            assert fmeta["extra"]["unlearning"]["info"]["init"] == meta["arch"]


def test_keyword_only_factory_and_registered_names_take_model_args(cli, factories, tmp_path):
    out = tmp_path / "kw.safetensors"
    code, o, e = cli("train", "--model", "user_nets:digits_net", "--model-arg", "width=12", "--epochs", "1", *SMALL,
                     "--out", out)
    assert code == 0, o + e
    assert load_checkpoint(out)[0][1].out_features == 12
    code, o, e = cli("train", "--model", "cnn", "--model-arg", "width=8", "--epochs", "1", *SMALL,
                     "--out", tmp_path / "cnn.safetensors")
    assert code == 0, o + e
    model, meta = load_checkpoint(tmp_path / "cnn.safetensors")
    assert meta["arch"] == 'cnn {"width": 8}' and model.features[0].out_channels == 8


@pytest.mark.parametrize("argv, message", [
    (("--model", "no_such_pkg.nets:make"), "cannot import no_such_pkg.nets"),
    (("--model", "user_nets:missing"), "has no attribute 'missing'"),
    (("--model", "user_nets:NOT_CALLABLE"), "not a callable"),
    (("--model", "user_nets:not_a_module"), "not a torch nn.Module"),
    (("--model", "user_nets:broken"), "ValueError: width must be even"),
    (("--model", "user_nets"), "unknown model 'user_nets'"),
    (("--model", "os:getcwd"), "standard-library module"),
    (("--model", "user_nets:make_net", "--model-arg", "width"), "expects key=value"),
    (("--model", "user_nets:make_net", "--model-arg", "1x=2"), "not a Python parameter name"),
    (("--model", "user_nets:make_net", "--model-arg", "width=[1, 2]"), "not a list"),
    (("--model", "user_nets:make_net", "--model-arg", "width={a"), "not YAML"),
    (("--model", "user_nets:make_net", "--model-arg", "w=1", "--model-arg", "w=2"), "given twice"),
    (("--model", "user_nets:make_net", "--model-arg", "depth=3"), "unexpected keyword argument 'depth'"),
    (("--epochs", "0",), "--epochs 0 records a model without training it"),
])
def test_bad_models_are_one_line_errors(cli, factories, tmp_path, argv, message):
    line = one_error(*cli("train", *argv, *SMALL, "--epochs", "1", "--out", tmp_path / "m.safetensors")
                     if argv[0] != "--epochs" else cli("train", *argv, *SMALL, "--out", tmp_path / "m.safetensors"))
    assert message in line
    assert not (tmp_path / "m.safetensors").exists()


def test_model_args_read_as_yaml_scalars():
    assert parse_model_args(["a=8", "b=0.5", "c=true", "d=relu", "e=null", "f=1e-3"]) == {
        "a": 8, "b": 0.5, "c": True, "d": "relu", "e": None, "f": 0.001}  # YAML 1.2: 1e-3 is a number
    assert model_arch("mlp") == "mlp" and model_arch("m:f", {"b": 1, "a": 2}) == 'm:f {"a": 2, "b": 1}'
    with pytest.raises(OblivioError, match="unknown model"):
        build_model("nope", (1, 8, 8), 10)


@pytest.mark.parametrize("fmt", ["safetensors", "torch"])
def test_weights_round_trip_with_zero_epochs(cli, factories, tmp_path, fmt):
    given = build_model("user_nets:make_net", (1, 8, 8), 10, seed=123, width=20)
    state = given.state_dict()
    path = tmp_path / ("w.safetensors" if fmt == "safetensors" else "w.pt")
    if fmt == "safetensors":
        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    else:
        torch.save(state, path)
    out = tmp_path / "given.safetensors"
    code, o, e = cli("train", "--model", "user_nets:make_net", "--model-arg", "width=20", "--weights", path,
                     "--epochs", "0", *SMALL, "--out", out)
    assert code == 0, o + e
    model, meta = load_checkpoint(out)
    loaded = model.state_dict()
    assert loaded.keys() == state.keys() and all(torch.equal(loaded[k], state[k]) for k in state)
    assert meta["extra"]["weights"]["file"] == str(path.resolve()) and meta["extra"]["train_config"] is None
    assert meta["training"]["pool_hash"]  # oblivio's split recorded: forget works on it
    code, o, e = cli("forget", "--checkpoint", out, "--count", "5", "--method", "ft", "--set", "epochs=1",
                     "--out", tmp_path / "f.safetensors")
    assert code == 0, o + e
    # further epochs start from the given weights
    code, o, e = cli("train", "--model", "user_nets:make_net", "--model-arg", "width=20", "--weights", path,
                     "--epochs", "1", *SMALL, "--out", tmp_path / "more.safetensors")
    assert code == 0, o + e
    more = load_checkpoint(tmp_path / "more.safetensors")[0].state_dict()
    assert not torch.equal(more["1.weight"], state["1.weight"])


def test_weights_for_another_architecture_are_refused(cli, factories, tmp_path):
    path = tmp_path / "w.safetensors"
    save_file(build_model("user_nets:make_net", (1, 8, 8), 10, width=20).state_dict(), str(path))
    line = one_error(*cli("train", "--model", "user_nets:make_net", "--weights", path, "--epochs", "0", *SMALL,
                          "--out", tmp_path / "m.safetensors"))
    assert "'1.weight' has shape (20, 64)" in line and "(16, 64)" in line
    line = one_error(*cli("train", "--model", "mlp", "--weights", path, "--epochs", "0", *SMALL,
                          "--out", tmp_path / "m.safetensors"))
    assert "has no 'net.1.weight'" in line
    torch.save({"1.weight": torch.zeros(3)}, tmp_path / "partial.pt")
    line = one_error(*cli("train", "--model", "user_nets:make_net", "--weights", tmp_path / "partial.pt",
                          "--epochs", "0", *SMALL, "--out", tmp_path / "m.safetensors"))
    assert "weights for another architecture" in line
    for bad, message in ((tmp_path / "absent.pt", "not found"), (tmp_path, "not a file")):
        assert message in one_error(*cli("train", "--weights", bad, "--epochs", "0", *SMALL,
                                         "--out", tmp_path / "m.safetensors"))
    (tmp_path / "junk.safetensors").write_bytes(b"not a tensor file")
    (tmp_path / "pickle.pt").write_bytes(b"\x80\x04junk")
    torch.save([torch.zeros(1)], tmp_path / "list.pt")
    for bad, message in (("junk.safetensors", "not a readable safetensors file"),
                         ("pickle.pt", "not a readable PyTorch"), ("list.pt", "does not hold a state_dict")):
        assert message in one_error(*cli("train", "--weights", tmp_path / bad, "--epochs", "0", *SMALL,
                                         "--out", tmp_path / "m.safetensors"))
    assert not (tmp_path / "m.safetensors").exists()


def test_docs_own_model_class_and_weights_commands_run(cli, tmp_path, monkeypatch):
    """The page's 'Your own model class and weights' flow: mynets.py from its Python block, the weights file from
    the next, then its two shell blocks, in-process."""
    import re
    import shlex
    from pathlib import Path

    page = (Path(__file__).parent.parent / "docs" / "howto" / "own-model-and-data.md").read_text()
    section = page[page.index("## Your own model class and weights"):page.index("## Checkpoints")]
    python = re.findall(r"^```python\n(.*?)^```", section, flags=re.S | re.M)
    bash = re.findall(r"^```bash\n(.*?)^```", section, flags=re.S | re.M)
    (tmp_path / "mynets.py").write_text(python[0])
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.chdir(tmp_path)
    exec(python[0] + python[1], {})
    for block in bash:
        for line in block.splitlines():
            argv = shlex.split(line)
            if argv and argv[0] == "oblivio":
                code, out, err = cli(*argv[1:])
                assert code == 0, f"{line}\n{out}\n{err}"
    assert (tmp_path / "runs" / "mynet-retrain.safetensors").is_file()
    assert (tmp_path / "runs" / "given-forget.safetensors").is_file()
    assert load_checkpoint(tmp_path / "runs" / "given.safetensors")[1]["extra"]["weights"]["file"].endswith("mynet.pt")


def test_a_bench_config_names_a_factory_model(factories, tmp_path):
    """``model: package.module:factory {json args}`` in a bench YAML trains the originals and the gold retrain
    from the user's factory, as the sidecar form of ``--model`` / ``--model-arg`` does."""
    from oblivio.bench import parse_config, run_benchmark

    config = parse_config({
        "name": "factory", "dataset": {"name": "digits", "n_train": 300, "n_test": 100},
        "model": 'user_nets:make_net {"width": 12}', "train": {"epochs": 3}, "seeds": [0],
        "scenarios": {"class": {"classes": [3]}}, "methods": ["ft"]})
    result = run_benchmark(config, tmp_path / "out", progress=False)
    rows = {r["method"]: r for r in result.summary if r["scenario"] == "class"}
    assert {"original", "retrain", "ft"} <= set(rows) and rows["ft"]["failed"] == 0, rows
    assert rows["retrain"]["UA_mean"] == 100.0  # the fresh factory net never saw class 3
    cached = list((tmp_path / "out").rglob("*.json"))
    assert any('user_nets:make_net {\\"width\\": 12}' in p.read_text() or 'user_nets:make_net {"width": 12}' in p.read_text()
               for p in cached)
