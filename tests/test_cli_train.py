"""CLI: ``oblivio train`` and ``oblivio demo``."""
import subprocess
import sys

from typer.testing import CliRunner

from oblivio import load_checkpoint
from oblivio.cli import app

runner = CliRunner()


def test_train_writes_checkpoint_with_training_record(tmp_path):
    out = tmp_path / "run" / "model.safetensors"
    res = runner.invoke(app, ["train", "--epochs", "3", "--no-progress", "--out", str(out), "--backdoor"])
    assert res.exit_code == 0, res.output
    model, meta = load_checkpoint(out)
    training = meta["training"]
    assert training["data"]["name"] == "digits" and training["backdoor"]["target"] == 0
    assert meta["extra"]["scores"]["asr"] > 0.5  # the poisoned model obeys its trigger
    assert "wrote" in res.output


def test_train_takes_the_trigger_value_and_corner(tmp_path):
    out = tmp_path / "model.safetensors"
    res = runner.invoke(app, ["train", "--epochs", "3", "--no-progress", "--out", str(out), "--backdoor",
                              "--trigger-value", "0.5", "--trigger-position", "top-left", "--patch-size", "3"])
    assert res.exit_code == 0, res.output
    poison = load_checkpoint(out)[1]["training"]["backdoor"]
    assert (poison["value"], poison["position"], poison["patch_size"]) == (0.5, "top-left", 3)
    res = runner.invoke(app, ["train", "--out", str(tmp_path / "x.safetensors"), "--backdoor", "--trigger-position", "middle"])
    assert "unknown position 'middle'" in str(res.exception)  # main() prints it as one line, exit 2


def test_demo_trains_and_reports_accuracies():
    res = runner.invoke(app, ["demo", "--method", "none"])
    assert res.exit_code == 0, res.output
    for word in ("retain", "forget", "test", "original"):
        assert word in res.output


def test_bad_input_is_one_clear_line_with_exit_code_2(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-c", "from oblivio.cli import main; main()", "train", "--model", "vgg",
         "--out", str(tmp_path / "m.safetensors")],
        capture_output=True, text=True,
    )
    assert proc.returncode == 2
    assert "error: unknown model 'vgg'" in proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr
    assert not (tmp_path / "m.safetensors").exists()


def test_methods_lists_every_registered_method_with_defaults():
    import oblivio

    res = runner.invoke(app, ["methods"], env={"COLUMNS": "400"})
    assert res.exit_code == 0, res.output
    for name in oblivio.available_methods():
        assert name in res.output
    assert "match_weight=" in res.output  # dm's defaults are shown
