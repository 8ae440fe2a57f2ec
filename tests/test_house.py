"""The house shows its parts (issue 25): short docstrings that are references, no commit ids in the code,
the audit report inside the audit package, one-off studies out of benchmarks/' top level."""
from __future__ import annotations

import ast
import importlib
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "oblivio"
BENCH = ROOT / "benchmarks"
MAX_DOCSTRING_LINES = 40
# The scripts a user runs from benchmarks/ itself; one-off studies live in benchmarks/studies/.
USER_SCRIPTS = {"publish.py", "ledger_throughput.py", "augmentation.py",  # RESULTS.md sources like the ledger's
                "make_image_folder.py"}  # writes Fashion-MNIST / digits as PNG folders to try imagefolder on
# A 7-40 character hex token (with a digit and a letter, so words like "defaced" are not ids) near "git"/"commit".
HEX = r"\b(?=[0-9a-f]*[0-9])(?=[0-9a-f]*[a-f])[0-9a-f]{7,40}\b"
COMMIT_ID = re.compile(rf"(?i)(?:git|commit)\W+(?:\w+\W+){{0,3}}?{HEX}|{HEX}\W+(?:\w+\W+){{0,3}}?(?:git|commit)")


def _sources() -> list[Path]:
    return sorted(SRC.rglob("*.py"))


def _docstrings(path: Path):
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            doc = ast.get_docstring(node, clean=False)
            if doc is not None:
                yield getattr(node, "name", "<module>"), node.body[0].lineno, doc


def test_sources_found():
    assert len(_sources()) > 50 and (SRC / "methods" / "scrub.py") in _sources()


def test_no_docstring_over_40_lines():
    long = [f"{p.relative_to(ROOT)}:{line} {name}: {len(doc.splitlines())} lines"
            for p in _sources() for name, line, doc in _docstrings(p) if len(doc.splitlines()) > MAX_DOCSTRING_LINES]
    assert not long, "docstrings are references; move run logs to docs/design/<method>.md:\n" + "\n".join(long)


def test_docstring_scan_sees_long_ones(tmp_path):
    f = tmp_path / "m.py"
    f.write_text('"""' + "line\n" * 41 + '"""\n\ndef g():\n    """One line."""\n')
    assert [len(d.splitlines()) for _, _, d in _docstrings(f)] == [41, 1]


@pytest.mark.parametrize("text, hit", [
    ("measured at commit 6bc122e on a CPU", True),
    ("(git 8e7e3af +dirty)", True),
    ("a930bb4 is the commit it ran", True),
    ("the commit of the run, from git rev-parse", False),
    ("a sha256 of deadbeef00 bytes", False),
])
def test_commit_pattern(text, hit):
    assert bool(COMMIT_ID.search(text)) is hit


def test_no_commit_ids_in_src():
    hits = [f"{p.relative_to(ROOT)}:{i}: {line.strip()}" for p in _sources()
            for i, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1) if COMMIT_ID.search(line)]
    assert not hits, "commit ids belong in docs/design/ or RESULTS.md, not src/:\n" + "\n".join(hits)


def test_audit_report_lives_in_the_audit_package():
    with pytest.raises(ModuleNotFoundError):
        importlib.import_module("oblivio.report")
    assert not (SRC / "report.py").exists()
    report = importlib.import_module("oblivio.audit.report")
    assert callable(report.write_report) and callable(report.render_html)


def test_benchmarks_top_level_holds_no_studies():
    scripts = {p.name for p in BENCH.iterdir() if p.is_file() and p.suffix in (".py", ".sh")}
    assert scripts <= USER_SCRIPTS, f"one-off studies belong in benchmarks/studies/: {sorted(scripts - USER_SCRIPTS)}"


def test_every_study_is_listed_with_its_question():
    readme = (BENCH / "README.md").read_text(encoding="utf-8")
    studies = sorted(p.name for p in (BENCH / "studies").iterdir() if p.suffix in (".py", ".sh"))
    assert {"dm_study.py", "robustness_sweep.py", "resnet_cpu_proxy.py", "gpu_session.py"} <= set(studies)
    lines = {s: [ln for ln in readme.splitlines() if f"studies/{s}" in ln and "?" in ln] for s in studies}
    assert all(lines.values()), f"studies without a README line saying what question they answer: {lines}"
