"""The README's shell blocks, and those of the docs pages that were the README's (GPUs, tuning, Ray, language
models), run in order in a fresh folder: every command exits 0 (or shows its documented non-zero case), and the
outputs they quote are the ones the code prints now.

The quick tests run the README's "Quickstart" block and the tuning page's block with small settings (a one-seed,
two-method bench config in place of benchmarks/digits.yaml, 2-3 tuning trials); the slow ones run them as written.
tests/test_docs.py runs the docs' other examples and checks every documented command's options.
Blocks that need what a test machine lacks are left out and named in ``SKIPPED``: installs and the test
command itself, a GPU (its documented error is checked instead), a Ray cluster, the 16-32-member
population benches (tens of minutes), and the ledger's HTTP server.
"""
from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
TUNING = ROOT / "docs" / "howto" / "tuning.md"
GPUS = ROOT / "docs" / "howto" / "gpus.md"
# The pages whose blocks the slow test runs as written, in this order (the README's order before they moved).
PAGES = (README, GPUS, TUNING, ROOT / "docs" / "howto" / "ray.md", ROOT / "docs" / "howto" / "language-models.md")
SKIPPED = ("pip install", "python -m pytest", "--device cuda", "--ray", "ray start", "population",
           "publish.py", "oblivio requests", "oblivio serve", "oblivio worker", "curl ", "export OBLIVIO_API_TOKEN",
           "export OBLIVIO_DB_URL_FILE")
TINY = {"name": "readme-tiny", "dataset": {"name": "digits"}, "model": "mlp",
        "train": {"epochs": 3, "batch_size": 64, "lr": 0.05}, "seeds": [0], "threads": 1,
        "scenarios": {"random": {"fraction": 0.1}, "class": {"classes": [3]}}, "methods": ["ft", "ssd"]}


def shell_blocks(page: Path = README) -> list[list[str]]:
    """Each ```bash block of ``page`` as its commands (continuation lines joined, comments dropped)."""
    blocks = re.findall(r"```bash\n(.*?)```", page.read_text(), flags=re.S)
    out = []
    for block in blocks:
        commands, current = [], ""
        for line in block.splitlines():
            if line.lstrip().startswith("#") and not current:
                continue
            current += line.rstrip("\\").rstrip() + " " if line.rstrip().endswith("\\") else line
            if not line.rstrip().endswith("\\"):
                if current.strip():
                    commands.append(current.strip())
                current = ""
        out.append(commands)
    return out


def runnable(commands: list[str]) -> list[str]:
    return [c for c in commands if not any(s in c for s in SKIPPED)]


def block_with(first: str, page: Path = README) -> list[str]:
    """The commands of the block of ``page`` whose first command starts with ``first``."""
    return next(b for b in shell_blocks(page) if b and b[0].startswith(first))


def run(command: str, cwd: Path, substitutions: dict[str, str] = {}) -> subprocess.CompletedProcess:
    for old, new in substitutions.items():
        command = command.replace(old, new)
    env = os.environ | {"COLUMNS": "80", "PYTHONPATH": str(ROOT / "src")}
    bin_dir = str(Path(sys.executable).parent)
    env["PATH"] = bin_dir + os.pathsep + env.get("PATH", "")
    return subprocess.run(["bash", "-c", command], cwd=cwd, env=env, capture_output=True, text=True, timeout=1800)


@pytest.fixture
def fresh(tmp_path) -> Path:
    """A folder like a fresh clone's root: the benchmark configs and nothing else."""
    shutil.copytree(ROOT / "benchmarks", tmp_path / "benchmarks", ignore=shutil.ignore_patterns("results", "*.md"))
    (tmp_path / "benchmarks" / "readme-tiny.yaml").write_text(yaml.safe_dump(TINY))
    return tmp_path


def run_all(commands: list[str], cwd: Path, substitutions: dict[str, str] = {}) -> list[subprocess.CompletedProcess]:
    done = []
    for command in commands:
        proc = run(command, cwd, substitutions)
        assert proc.returncode == 0, f"{command}\n{proc.stdout}\n{proc.stderr}"
        assert "Traceback" not in proc.stdout + proc.stderr, command
        done.append(proc)
    return done


SMALL = {"benchmarks/digits.yaml": "benchmarks/readme-tiny.yaml", "--trials 6": "--trials 2",
         "--trials 10": "--trials 3"}


def test_readme_blocks_are_found_and_the_skipped_ones_named():
    blocks = [b for page in PAGES for b in shell_blocks(page)]
    commands = [c for b in blocks for c in b]
    assert any(c.startswith("oblivio train --dataset digits") for c in commands)
    assert all(c.startswith(("oblivio ", "pip ", "python ", "ray ", "export ", "curl ")) for c in commands), commands
    ran = [c for b in blocks for c in runnable(b)]
    assert ran and all(c.startswith("oblivio ") for c in ran)


@pytest.fixture
def in_process(cli, monkeypatch):
    """Run one README command through ``oblivio.cli.main`` in this process (no interpreter start per command; the
    shared ``cli`` fixture) in ``cwd``; it must exit 0 without a traceback. Returns (exit status, stdout, stderr)."""

    def run_one(command: str, cwd: Path, substitutions: dict[str, str] = {}) -> tuple[int, str, str]:
        for old, new in substitutions.items():
            command = command.replace(old, new)
        argv = shlex.split(command, comments=True)
        assert argv[0] == "oblivio", command
        monkeypatch.chdir(cwd)
        code, out, err = cli(*argv[1:])
        assert code == 0, f"{command}\n{out}\n{err}"
        assert "Traceback" not in out + err, command
        return code, out, err

    return run_one


def test_readme_command_line_and_tuning_blocks_exit_0_on_small_settings(fresh, in_process):
    """The README's "Quickstart" block then the tuning page's block, in order, on a tiny bench config and 2-3 trials."""
    outputs = {c: in_process(c, fresh, SMALL)[1] for c in runnable(block_with("oblivio train --dataset digits"))}
    assert (fresh / "runs" / "forget.audit" / "audit.json").is_file()  # the audit's own default folder
    audit = next(out for c, out in outputs.items() if c.startswith("oblivio audit"))
    assert "UA: unlearning accuracy" in audit  # the legend
    tuning = [in_process(c, fresh, SMALL)[1] for c in runnable(block_with("oblivio tune --config", TUNING))]
    assert "2 run now" in tuning[0] and "1 run now" in tuning[1]  # its own study: nothing stale
    assert (fresh / "runs" / "forget-salun.safetensors").is_file()


@pytest.mark.skipif(torch.cuda.is_available(), reason="the GPU block's documented error is for machines without CUDA")
def test_readme_gpu_block_shows_its_documented_error_without_a_gpu(fresh):
    command = block_with("oblivio train --dataset fashion-mnist", GPUS)[0]
    proc = run(command, fresh)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.strip() == "error: --device cuda: no CUDA device is available"
    assert "`error: --device cuda: no CUDA device is available` (exit 2)" in GPUS.read_text()


def quoted_tune_lines() -> list[str]:
    """The output lines the tuning page quotes under its tune command (trial lines and the best options)."""
    text = TUNING.read_text()
    block = text[text.index("oblivio tune --config benchmarks/digits.yaml --method salun --scenario random --trials 6 --study"):]
    lines = []
    for line in block.splitlines()[1:]:
        if not line.startswith("#"):
            break
        line = re.sub(r"\s+<- the defaults$", "", line[2:]).rstrip()
        if line != "...":
            lines.append(line)
    return lines


def test_readme_tune_output_first_trial_is_current(fresh):
    """Trial 0 (the defaults) as the tuning page quotes it; the other trials are checked by the slow test."""
    proc = run("oblivio tune --config benchmarks/digits.yaml --method salun --scenario random --trials 1 "
               "--study runs/tune/check.db", fresh)
    assert proc.returncode == 0, proc.stderr
    quoted = quoted_tune_lines()
    assert quoted[0].startswith("trial 0: ") and quoted[0] in proc.stdout.splitlines()


@pytest.mark.slow
def test_readme_tune_output_is_current(fresh):
    proc = run("oblivio tune --config benchmarks/digits.yaml --method salun --scenario random --trials 6 "
               "--study runs/tune/salun.db", fresh)
    assert proc.returncode == 0, proc.stderr
    printed = [line.rstrip() for line in proc.stdout.splitlines()]
    for line in quoted_tune_lines():
        assert line in printed, (line, proc.stdout)


@pytest.mark.slow
def test_readme_command_line_and_tuning_blocks_exit_0_as_written(fresh):
    """Every runnable command of the README and the pages in ``PAGES``, in order, as written (the digits bench
    takes minutes)."""
    for page in PAGES:
        for block in shell_blocks(page):
            run_all(runnable(block), fresh)
