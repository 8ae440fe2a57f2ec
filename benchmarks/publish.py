"""Write bench outputs into benchmarks/RESULTS.md: nothing in a generated section is typed by hand.

    python benchmarks/publish.py runs/bench/population-digits runs/bench/population-fashion-mnist

Each folder is an ``oblivio bench`` output. Its report files (results.md, results.json, summary.csv,
runs.csv) are copied to ``benchmarks/results/<folder name>/`` (committed), and its results.md, with headings
moved one level down and the command that made it, replaces the section between
``<!-- generated: <folder name> -->`` and ``<!-- end: <folder name> -->`` in RESULTS.md. New sections go after the file's introduction, in the order
given, so the first folder named opens RESULTS.md.
"""
from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
FILES = ("results.md", "results.json", "summary.csv", "runs.csv")
INTRO_END = "<!-- generated sections follow -->"


def section(out: Path) -> tuple[str, str]:
    """(section name = the folder's name, the Markdown section) of one bench output folder."""
    doc = json.loads((out / "results.json").read_text())
    name = out.resolve().name
    body = (out / "results.md").read_text().rstrip() + "\n"
    body = re.sub(r"^(#+) ", lambda m: "#" + m.group(1) + " ", body, flags=re.M)
    population = doc["config"].get("population")
    command = (f"oblivio bench --config {doc['header'].get('config')} --out runs/bench/{name}"
               + (f" --population {population}" if population else "")
               + (" --ray" if str(doc["header"].get("executor", "")).startswith("ray") else ""))
    body = body.replace("\n", f"\n\nRegenerated from `benchmarks/results/{name}/` by `python benchmarks/publish.py`; "
                                f"the run: `{command}`.\n", 1)
    return name, f"<!-- generated: {name} -->\n{body}<!-- end: {name} -->\n"


def publish(outs: list[Path], results: Path = HERE / "RESULTS.md") -> list[str]:
    """Copy each output's report files beside this script and put its section into ``results``; the names."""
    text = results.read_text()
    if INTRO_END not in text:
        raise SystemExit(f"{results} has no '{INTRO_END}' line: put it after the introduction")
    names, new = [], []
    for out in outs:
        missing = [f for f in FILES if not (out / f).is_file()]
        if missing:
            raise SystemExit(f"{out}: not a bench output folder (missing {', '.join(missing)})")
        name, block = section(out)
        target = HERE / "results" / name
        target.mkdir(parents=True, exist_ok=True)
        for f in FILES:
            shutil.copyfile(out / f, target / f)
        pattern = re.compile(rf"<!-- generated: {re.escape(name)} -->\n.*?<!-- end: {re.escape(name)} -->\n", re.S)
        if pattern.search(text):
            text = pattern.sub(lambda _: block, text)
        else:
            new.append(block)
        names.append(name)
    if new:
        text = text.replace(INTRO_END, INTRO_END + "\n\n" + "\n".join(new), 1)
    results.write_text(text)
    return names


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("outs", nargs="+", type=Path, help="oblivio bench output folders")
    args = parser.parse_args(argv)
    print("published:", ", ".join(publish(args.outs)), file=sys.stderr)


if __name__ == "__main__":
    main()
