"""benchmarks/publish.py: RESULTS.md's generated sections come from bench outputs, replaced in place on rerun."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from oblivio.bench import parse_config, run_benchmark

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def publish(tmp_path, monkeypatch):
    spec = importlib.util.spec_from_file_location("publish", ROOT / "benchmarks" / "publish.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setattr(module, "HERE", tmp_path)  # results/ copies go to the test's folder
    return module


def test_sections_are_generated_and_replaced(publish, tmp_path):
    cfg = {"name": "tiny-pub", "dataset": {"name": "digits"}, "model": "mlp", "train": {"epochs": 2}, "seeds": [0],
           "threads": 1, "scenarios": {"random": {"fraction": 0.1}}, "methods": ["ft"]}
    run_benchmark(parse_config(cfg), tmp_path / "tiny-pub", progress=False)
    results = tmp_path / "RESULTS.md"
    results.write_text(f"# Results\n\nintro\n\n{publish.INTRO_END}\n\n## Older notes\n")
    assert publish.publish([tmp_path / "tiny-pub"], results) == ["tiny-pub"]
    text = results.read_text()
    assert text.index("intro") < text.index("<!-- generated: tiny-pub -->") < text.index("## Older notes")
    assert "## oblivio bench: tiny-pub" in text and "| retrain (other seed) |" in text
    assert "`oblivio bench --config None --out runs/bench/tiny-pub`" in text
    assert (tmp_path / "results" / "tiny-pub" / "runs.csv").is_file()
    publish.publish([tmp_path / "tiny-pub"], results)  # a rerun replaces the section, it does not add a second
    assert results.read_text().count("<!-- generated: tiny-pub -->") == 1


def test_a_folder_that_is_not_a_bench_output_is_refused(publish, tmp_path):
    results = tmp_path / "RESULTS.md"
    results.write_text(publish.INTRO_END + "\n")
    with pytest.raises(SystemExit, match="not a bench output folder"):
        publish.publish([tmp_path], results)
