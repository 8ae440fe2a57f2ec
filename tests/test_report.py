"""``oblivio audit`` end to end on digits (train -> forget -> audit), the HTML report, and its rendering in Chromium."""
from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from oblivio import OblivioError, build_model, save_checkpoint
from oblivio.checkpoint import read_sidecar
from oblivio.cli import app
from oblivio.audit.report import render_html

CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)


def invoke(*args: str):
    result = CliRunner().invoke(app, [str(a) for a in args])
    if result.exception and not isinstance(result.exception, (SystemExit, OblivioError)):
        raise result.exception
    return result


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """An MLP trained on digits, class 3 forgotten by fine-tuning, and the retrained gold standard (all via the CLI)."""
    d = tmp_path_factory.mktemp("runs")
    assert invoke("train", "--dataset", "digits", "--epochs", "10", "--no-progress", "--out", d / "model.safetensors").exit_code == 0
    for method in ("ft", "retrain"):
        r = invoke("forget", "--checkpoint", d / "model.safetensors", "--out", d / f"{method}.safetensors",
                   "--scenario", "class", "--classes", "3", "--method", method, "--set", "epochs=10" if method == "retrain" else "epochs=3")
        assert r.exit_code == 0, r.output
    r = invoke("audit", "--checkpoint", d / "ft.safetensors", "--retrained", d / "retrain.safetensors",
               "--lira-shadows", "2", "--out", d / "audit")
    assert r.exit_code == 0, r.output
    return d


def test_cli_writes_audit_json_and_self_contained_report(runs):
    doc = json.loads((runs / "audit" / "audit.json").read_text())
    assert set(doc["metrics"]) == {"original", "unlearned", "retrained"}  # original found via the recorded path
    assert doc["method"]["method"] == "ft"
    assert doc["metrics"]["retrained"]["UA"] == 100.0  # a model that never saw class 3 gets none right
    assert doc["gap_to_retrain"]["unlearned"]["avg_gap"] >= 0 and doc["time"]["ratio"] > 0
    assert doc["models"]["unlearned"] == read_sidecar(runs / "ft.safetensors")["model_hash"]
    assert doc["split"]["hashes"] == read_sidecar(runs / "ft.safetensors")["split"]["hashes"]
    assert set(doc["lira"]["results"]["unlearned"]) == {"AUC", "TPR@1%FPR", "TPR@0.1%FPR"}
    html = (runs / "audit" / "report.html").read_text()
    sources = re.findall(r'src="([^"]*)"', html)
    assert len(sources) == 3 and all(s.startswith("data:image/png;base64,") for s in sources)
    assert not re.search(r'(href|src)="(https?:|//)', html) and "<link" not in html and "<script" not in html
    for src in sources:  # each embedded image is a real PNG
        assert base64.b64decode(src.split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"
    verdict = html.index('class=verdict')
    assert verdict < html.index("<h2>") and doc["verdict"]["headline"].split(":")[0] in html[verdict:verdict + 800]
    assert "MIA-efficacy" in html and "SalUn" in html and "Avg. Gap" in html


def test_retrained_model_of_another_split_is_refused(runs):
    other = runs / "retrain5.safetensors"
    r = invoke("forget", "--checkpoint", runs / "model.safetensors", "--out", other, "--scenario", "class", "--classes", "5",
               "--method", "retrain", "--set", "epochs=2")
    assert r.exit_code == 0
    r = invoke("audit", "--checkpoint", runs / "ft.safetensors", "--retrained", other, "--out", runs / "bad")
    assert isinstance(r.exception, OblivioError) and "different forget split" in str(r.exception)
    assert not (runs / "bad" / "audit.json").exists()


def test_model_not_matching_the_dataset_is_refused(runs):
    meta = read_sidecar(runs / "ft.safetensors")
    wrong = runs / "five_classes.safetensors"
    save_checkpoint(wrong, build_model("mlp", (1, 8, 8), 5, seed=0), arch="mlp", input_shape=(1, 8, 8), num_classes=5,
                    dataset="digits", split=meta["split"], training=meta["training"], extra=meta["extra"])
    r = invoke("audit", "--checkpoint", wrong, "--out", runs / "bad5")
    assert isinstance(r.exception, OblivioError) and "10 classes" in str(r.exception)


def test_original_that_is_not_the_source_is_refused(runs):
    r = invoke("audit", "--checkpoint", runs / "ft.safetensors", "--original", runs / "retrain.safetensors", "--out", runs / "bad_o")
    assert isinstance(r.exception, OblivioError) and "not the model this one was unlearned from" in str(r.exception)


def test_checkpoint_without_forget_split_is_refused(runs):
    r = invoke("audit", "--checkpoint", runs / "model.safetensors", "--out", runs / "bad_s")
    assert isinstance(r.exception, OblivioError) and "records no forget split" in str(r.exception)


def test_cli_exit_code_and_message_for_bad_input(runs):
    proc = subprocess.run([sys.executable, "-c", "from oblivio.cli import main; main()", "audit", "--checkpoint", str(runs / "missing.safetensors"), "--out", str(runs / "x")],
                          capture_output=True, text=True)
    assert proc.returncode == 2 and "error:" in proc.stderr and "checkpoint not found" in proc.stderr


def test_render_html_without_retrained_or_lira(splits, original):
    from oblivio.audit import audit

    result = audit(original("backdoor"), splits["backdoor"])
    html = render_html(result)
    assert "no retrained model given" in html and "LiRA offline" not in html
    assert html.count("data:image/png;base64,") == 3 and "Backdoor attack success (ASR)" in html


@pytest.mark.browser
@pytest.mark.skipif(CHROMIUM is None, reason="headless Chromium is not installed")
def test_report_renders_in_chromium(runs, tmp_path):
    from matplotlib.image import imread
    import numpy as np

    shot = tmp_path / "report.png"
    subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         f"--user-data-dir={tmp_path / 'profile'}", f"--screenshot={shot}", "--window-size=1200,2000",
         (runs / "audit" / "report.html").resolve().as_uri()],
        check=True, capture_output=True, timeout=120,
    )
    pixels = imread(shot)
    assert pixels.shape[:2] == (2000, 1200)
    colours = np.unique((pixels[..., :3] * 255).astype(np.uint8).reshape(-1, 3), axis=0)
    assert len(colours) > 500  # text, coloured verdict, plots: far from a blank page
    top = pixels[:400, :, :3]
    assert (top.std(axis=(0, 1)) > 0.05).any()  # the verdict area at the top is drawn, not empty
