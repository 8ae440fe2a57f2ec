"""``oblivio methods``: the registered unlearning methods, their papers and default options."""
from __future__ import annotations

import dataclasses
import json
import textwrap

import typer
from rich.markup import escape

from ..methods import available_methods, get_method
from .app import app, console


def _value(v) -> str:
    """An option value as one token (no spaces), as ``--set key=value`` takes it."""
    if isinstance(v, (tuple, list)):
        return "[" + ",".join(_value(x) for x in v) + "]"
    return "null" if v is None else json.dumps(v) if isinstance(v, bool) else str(v)


def describe_methods(width: int) -> list[str]:
    """One block per method: name and needs, its paper, and its default options, wrapped at ``width`` columns
    between whole words and whole ``key=value`` options."""
    lines: list[str] = []
    wrap = dict(width=max(width, 40), break_long_words=False, break_on_hyphens=False)
    for name in available_methods():
        method = get_method(name)
        needs = ", ".join(sorted(method.requires)) or "nothing but the forget set"
        lines.append(f"{name}  (needs: {needs})")
        lines += textwrap.wrap(method.paper, initial_indent="  ", subsequent_indent="  ", **wrap)
        options = [f"{k}={_value(v)}" for k, v in dataclasses.asdict(method.config).items()]
        lines += textwrap.wrap("  ".join(options), initial_indent="  defaults: ", subsequent_indent="    ", **wrap)
        lines.append("")
    return lines


@app.command()
def methods(json_out: bool = typer.Option(False, "--json", help="print name, needs, paper and defaults as JSON")) -> None:
    """List the unlearning methods with their source and default options (set them with --set key=value)."""
    if json_out:
        doc = [{"name": n, "needs": sorted(get_method(n).requires), "paper": get_method(n).paper,
                "defaults": dataclasses.asdict(get_method(n).config)} for n in available_methods()]
        console.print_json(json.dumps(doc, default=str))
        return
    for line in describe_methods(min(console.width, 100)):
        console.print(escape(line), highlight=False, soft_wrap=True)
