"""Hostile-user cases of issue 10 through the real entry point (``main``: one ``error:`` line, exit 2)."""
from __future__ import annotations

import errno
import os
import stat
import sys

import pytest
import yaml





@pytest.fixture(scope="module")
def model_ckpt(tmp_path_factory):
    from typer.testing import CliRunner

    from oblivio.cli import app

    path = tmp_path_factory.mktemp("runs") / "model.safetensors"
    res = CliRunner().invoke(app, ["train", "--epochs", "5", "--no-progress", "--out", str(path)])
    assert res.exit_code == 0, res.output
    return path


def one_error_line(code: int, out: str, err: str, match: str) -> None:
    text = out + err
    assert code == 2, text
    assert "Traceback" not in text
    lines = [line for line in text.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and match in " ".join(text.split()), text


# -- case 5: tracebacks -> error + exit 2 ------------------------------------------------------------

@pytest.mark.parametrize("options,match", [
    (["--method", "ft", "--set", "lr=abc"], "option lr must be a number, got 'abc'"),
    (["--method", "ft", "--set", "batch_size=0"], "option batch_size must be >= 1, got 0"),
    (["--method", "ft", "--set", "epochs=2.5"], "option epochs must be an integer, got 2.5"),
    (["--method", "ft", "--set", "lr=-1"], "option lr must be > 0, got -1"),
    (["--method", "bad-teacher", "--set", "lr=abc"], "option lr must be a number"),
])
def test_bad_set_values_are_one_line_errors_before_any_work(cli, model_ckpt, tmp_path, options, match):
    out = tmp_path / "f.safetensors"
    one_error_line(*cli("forget", "--checkpoint", model_ckpt, "--out", out, "--classes", "3", *options), match)
    assert not out.exists()


def test_null_sidecar_and_directory_checkpoint(cli, model_ckpt, tmp_path):
    bad = tmp_path / "m.safetensors"
    bad.write_bytes(model_ckpt.read_bytes())
    bad.with_suffix(".json").write_text("null")
    one_error_line(*cli("forget", "--checkpoint", bad, "--out", tmp_path / "o.safetensors", "--classes", "3"),
                   "must hold a JSON object, found NoneType")
    folder = tmp_path / "dir.safetensors"
    folder.mkdir()
    one_error_line(*cli("forget", "--checkpoint", folder, "--out", tmp_path / "o.safetensors", "--classes", "3"),
                   "is a directory")
    one_error_line(*cli("audit", "--checkpoint", folder, "--out", tmp_path / "a"), "is a directory")


def test_unwritable_or_full_output_is_found_before_the_work(cli, model_ckpt, tmp_path, monkeypatch):
    import oblivio.cli.forget as forget_cli
    import oblivio.io as oio

    def never(*a, **k):
        raise AssertionError("unlearning ran although the output could not be written")

    monkeypatch.setattr(forget_cli, "unlearn", never)
    real = oio.tempfile.mkstemp

    def read_only(*a, **k):
        if str(k.get("dir", "")).startswith(str(tmp_path / "ro")):
            raise OSError(errno.EROFS, "Read-only file system")
        return real(*a, **k)

    (tmp_path / "ro").mkdir()
    monkeypatch.setattr(oio.tempfile, "mkstemp", read_only)
    one_error_line(*cli("forget", "--checkpoint", model_ckpt, "--out", tmp_path / "ro" / "f.safetensors", "--classes", "3"),
                   "cannot write in")
    monkeypatch.setattr(oio.shutil, "disk_usage", lambda p: type("U", (), {"free": 1000})())
    one_error_line(*cli("forget", "--checkpoint", model_ckpt, "--out", tmp_path / "f.safetensors", "--classes", "3"),
                   "MB free in")
    one_error_line(*cli("audit", "--checkpoint", model_ckpt, "--out", tmp_path / "a"), "MB free in")
    (tmp_path / "out.safetensors").mkdir()
    monkeypatch.undo()
    monkeypatch.setattr(forget_cli, "unlearn", never)
    monkeypatch.setattr(sys, "argv", [])
    one_error_line(*cli("forget", "--checkpoint", model_ckpt, "--out", tmp_path / "out.safetensors", "--classes", "3"),
                   "is a directory; give a file path")


def test_audit_out_naming_a_file_is_refused(cli, model_ckpt, tmp_path):
    target = tmp_path / "report.txt"
    target.write_text("keep me")
    one_error_line(*cli("audit", "--checkpoint", model_ckpt, "--out", target), "is a file; give a directory")
    assert target.read_text() == "keep me"


def test_full_disk_during_the_report_leaves_no_half_pair(tmp_path, monkeypatch):
    from pathlib import Path

    from oblivio import OblivioError
    from oblivio.audit.report import write_report

    class Result:
        def to_dict(self):
            return {"verdict": "x"}

    monkeypatch.setattr("oblivio.audit.report.render_html", lambda r: "<html>" + "x" * 100 + "</html>")
    write_report(Result(), tmp_path)  # a previous good pair
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    real = Path.write_text

    def full(self, text, *a, **k):
        if self.name.startswith(".report.html"):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(self, text, *a, **k)

    monkeypatch.setattr(Path, "write_text", full)
    with pytest.raises(OblivioError, match="no space left"):
        write_report(Result(), tmp_path)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before  # old pair intact, no temp files


# -- case 3: a forget that forgot nothing is not reported as done; bench lists failed cells ------------

def test_forget_that_forgot_nothing_exits_non_zero(cli, model_ckpt, tmp_path):
    out = tmp_path / "f.safetensors"
    one_error_line(*cli("forget", "--checkpoint", model_ckpt, "--out", out, "--classes", "3", "--method", "ga",
                        "--set", "lr=1e-7", "--set", "steps=1"), "forget accuracy did not fall")
    assert not out.exists()
    one_error_line(*cli("forget", "--checkpoint", model_ckpt, "--out", out, "--classes", "3", "--method", "dm",
                        "--set", "max_steps=0"), "option max_steps must be >= 1")


def test_forget_reports_progress_and_verification(cli, model_ckpt, tmp_path):
    out = tmp_path / "f.safetensors"
    code, stdout, stderr = cli("forget", "--checkpoint", model_ckpt, "--out", out, "--classes", "3", "--method", "ga")
    assert code == 0, stdout + stderr
    assert "unlearning with 'ga'" in stderr and "running ga: done in" in stderr  # progress on stderr
    assert "verified: forget accuracy" in stdout
    assert max(len(line) for line in stdout.splitlines()) <= 80


def test_bench_lists_a_method_that_forgot_nothing_and_strict_fails_on_it(cli, tmp_path):
    config = tmp_path / "b.yaml"
    config.write_text(yaml.safe_dump({
        "name": "fails", "dataset": {"name": "digits"}, "model": "mlp", "train": {"epochs": 2}, "seeds": [0],
        "threads": 1, "scenarios": {"class": {"classes": [3]}}, "methods": [{"ga": {"lr": 1e-7, "steps": 1}}],
    }))
    code, stdout, stderr = cli("bench", "--config", config, "--out", tmp_path / "out", "--no-progress")
    assert code == 0, stdout + stderr  # a baseline that forgot nothing is a result, not a failed run
    assert "forgot nothing scenario class, method ga" in " ".join(stdout.split())
    code, stdout, stderr = cli("bench", "--config", config, "--out", tmp_path / "out", "--no-progress", "--strict")
    one_error_line(code, stdout, stderr, "--strict: 1 cell(s) forgot nothing")


# -- case 6: files follow the umask -----------------------------------------------------------------

def test_output_files_follow_the_umask(model_ckpt, tmp_path):
    from oblivio import build_model, save_checkpoint
    from oblivio.io import atomic_write_text

    old = os.umask(0o022)
    try:
        path = save_checkpoint(tmp_path / "m.safetensors", build_model("mlp", (1, 8, 8), 10), arch="mlp",
                               input_shape=(1, 8, 8), num_classes=10)
        atomic_write_text(tmp_path / "r.html", "x")
        for p in (path, path.with_suffix(".json"), tmp_path / "r.html"):
            assert stat.S_IMODE(p.stat().st_mode) == 0o644, p
    finally:
        os.umask(old)


# -- case 7: train options, 80 columns --------------------------------------------------------------

@pytest.mark.parametrize("args,match", [
    (["--n-train", "0"], "--n-train must be at least 1"),
    (["--data-dir", "/tmp"], "digits is bundled with scikit-learn and takes no --data-dir"),
    (["--lr", "nan"], "option lr must be a finite number"),
    (["--batch-size", "0"], "option batch_size must be >= 1"),
])
def test_train_refuses_bad_options(cli, tmp_path, args, match):
    one_error_line(*cli("train", "--out", tmp_path / "m.safetensors", "--no-progress", *args), match)


def test_bench_tables_fit_80_columns_without_cutting_names():
    from rich.console import Console

    from oblivio.bench.report import fit_tables

    headers = ["Method", "UA", "RA", "TA", "MIA", "AUC", "Avg. Gap", "seconds", "time ratio", "failed", "extra col"]
    rows = [["l1-sparse", "12.34±1.23", "98.76±0.12", "97.65±0.33", "45.67±2.10", "0.512±0.010", "1.23", "123.45",
             "0.123", "0", "something"], ["bad-teacher", *["99.99±9.99"] * 10]]
    console = Console(width=80, record=True, file=open(os.devnull, "w"))
    for table in fit_tables("random", headers, rows, 80):
        console.print(table)
    text = console.export_text()
    assert max(len(line) for line in text.splitlines()) <= 80
    assert "l1-sparse" in text and "bad-teacher" in text and "…" not in text
    for cell in ("12.34±1.23", "0.512±0.010", "123.45"):
        assert cell in text  # never broken over two lines
