"""The docs site's examples are true of the code now.

- Every ```python block of a docs page runs, the blocks of one page in order in one namespace, in a fresh folder.
- Every ``oblivio ...`` command in a ```bash block (docs pages and the README) names a real subcommand and only
  options that subcommand has (checked against the CLI's own click tree, not by running it).
- The cheap shell examples run: the getting-started commands, the own-data commands and the ledger's commands.
  The tuning and GPU pages' blocks run in tests/test_readme.py (which checks their quoted outputs too).
- ``mkdocs build --strict`` passes (skipped where mkdocs is not installed).

Pages under docs/design/ are records of past runs (commands as they were run then), not examples: left out.
"""
from __future__ import annotations

import importlib.util
import os
import re
import shlex
import subprocess
import sys
import types
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
RECORDS = ("design",)


def pages() -> list[Path]:
    return sorted(p for p in DOCS.rglob("*.md") if p.relative_to(DOCS).parts[0] not in RECORDS + ("hooks",))


def blocks(path: Path, lang: str) -> list[str]:
    return re.findall(rf"^```{lang}\n(.*?)^```", path.read_text(), flags=re.S | re.M)


def commands(block: str) -> list[str]:
    """A bash block's commands: continuation lines joined, comment lines dropped."""
    out, current = [], ""
    for line in block.splitlines():
        if line.lstrip().startswith("#") and not current:
            continue
        if line.rstrip().endswith("\\"):
            current += line.rstrip()[:-1] + " "
            continue
        current += line
        if current.strip():
            out.append(current.strip())
        current = ""
    return out


def oblivio_invocations(command: str) -> list[list[str]]:
    """The argv (after ``oblivio``) of every oblivio invocation in one shell command line."""
    found = []
    for part in re.split(r"&&|\|\||;|\|", command):
        try:
            argv = shlex.split(part, comments=True)
        except ValueError:
            continue
        if argv and argv[-1] == "&":
            argv = argv[:-1]
        if argv and argv[0] == "oblivio":
            found.append(argv[1:])
    return found


PYTHON_PAGES = [p for p in pages() if blocks(p, "python")]
SLOW_PAGES: set[str] = set()  # pages whose examples take over ~20 s (none yet)


def _page_id(p: Path) -> str:
    return str(p.relative_to(DOCS))


@pytest.mark.parametrize(
    "page",
    [pytest.param(p, id=_page_id(p), marks=[pytest.mark.slow] if _page_id(p) in SLOW_PAGES else []) for p in PYTHON_PAGES],
)
def test_python_examples_run(page, tmp_path, monkeypatch):
    """A page's blocks run in one namespace, that of a module registered in sys.modules (as a reader's script
    would); a method an example registers is taken out of the registry afterwards."""
    from oblivio.methods import base

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(base, "_METHODS", dict(base._registry()))  # plug-ins loaded first, so the copy keeps them
    module = types.ModuleType("oblivio_docs_example")
    monkeypatch.setitem(sys.modules, module.__name__, module)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    namespace = module.__dict__
    try:
        for i, code in enumerate(blocks(page, "python")):
            # dont_inherit: run as a reader runs them, without this file's "from __future__ import annotations"
            # (under it, a dataclass defined in a block fails: its string annotations are looked up in a module
            # that does not exist)
            exec(compile(code, f"{_page_id(page)}[python block {i}]", "exec", dont_inherit=True), namespace)
    finally:
        torch.set_num_threads(threads)


def test_docs_have_python_examples():
    names = {_page_id(p) for p in PYTHON_PAGES}
    assert {"getting-started.md", "concepts.md", "howto/own-model-and-data.md"} <= names


def cli_tree():
    import typer

    from oblivio.cli import app

    return typer.main.get_command(app)


def resolve(argv: list[str]):
    """(the leaf command, its path, the remaining arguments) for ``oblivio ARGV``; fails on an unknown subcommand."""
    cmd, path, rest = cli_tree(), ["oblivio"], list(argv)
    while hasattr(cmd, "list_commands") and rest and not rest[0].startswith("-"):
        ctx = cmd.context_class(cmd, info_name=path[-1])
        sub = cmd.get_command(ctx, rest[0])
        assert sub is not None, f"'{' '.join(path)} {rest[0]}' is not a command"
        cmd, path, rest = sub, path + [rest.pop(0)], rest
    assert not hasattr(cmd, "list_commands"), f"'{' '.join(path)}' needs a subcommand"
    return cmd, path, rest


def options_of(cmd) -> set[str]:
    names = {"--help"}
    for param in cmd.params:
        names.update(getattr(param, "opts", []))
        names.update(getattr(param, "secondary_opts", []))
    return {n for n in names if n.startswith("-")}


def documented_invocations() -> list[tuple[str, list[str]]]:
    found = []
    for page in pages() + [ROOT / "README.md"]:
        where = str(page.relative_to(ROOT))
        for block in blocks(page, "bash"):
            for command in commands(block):
                found += [(where, argv) for argv in oblivio_invocations(command)]
    return found


def test_every_documented_command_names_a_real_subcommand_and_real_options():
    found = documented_invocations()
    assert len(found) > 30, found
    problems = []
    for where, argv in found:
        try:
            cmd, path, rest = resolve(argv)
        except AssertionError as e:
            problems.append(f"{where}: oblivio {' '.join(argv)}: {e}")
            continue
        known = options_of(cmd)
        for token in rest:
            if token == "--":
                break
            if re.match(r"^--?[A-Za-z]", token) and token.split("=", 1)[0] not in known:
                problems.append(f"{where}: {' '.join(path)} has no option {token}")
    assert not problems, "\n".join(problems)


def test_the_checker_catches_a_wrong_option():
    cmd, path, rest = resolve(["forget", "--checkpoint", "m.safetensors", "--clases", "3"])
    assert path == ["oblivio", "forget"] and "--clases" not in options_of(cmd) and "--classes" in options_of(cmd)
    with pytest.raises(AssertionError):
        resolve(["forgett", "--checkpoint", "m"])
    with pytest.raises(AssertionError):
        resolve(["requests"])


# ---------------------------------------------------------------- the cheap shell examples, run


def run_block(cli, monkeypatch, cwd: Path, block: str, skip: tuple[str, ...] = ()) -> list[str]:
    """Run a block's oblivio commands in-process (the shared ``cli`` fixture) in ``cwd``; each must exit 0."""
    monkeypatch.chdir(cwd)
    outputs = []
    for command in commands(block):
        if any(s in command for s in skip):
            continue
        for argv in oblivio_invocations(command):
            code, out, err = cli(*argv)
            assert code == 0, f"oblivio {' '.join(argv)}\n{out}\n{err}"
            assert "Traceback" not in out + err
            outputs.append(out)
    return outputs


def block_starting(page: str, first: str) -> str:
    return next(b for b in blocks(DOCS / page, "bash") if b.startswith(first))


def test_getting_started_commands_run(cli, monkeypatch, tmp_path):
    block = block_starting("getting-started.md", "oblivio train --dataset digits")
    out = run_block(cli, monkeypatch, tmp_path, block.replace("--model mlp", "--model mlp --epochs 5"))
    assert "UA: unlearning accuracy" in out[-1]
    assert (tmp_path / "runs" / "forget.audit" / "report.html").is_file()


def test_own_data_commands_run(cli, monkeypatch, tmp_path):
    page = DOCS / "howto" / "own-model-and-data.md"
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    for code in blocks(page, "python"):
        exec(code.replace("epochs=5", "epochs=2"), namespace)
    assert (tmp_path / "mydata.npz").is_file()
    block = block_starting("howto/own-model-and-data.md", "oblivio train --dataset npz")
    run_block(cli, monkeypatch, tmp_path, block)
    assert (tmp_path / "runs" / "mine-forget.safetensors").is_file()


def test_image_folder_and_csv_commands_run(cli, monkeypatch, tmp_path):
    """The image-folder flow on digits written as PNG folders by the page's script (Fashion-MNIST, the page's
    source, may be absent), then the CSV flow on the iris table its Python block writes."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("make_image_folder", ROOT / "benchmarks" / "make_image_folder.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    block = block_starting("howto/own-model-and-data.md", "python benchmarks/make_image_folder.py shirts")
    assert script.main([str(tmp_path / "shirts"), "--source", "digits", "--per-class", "30", "--test-per-class", "5"]) == 0
    run_block(cli, monkeypatch, tmp_path, block.replace("--epochs 10", "--epochs 3"))
    assert (tmp_path / "runs" / "shirts-forget.audit" / "report.html").is_file()
    namespace: dict = {}
    exec(next(b for b in blocks(DOCS / "howto" / "own-model-and-data.md", "python") if "iris.csv" in b), namespace)
    run_block(cli, monkeypatch, tmp_path, block_starting("howto/own-model-and-data.md", "oblivio train --dataset csv"))
    assert (tmp_path / "runs" / "iris-forget.safetensors").is_file()


def test_ledger_commands_run(cli, monkeypatch, tmp_path):
    monkeypatch.delenv("OBLIVIO_DB_URL", raising=False)
    monkeypatch.delenv("OBLIVIO_DB_URL_FILE", raising=False)
    block = block_starting("howto/deletion-requests.md", "oblivio train --dataset digits")
    out = run_block(cli, monkeypatch, tmp_path, block)
    assert "ticket-42" in out[-2]  # show
    assert (tmp_path / "runs" / "model.run-1.safetensors").is_file()
    assert (tmp_path / "certificate.json").is_file()


# ---------------------------------------------------------------- the site


@pytest.mark.skipif(importlib.util.find_spec("mkdocs") is None, reason="mkdocs is not installed (pip install -e '.[docs]')")
def test_mkdocs_build_strict(tmp_path):
    env = os.environ | {"NO_MKDOCS_2_WARNING": "1", "PYTHONPATH": str(ROOT / "src")}
    proc = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-d", str(tmp_path / "site")], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (tmp_path / "site" / "reference" / "cli" / "index.html").is_file()
    cli_page = (tmp_path / "site" / "reference" / "cli" / "index.html").read_text()
    assert "oblivio requests export" in cli_page and "--lira-shadows" in cli_page
    api_page = (tmp_path / "site" / "reference" / "http-api" / "index.html").read_text()
    assert "/requests/by-ref/{ref}/certificate" in api_page
