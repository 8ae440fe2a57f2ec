"""CLI: ``oblivio forget`` writes a new checkpoint (the original is never touched) that an audit can rebuild."""
import json
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from oblivio import OblivioError, accuracy, load_checkpoint
from oblivio.checkpoint import model_hash
from oblivio.cli import app
from oblivio.pipeline import split_for_checkpoint

runner = CliRunner()


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """(clean checkpoint, backdoored checkpoint) trained for a few epochs on digits."""
    root = tmp_path_factory.mktemp("runs")
    paths = []
    for name, extra in (("model", []), ("poisoned", ["--backdoor"])):
        path = root / f"{name}.safetensors"
        res = runner.invoke(app, ["train", "--epochs", "5", "--no-progress", "--out", str(path), *extra])
        assert res.exit_code == 0, res.output
        paths.append(path)
    return paths


def test_forget_class_writes_a_new_checkpoint_and_keeps_the_original(trained, tmp_path):
    original = trained[0]
    before = original.read_bytes(), original.with_suffix(".json").read_bytes()
    out = tmp_path / "out" / "forget.safetensors"
    res = runner.invoke(app, ["forget", "--checkpoint", str(original), "--scenario", "class", "--classes", "3",
                              "--method", "dm", "--out", str(out), "--set", "max_steps=300"])
    assert res.exit_code == 0, res.output
    assert (original.read_bytes(), original.with_suffix(".json").read_bytes()) == before
    assert (tmp_path / "out" / "forget.split.json").is_file()
    model, meta = load_checkpoint(out)
    orig_model, orig_meta = load_checkpoint(original)
    record = meta["extra"]["unlearning"]
    assert record["method"] == "dm" and record["config"]["max_steps"] == 300
    assert record["original"] == {"path": str(original), "model_hash": model_hash(orig_model)}
    assert {"steps", "distance", "initial_distance", "stopped_by"} <= set(record["info"])
    assert meta["training"] == orig_meta["training"] and meta["split"]["scenario"]["classes"] == [3]
    _, split = split_for_checkpoint(meta)  # the contract the audit relies on
    assert accuracy(model, split.forget) < 0.05 < accuracy(orig_model, split.forget)
    for word in ("original", "dm", "retain", "forget", "test", "steps", "distance"):
        assert word in res.output


def test_forget_backdoor_reports_attack_success_rate(trained, tmp_path):
    out = tmp_path / "clean.safetensors"
    res = runner.invoke(app, ["forget", "--checkpoint", str(trained[1]), "--scenario", "backdoor", "--method", "rl",
                              "--out", str(out), "--seed", "1"])
    assert res.exit_code == 0, res.output
    assert "asr" in res.output
    meta = json.loads(out.with_suffix(".json").read_text())
    assert meta["split"]["scenario"]["kind"] == "backdoor" and meta["seed"] == 1


def test_forget_random_indices_are_recorded(trained, tmp_path):
    out = tmp_path / "r.safetensors"
    res = runner.invoke(app, ["forget", "--checkpoint", str(trained[0]), "--scenario", "random", "--count", "20",
                              "--method", "ga", "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert load_checkpoint(out)[1]["split"]["scenario"]["count"] == 20


def test_refuses_to_overwrite_the_original(trained):
    before = trained[0].read_bytes()
    res = runner.invoke(app, ["forget", "--checkpoint", str(trained[0]), "--classes", "3", "--out", str(trained[0])])
    assert isinstance(res.exception, OblivioError) and "never overwrites the original" in str(res.exception)
    assert trained[0].read_bytes() == before


@pytest.mark.parametrize(
    "args, message",
    [
        (["--classes", "12"], "unknown class 12"),
        (["--scenario", "backdoor"], "needs a model trained with --backdoor"),
        (["--classes", "3", "--set", "warp=2"], "has no option warp"),
        (["--classes", "three"], "--classes must be comma-separated integers"),
    ],
)
def test_bad_input_exits_with_code_2_and_one_clear_line(trained, tmp_path, args, message):
    out = tmp_path / "bad.safetensors"
    proc = subprocess.run(
        [sys.executable, "-c", "from oblivio.cli import main; main()", "forget", "--checkpoint", str(trained[0]),
         "--out", str(out), *args],
        capture_output=True, text=True,
    )
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "error: " in proc.stderr and message in proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr
    assert not out.exists()
