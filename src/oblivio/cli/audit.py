"""``oblivio audit``: verify an unlearned checkpoint and write audit.json + report.html."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.markup import escape
from rich.table import Table

from ..errors import OblivioError
from ..io import check_writable
from ..device import resolve_device
from ..validation import check_seed
from .app import DEVICE_HELP, StepLog, app, console, threads_option, use_threads
from .ray_options import executor_from_options, gpus_per_task, ray_address, ray_flag

STYLE = {"pass": "bold green", "warn": "bold yellow", "fail": "bold red"}
MAX_SHADOWS = 256
LEGEND = ("UA: unlearning accuracy, 100 - accuracy on the forget set; RA / TA: accuracy on the retain / test set; "
          "MIA: membership-inference efficacy, share of forget samples judged non-members; ASR: backdoor attack "
          "success rate; AUC: threshold attack, forget vs unseen samples (0.5 = no trace); KS: distance between "
          "their confidence distributions (0 = same); Avg. Gap: mean |UA, RA, TA, MIA - retrained's|.")


@app.command()
def audit(
    checkpoint: Path = typer.Option(..., help="unlearned checkpoint written by 'oblivio forget' (.safetensors)"),
    original: Optional[Path] = typer.Option(None, help="original model (default: the path recorded in the checkpoint, if present)"),
    retrained: Optional[Path] = typer.Option(None, help="model retrained without the forget set, for the same split"),
    lira_shadows: int = typer.Option(0, help="shadow models for the LiRA attack (0 = skip; 8 is a good start; "
                                            "--ray trains them in parallel)"),
    population: int = typer.Option(0, help="per-example test against N models retrained on the retain set "
                                           "(0 = skip; 2..256, 16 is a good start; --ray trains them in parallel)"),
    seed: int = 0,
    out: Optional[Path] = typer.Option(None, help="folder for audit.json and report.html (default: the checkpoint's "
                                                  "path with .audit instead of .safetensors, one per audit)"),
    check: bool = typer.Option(False, "--check", help="exit 1 unless forgetting is verified or only proxy-checked: "
                                                      "'not forgotten', over-forgotten, backdoor active, never learned"),
    json_out: bool = typer.Option(False, "--json", help="print audit.json's content instead of the tables"),
    ray: bool = ray_flag(),
    ray_address_: Optional[str] = ray_address(),
    gpus: Optional[float] = gpus_per_task(),
    device: str = typer.Option("auto", help=DEVICE_HELP),
    threads: Optional[int] = threads_option(),
) -> None:
    """Measure forgetting (UA/RA/TA, MIA-efficacy, ASR, attacks, gap to retrain) and write a report.

    Exit status 0, or with --check 1 when the verdict is not forgotten / over-forgotten / backdoor still active /
    the original never learned the forget set; 2 for bad input.
    """
    from ..lm import is_lm_checkpoint

    if is_lm_checkpoint(checkpoint):  # the language-model task: 'oblivio lm audit'
        from .lm import audit as lm_audit

        if retrained is None:
            raise OblivioError("a language-model audit needs --retrained (a model trained without the forgotten authors)")
        if lira_shadows or population or check or original is not None or ray:
            raise OblivioError("--lira-shadows, --population, --check, --original and --ray are for classifiers; "
                               "a language model is audited against --retrained only")
        lm_audit(checkpoint, retrained, None, json_out, threads)
        return
    from ..audit import audit_checkpoint
    from ..audit.reference_models import check_members
    from ..audit.report import write_report

    threads = use_threads(threads)
    check_seed(seed, "--seed")
    dev = resolve_device(device)
    if lira_shadows < 0 or lira_shadows == 1 or lira_shadows > MAX_SHADOWS:
        raise OblivioError(f"--lira-shadows must be 0 (off) or from 2 to {MAX_SHADOWS}, got {lira_shadows}")
    out = out if out is not None else default_out(checkpoint)
    if population:
        check_members(population, "--population")
    if (ray or ray_address_) and not (lira_shadows or population):
        raise typer.BadParameter("--ray trains LiRA shadow models or retrained models in parallel; "
                                 "add --lira-shadows K or --population N")
    for name, path in (("--checkpoint", checkpoint), ("--original", original), ("--retrained", retrained)):
        if path is not None and path.is_dir():
            raise OblivioError(f"{name} {path} is a directory; give the .safetensors file written by oblivio")
    check_writable(out, kind="dir", what="--out", need_bytes=8 << 20)  # before the audit runs
    log = StepLog()
    extras = [f"{lira_shadows} LiRA shadow models" if lira_shadows else "",
              f"{population} retrained models" if population else ""]
    log.step(f"auditing {checkpoint}" + (f" with {' and '.join(e for e in extras if e)}" if any(extras) else ""))
    with log.waiting("measuring"), executor_from_options(ray, ray_address_, gpus) as executor:
        result = audit_checkpoint(checkpoint, original=original, retrained=retrained, lira_shadows=lira_shadows,
                                  seed=seed, executor=executor, device=dev, population=population)
    json_path, html_path = write_report(result, out)
    if json_out:
        console.print_json(json_path.read_text())
        _exit_for(result.verdict, check)
        return
    for note in result.notes:
        style = "yellow" if "missing" in note else "dim"
        console.print(f"[{style}]note: {escape(note)}[/]", highlight=False)
    table = Table(title="audit (percent; AUC/KS in 0..1)")
    table.add_column("metric", overflow="fold")
    roles = [r for r in ("original", "unlearned", "retrained") if r in result.metrics]
    for role in roles:
        table.add_column(role, justify="right", no_wrap=True)
    for key in result.metrics["unlearned"]:
        fmt = "{:.3f}" if key in ("AUC", "KS") else "{:.2f}"
        table.add_row(key, *[fmt.format(result.metrics[r][key]) for r in roles])
    if result.lira:
        table.add_row("LiRA AUC", *[f"{result.lira['results'][r]['AUC']:.3f}" for r in roles])
    if "unlearned" in result.gap:
        table.add_row("Avg. Gap", *[f"{result.gap[r]['avg_gap']:.2f}" if r in result.gap else "0.00" for r in roles])
    console.print(table)
    console.print(LEGEND, style="dim", highlight=False)
    if result.population:
        _print_population(result)
    v = result.verdict
    console.print(f"[{STYLE[v['status']]}]{escape(v['headline'])}[/]", highlight=False)
    console.print(f"wrote {json_path} and {html_path} ({threads} thread{'s' * (threads > 1)})", highlight=False)
    _exit_for(v, check)


def default_out(checkpoint: Path) -> Path:
    """The report folder of one audit: ``runs/forget.safetensors`` -> ``runs/forget.audit``."""
    return checkpoint.with_name(checkpoint.name.removesuffix(".safetensors") + ".audit")


def _exit_for(verdict: dict, check: bool) -> None:
    """With --check, exit 1 when forgetting failed or there was nothing to forget."""
    if check and (verdict["status"] == "fail" or verdict.get("never_learned")):
        raise typer.Exit(1)


def _print_population(result) -> None:
    """The per-example test: flagged forget samples per model and the retrained noise floor (fits 80 columns)."""
    pop = result.population
    n_forget = result.split["sizes"]["forget"]
    table = Table(title=f"per-example test vs {pop['members']} retrained models (BH, FDR 5%)")
    table.add_column("model", overflow="fold")
    for name in ("flagged", "share", "held-out", "median z", "over"):
        table.add_column(name, justify="right", no_wrap=True)
    for role in [r for r in ("original", "unlearned", "retrained") if r in pop["flagged"]]:
        f = pop["flagged"][role]
        held = f"{100 * f['held_out']['share']:.1f}%" if "held_out" in f else "–"
        over = f.get("over_forgotten", {}).get("count")
        table.add_row(role, f"{f['count']} of {n_forget}", f"{100 * f['share']:.1f}%", held,
                      f"{pop['z'][role]['median']:.2f}", "–" if over is None else str(over))
    if pop["noise_floor_share"] is not None:
        floor, held = pop["noise_floor_share"], pop.get("noise_floor_held_out_share")
        table.add_row("retrained, left out", f"{floor * n_forget:.1f} of {n_forget}", f"{100 * floor:.1f}%",
                      f"{100 * held:.1f}%" if held is not None else "–", f"{pop['z']['retrained_left_out']['median']:.2f}",
                      "–")
    console.print(table)
    console.print("[dim]held-out: never-seen samples flagged by the same test (a control); over: forget samples "
                  "far less confident than under every retrained model (over-forgotten)[/]")
    console.print(f"[bold]per-example:[/] {escape(pop['verdict'])}", highlight=False)
