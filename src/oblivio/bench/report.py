"""Benchmark outputs: per-run and aggregated CSVs, a Markdown report and rich tables, all with a machine header.

Conventions (as in the reference code): UA = 100 - forget accuracy, RA/TA = retain/test accuracy,
MIA = MIA-efficacy (SalUn convention: share of forget samples predicted non-member, higher = more
forgotten), AUC = threshold-attack AUC, Avg. Gap = ``audit.gap_to_retrain``'s mean |metric - retrain|
over UA, RA, TA and MIA. Aggregates are mean ± sample standard deviation (ddof=1) over seeds (and
population members). "retrain (other seed)" is a second honest retrain scored like a method: the noise
floor. Ties and "within noise" come from paired bootstrap tests (``significance``); with a population
the per-example metrics (KLoM, F, score, U-LiRA) come from ``population``.
"""
from __future__ import annotations

import csv
import io
import json
import os
import platform
import statistics
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable

import torch
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from .. import __version__
from ..device import device_info
from ..io import atomic_write_text
from .config import NOISE_FLOOR, BenchConfig

PERCENT = ("UA", "RA", "TA", "MIA", "ASR", "forget_acc")
HEAD_COLUMNS = ("scenario", "step", "deleted", "method", "seed", "member")
LABELS = {"forget_acc": "Forget acc", "avg_gap": "Avg. Gap", "seconds": "Time (s)", "time_ratio": "× retrain",
          "RA": "RA", "TA": "TA", "UA": "UA", "MIA": "MIA", "ASR": "ASR", "AUC": "AUC", "KS": "KS",
          "avg_gap_ci": "Avg. Gap 95% CI", "vs_best": "vs best", "vs_noise": "vs noise", "KLoM": "KLoM",
          "KLoM_p95": "KLoM p95", "KLoM_retain": "KLoM retain", "KLoM_test": "KLoM test", "F": "F", "score": "Score",
          "ULiRA_AUC": "U-LiRA AUC", "ULiRA_TPR1": "U-LiRA TPR@1%", "klom_vs_best": "KLoM vs best"}
POPULATION_COLUMNS = ("KLoM", "KLoM_p95", "KLoM_retain", "KLoM_test", "F", "score", "ULiRA_AUC", "ULiRA_TPR1")


@dataclass
class BenchResult:
    """Everything one benchmark run produced; ``files`` maps output kinds to paths."""

    config: BenchConfig
    out: Path
    header: dict
    runs: list[dict]
    summary: list[dict]
    sequential_runs: list[dict] = field(default_factory=list)
    sequential_summary: list[dict] = field(default_factory=list)
    sizes: dict[str, dict] = field(default_factory=dict)
    files: dict[str, Path] = field(default_factory=dict)
    tuning: list[dict] = field(default_factory=list)  # one record per tuned (scenario, method)
    population: list[dict] = field(default_factory=list)  # per (scenario, seed, row): population metrics

    @property
    def errors(self) -> list[dict]:
        return [r for r in self.runs + self.sequential_runs if r.get("error")]

    @property
    def forgot_nothing(self) -> list[dict]:
        """Rows whose method returned a model that forgot nothing measurable (a result, not a failure)."""
        return [r for r in self.runs + self.sequential_runs if r.get("refused") and not r.get("error")]

    @property
    def unchanged(self) -> list[dict]:
        """Rows whose method's own stopping rule found nothing to forget and returned the model unchanged."""
        return [r for r in self.runs + self.sequential_runs if r.get("unchanged")]

    @property
    def warnings(self) -> list[dict]:
        """Rows whose method finished but recorded a warning (e.g. a collapsed retain accuracy)."""
        return [r for r in self.runs + self.sequential_runs if r.get("warnings")]


def cpu_name() -> str:
    """The CPU's model name (Linux), else the platform's processor or machine string."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def git_commit() -> str | None:
    """The checkout's commit (with "+dirty" when tracked files differ), or None outside a git checkout."""
    import subprocess

    here = Path(__file__).parent
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=here, capture_output=True, text=True,
                              timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return head + ("+dirty" if dirty else "")


def machine_header(cfg: BenchConfig, *, wall_seconds: float, computed: int, cached: int,
                   device: torch.device | str | None = None, commit: str | None = None) -> dict:
    """Machine, the device that computed (GPU name, CUDA version), versions, date, seeds and config hash:
    the first lines of every output. ``commit``: the checkout's commit when the run started (else now);
    ``git_commit_at_end`` is added when the checkout changed during the run."""
    info = device_info(device if device is not None else cfg.device)
    now = git_commit()
    commit = commit or now
    return {
        "benchmark": cfg.name,
        "config": cfg.source,
        "config_hash": cfg.hash(),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "platform": platform.platform(),
        "cpu": cpu_name(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads": cfg.threads or torch.get_num_threads(),
        "device": info["device"],
        "gpu": info["gpu"],
        "cuda": info["cuda"],
        "cudnn": info["cudnn"],
        "amp": cfg.amp,
        "deterministic": cfg.deterministic,
        "oblivio": __version__,
        "git_commit": commit,
        **({"git_commit_at_end": now} if now != commit else {}),
        "seeds": list(cfg.seeds),
        "wall_seconds": round(wall_seconds, 1),
        "load_avg_1min_at_end": round(os.getloadavg()[0], 2),
        "cells_computed": computed,
        "cells_cached": cached,
    }


# -- assembling rows ----------------------------------------------------------------------------------
def _rows(cells: list[dict], group: tuple[str, ...]) -> list[dict]:
    """Flatten cells into rows with gaps to (and time ratio against) the retrain cell of the same group."""
    from ..audit import gap_to_retrain

    retrain = {tuple(c.get(g) for g in group): c for c in cells if c["method"] == "retrain" and "metrics" in c}
    members = any("member" in c for c in cells)
    rows = []
    for c in cells:
        row: dict[str, Any] = {k: c[k] for k in HEAD_COLUMNS if k in c}
        if members:
            row["member"] = c.get("member", 0)
        if "metrics" in c:
            m = c["metrics"]
            row |= m
            if "UA" in m:
                row["forget_acc"] = 100.0 - m["UA"]
            gold = retrain.get(tuple(c.get(g) for g in group))
            if gold is not None:
                row |= {k: float(v) for k, v in gap_to_retrain(m, gold["metrics"]).items()}
            row["seconds"] = c["seconds"]
            train_acc = _train_accuracy(c)
            if train_acc is not None:
                row["train_acc"] = train_acc
            if gold is not None and gold["seconds"] > 0:
                row["time_ratio"] = c["seconds"] / gold["seconds"]
        info = c.get("info") or {}
        if info.get("nothing_to_forget"):
            row["unchanged"] = True
            row["note"] = info.get("reason") or "nothing to forget"
        if info.get("forgot_nothing"):
            row["refused"] = True
            row["note"] = info["forgot_nothing"]
        warnings = info.get("warnings") or []
        if warnings:
            row["warnings"] = "; ".join(warnings)
        if c.get("error"):
            row["error"] = c["error"]
            if c.get("refused"):
                row["refused"] = True
        rows.append(row)
    return rows


def _train_accuracy(cell: dict) -> float | None:
    """Accuracy (%) of an original on its whole training set (retain + forget), of a retrain on the retain set."""
    m = cell["metrics"]
    if cell["method"] == "retrain" and "RA" in m:
        return float(m["RA"])
    sizes = cell.get("sizes") or {}
    if cell["method"] == "original" and {"RA", "UA"} <= set(m) and sizes.get("retain") and sizes.get("forget"):
        n_r, n_f = sizes["retain"], sizes["forget"]
        return (m["RA"] * n_r + (100.0 - m["UA"]) * n_f) / (n_r + n_f)
    return None


def _numeric_columns(rows: Iterable[dict]) -> list[str]:
    cols: list[str] = []
    for r in rows:
        for k, v in r.items():
            if k not in HEAD_COLUMNS and isinstance(v, (int, float)) and not isinstance(v, bool) and k not in cols:
                cols.append(k)
    return cols


def aggregate(rows: list[dict], by: tuple[str, ...]) -> list[dict]:
    """Mean and sample std (ddof=1; 0 for one seed) of every numeric column per group, in first-seen order."""
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault(tuple(r.get(k) for k in by), []).append(r)
    cols = _numeric_columns(rows)
    out = []
    for key, members in groups.items():
        ok = [r for r in members if not r.get("error")]
        row: dict[str, Any] = dict(zip(by, key))
        for k in HEAD_COLUMNS:  # carry descriptive columns that every seed shares (e.g. samples deleted)
            values = {r[k] for r in ok if k in r}
            if k not in by and k not in ("seed", "member") and len(values) == 1:
                row[k] = values.pop()
        refused_failed = sum(bool(r.get("refused")) for r in members if r.get("error"))
        row |= {"n": len(ok), "failed": len(members) - len(ok) - refused_failed,
                "refused": sum(bool(r.get("refused")) for r in members),
                "unchanged": sum(bool(r.get("unchanged")) for r in ok), "warned": sum(bool(r.get("warnings")) for r in ok)}
        for c in cols:
            values = [float(r[c]) for r in ok if c in r]
            if values:
                row[f"{c}_mean"] = statistics.fmean(values)
                row[f"{c}_std"] = statistics.stdev(values) if len(values) > 1 else 0.0
        out.append(row)
    return out


def assemble(cfg: BenchConfig, out: Path, header: dict, cells: list[dict], seq_cells: list[dict]) -> BenchResult:
    """Rows per run, summaries per (scenario, method) with ties marked, population metrics, sequential rows."""
    from .population import population_metrics
    from .significance import mark_ties

    runs = _rows(cells, ("seed", "scenario", "member"))
    seq_runs = _rows(seq_cells, ("seed", "step")) if seq_cells else []
    _warn_cumulative_collapse(seq_runs)
    sizes = {c["scenario"]: c["sizes"] for c in cells if c.get("sizes") and c["seed"] == cfg.seeds[0]}
    order = {m: i for i, m in enumerate(["original", "retrain", *cfg.methods])}
    seq_summary = sorted(aggregate(seq_runs, ("step", "method")), key=lambda r: (r["step"], order[r["method"]]))
    summary = aggregate(runs, ("scenario", "method"))
    population, per_example_klom = population_metrics(cells) if cfg.members > 1 else ([], {})
    _merge_population(summary, population)
    mark_ties(summary, runs, list(cfg.scenarios), per_example_klom, seed=cfg.seeds[0])
    mark_ties(seq_summary, seq_runs, sorted({r["step"] for r in seq_summary}), seed=cfg.seeds[0], group="step")
    result = BenchResult(cfg, out, header, runs, summary, seq_runs, seq_summary, sizes)
    result.population = population
    return result


def _merge_population(summary: list[dict], population: list[dict]) -> None:
    """Mean and std over seeds of each population metric, into the summary row of its (scenario, method)."""
    by_row = {(r["scenario"], r["method"]): r for r in summary}
    for agg in aggregate(population, ("scenario", "method")):
        row = by_row.get((agg["scenario"], agg["method"]))
        if row is not None:
            row |= {k: v for k, v in agg.items() if k.endswith(("_mean", "_std")) and not k.startswith("seed")}


def _warn_cumulative_collapse(seq_runs: list[dict]) -> None:
    """Warn on sequential rows whose retain accuracy fell more than the collapse threshold under the first model's.

    Each step's own warning compares with the step before, so a collapse spread over many requests (each
    under the threshold) would otherwise go unnoticed.
    """
    from ..methods.base import COLLAPSE_DROP

    first = {r["seed"]: r["RA"] for r in seq_runs if r["method"] == "original" and r.get("step") == 1 and "RA" in r}
    for r in seq_runs:
        if r["method"] in ("original", "retrain") or "RA" not in r or r.get("seed") not in first:
            continue
        if r["RA"] < first[r["seed"]] - 100 * COLLAPSE_DROP:
            note = (f"cumulative collapse: retain accuracy {r['RA']:.1f}% at step {r['step']} vs {first[r['seed']]:.1f}% "
                    f"for the first model of the sequence")
            r["warnings"] = "; ".join(filter(None, [r.get("warnings"), note]))


# -- tables ------------------------------------------------------------------------------------------
def _fmt(row: dict, col: str) -> str:
    if col in ("vs_best", "vs_noise", "klom_vs_best"):
        return row.get(col, "-")
    if col == "avg_gap_ci":
        return f"[{row['avg_gap_low']:.2f}, {row['avg_gap_high']:.2f}]" if "avg_gap_low" in row else "-"
    if f"{col}_mean" not in row:
        return "-"
    mean, std = row[f"{col}_mean"], row[f"{col}_std"]
    if col in PERCENT or col.startswith("gap_") or col == "avg_gap":
        return f"{mean:.2f} ± {std:.2f}"
    if col == "time_ratio":
        return f"{mean:.3f}"
    if col in POPULATION_COLUMNS and col.startswith("KLoM"):
        return f"{mean:.3f} ± {std:.3f}" if std else f"{mean:.3f}"
    if col in POPULATION_COLUMNS:
        return f"{mean:.3f}" + (f" ± {std:.3f}" if std else "")
    if col == "seconds":
        return f"{mean:.2f} ± {std:.2f}" if mean < 100 else f"{mean:.0f} ± {std:.0f}"
    return f"{mean:.3f} ± {std:.3f}"


def _present(rows: list[dict], cols: Iterable[str]) -> list[str]:
    keys = {"avg_gap_ci": "avg_gap_low"}
    return [c for c in cols if any((keys.get(c, c) in r) or f"{c}_mean" in r for r in rows)]


def _method_label(row: dict) -> str:
    label = row["method"]
    if row.get("failed"):
        label += f" ({row['failed']} failed)"
    if row.get("refused"):
        label += f" ({row['refused']} forgot nothing)"
    if row.get("unchanged"):
        label += f" ({row['unchanged']} unchanged)"
    if row.get("warned"):
        label += f" ({row['warned']} warned)"
    return label


def scenario_tables(result: BenchResult) -> list[tuple[str, list[str], list[list[str]]]]:
    """(title, headers, rows) per scenario: the main results with gaps to retrain and time."""
    tables = []
    for name in result.config.scenarios:
        rows = [r for r in result.summary if r["scenario"] == name]
        cols = _present(rows, ("UA", "RA", "TA", "MIA", "ASR", "AUC", "avg_gap", "avg_gap_ci", "vs_best", "vs_noise",
                               "seconds", "time_ratio"))
        title = f"{name}: {_describe(result.config.scenarios[name])}"
        if name in result.sizes:
            title += " (seed {}: {})".format(result.config.seeds[0], ", ".join(f"{k} {v}" for k, v in result.sizes[name].items()))
        fit = fit_line(rows)
        if fit:
            title += "; " + fit
        tables.append((title, ["Method", *[LABELS.get(c, c) for c in cols]],
                       [[_method_label(r), *[_fmt(r, c) for c in cols]] for r in rows]))
    return tables


def fit_line(rows: list[dict]) -> str:
    """How well the original and the retrain fit: train and test accuracy, mean over seeds (empty if unknown)."""
    parts = []
    for who, train_what in (("original", "train"), ("retrain", "train (retain)")):
        r = next((r for r in rows if r["method"] == who and "train_acc_mean" in r), None)
        if r is not None:
            parts.append(f"{who} {train_what} {r['train_acc_mean']:.1f}% / test {r.get('TA_mean', float('nan')):.1f}%")
    return ", ".join(parts)


def tuning_table(result: BenchResult) -> tuple[str, list[str], list[list[str]]] | None:
    """Per tuned (scenario, method): the validation request, Avg. Gap there with defaults and tuned, the options."""
    if not result.tuning:
        return None
    rows = [[t["scenario"], t["method"], str(t["trials"]), "-", "-", f"failed: {t['error']}", "-"] if t.get("error") else
            [t["scenario"], t["method"], str(t["trials"]),
             "-" if t.get("default_value") is None else f"{t['default_value']:.2f}", f"{t['best_value']:.2f}",
             ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in t["options"].items()),
             t["validation"]] for t in result.tuning]
    title = ("tuning: options picked on a validation request (another forget set of the same kind, scored against "
             "its own retrain), never on the evaluated one; trial 0 = defaults")
    return title, ["Scenario", "Method", "Trials", "Val. gap (defaults)", "Val. gap (tuned)", "Tuned options",
                   "Validation request"], rows


def accuracy_table(result: BenchResult) -> tuple[str, list[str], list[list[str]]]:
    """Per method x scenario: forget/retain/test accuracy, ASR and wall time next to retrain's."""
    retrain = {r["scenario"]: r for r in result.summary if r["method"] == "retrain"}
    cols = _present(result.summary, ("forget_acc", "RA", "TA", "ASR", "seconds"))
    headers = ["Method", "Scenario", *[{"RA": "Retain acc", "TA": "Test acc"}.get(c, LABELS.get(c, c)) for c in cols],
               "Retrain time (s)"]
    order = list(dict.fromkeys(r["method"] for r in result.summary))
    rows = []
    for method in order:
        for r in (r for r in result.summary if r["method"] == method):
            gold = retrain.get(r["scenario"], {})
            rows.append([_method_label(r), r["scenario"], *[_fmt(r, c) for c in cols], _fmt(gold, "seconds")])
    return "Accuracy (%) and wall time per method and scenario", headers, rows


def sequential_table(result: BenchResult) -> tuple[str, list[str], list[list[str]]] | None:
    if not result.sequential_summary:
        return None
    s = result.config.sequential
    rows = result.sequential_summary
    cols = _present(rows, ("UA", "RA", "TA", "MIA", "AUC", "avg_gap", "vs_best", "seconds", "time_ratio"))
    title = (f"sequential: {s.requests} disjoint requests of {100 * s.fraction:g}% of the train pool, each unlearned "
             f"from the previous step's model; UA over everything deleted so far, gap vs retrain at that step; "
             f"vs best: paired bootstrap over the seeds at that step")
    body = [[str(r["step"]), str(r.get("deleted", "-")), _method_label(r),
             *[_fmt(r, c) for c in cols]] for r in rows]
    return title, ["Step", "Deleted", "Method", *[LABELS.get(c, c) for c in cols]], body


def _describe(spec: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in spec.items() if k != "kind" and v is not None) or spec["kind"]


def ranked_by_gap(result: BenchResult, scenario: str) -> list[dict]:
    """The summary rows of ``scenario``'s methods with an Avg. Gap (on some seed), closest to retrain first."""
    return sorted((r for r in result.summary if r["scenario"] == scenario
                   and r["method"] not in ("original", "retrain", NOISE_FLOOR) and "avg_gap_mean" in r),
                  key=lambda r: r["avg_gap_mean"])


def _tie_mark(row: dict) -> str:
    return {"tied": ", tied", "untested": ", untested"}.get(row.get("vs_best", ""), "")


def ranking_table(result: BenchResult, top: int = 3) -> tuple[str, list[str], list[list[str]]]:
    """Per scenario, the methods closest to retrain (lowest mean Avg. Gap), with their time ratio, whether they
    tie the first (paired test), and the noise floor (the other-seed retrain's Avg. Gap)."""
    rows = []
    for name in result.config.scenarios:
        ranked = ranked_by_gap(result, name)
        cells = [f"{r['method']} {r['avg_gap_mean']:.2f} ({r.get('time_ratio_mean', float('nan')):.3f}×{_tie_mark(r)})"
                 for r in ranked[:top]]
        noise = next((r for r in result.summary if r["scenario"] == name and r["method"] == NOISE_FLOOR
                      and "avg_gap_mean" in r), None)
        rows.append([name, *cells, *["-"] * (top - len(cells)), f"{noise['avg_gap_mean']:.2f}" if noise else "-"])
    headers = ["Scenario", *[f"#{i + 1}: Avg. Gap (× retrain time)" for i in range(top)], "Noise floor"]
    title = ("Closest to retrain (lowest mean Avg. Gap; 'tied': not significantly worse than #1, paired bootstrap "
             "95% over seeds x members; noise floor: Avg. Gap of a retrain from another seed)")
    return title, headers, rows


def population_tables(result: BenchResult) -> list[tuple[str, list[str], list[list[str]]]]:
    """Per scenario with a population: every row's per-example metrics against the gold retrains, lowest KLoM first."""
    if result.config.members < 2:
        return []
    n = result.config.members
    cols = ("KLoM", "KLoM_p95", "KLoM_retain", "KLoM_test", "F", "score", "ULiRA_AUC", "avg_gap", "avg_gap_ci",
            "vs_best", "klom_vs_best", "vs_noise", "time_ratio")
    tables = []
    for name in result.config.scenarios:
        rows = sorted((r for r in result.summary if r["scenario"] == name and "KLoM_mean" in r),
                      key=lambda r: r["KLoM_mean"])
        if not rows:
            continue
        present = _present(rows, cols)
        title = (f"{name}: per-example verdict, {n} members per row x seeds {list(result.config.seeds)}, "
                 f"against {n} gold retrains (lowest KLoM first; KLoM, F, U-LiRA on the forget set, KLoM retain / "
                 "test on samples of its size)")
        tables.append((title, ["Method", *[LABELS.get(c, c) for c in present]],
                       [[_method_label(r), *[_fmt(r, c) for c in present]] for r in rows]))
    return tables


def all_tables(result: BenchResult) -> list[tuple[str, list[str], list[list[str]]]]:
    tables = scenario_tables(result)
    seq = sequential_table(result)
    tuning = tuning_table(result)
    return (population_tables(result) + [ranking_table(result)] + tables + ([seq] if seq else [])
            + [accuracy_table(result)] + ([tuning] if tuning else []))


def markdown_table(headers: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def header_lines(header: dict) -> list[str]:
    return [f"{k}: {v}" for k, v in header.items()]


def to_markdown(result: BenchResult) -> str:
    cfg, h = result.config, result.header
    out = [f"# oblivio bench: {cfg.name}", ""]
    out += [f"- {line}" for line in header_lines(h)]
    out += [
        f"- dataset: {cfg.dataset}; model: {cfg.model}; train: {cfg.train}; third-party fraction: "
        f"{cfg.third_party_fraction}",
        "- methods (options): " + ", ".join(f"{m} {o}" if o else m for m, o in cfg.methods.items()),
        *([f"- tuned rows: {', '.join(cfg.tune.methods)} with {cfg.tune.trials} Optuna trials each per scenario "
           "(same budget for every method), options picked on a validation request (see the tuning table)"]
          if cfg.tune else []),
        f"- mean ± sample std over seeds {list(cfg.seeds)}; UA = 100 - forget acc; MIA = MIA-efficacy (SalUn "
        "convention, higher = more forgotten); AUC = threshold attack; Avg. Gap = mean |Δ| to retrain over UA, RA, TA, "
        "MIA; Time = unlearning wall time (training time for original/retrain); × retrain = time / retrain's time; "
        f"{NOISE_FLOOR} = a second honest retrain (the noise floor); vs best / vs noise: paired bootstrap, 95%, over "
        "seeds x population members ('tied' = not significantly worse than the best, 'within' = not significantly "
        "above the noise floor)",
        "",
    ]
    for title, headers, rows in all_tables(result):
        out += [f"## {title}", "", markdown_table(headers, rows), ""]
    if result.errors:
        out += ["## Failed cells", ""]
        out += [f"- {', '.join(f'{k} {r[k]}' for k in HEAD_COLUMNS if k in r)}: {r['error']}" for r in result.errors]
        out.append("")
    for title, rows in (("Forgot nothing (a result: the method's model is measured as it came back)",
                         result.forgot_nothing),
                        ("Returned unchanged (the method's own test found nothing to forget)", result.unchanged)):
        if rows:
            out += [f"## {title}", ""]
            out += [f"- {', '.join(f'{k} {r[k]}' for k in HEAD_COLUMNS if k in r)}: {r.get('note', '')}" for r in rows]
            out.append("")
    if result.warnings:
        out += ["## Warnings", ""]
        out += [f"- {', '.join(f'{k} {r[k]}' for k in HEAD_COLUMNS if k in r)}: {r['warnings']}" for r in result.warnings]
        out.append("")
    return "\n".join(out)


def to_csv(rows: list[dict], header: dict) -> str:
    """CSV text whose first lines are ``# key: value`` comments with the machine header."""
    buf = io.StringIO()
    for line in header_lines(header):
        buf.write(f"# {line}\n")
    cols = list(dict.fromkeys(k for r in rows for k in r))
    writer = csv.DictWriter(buf, fieldnames=cols, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def read_csv(path: str | os.PathLike) -> list[dict]:
    """Rows of a benchmark CSV (skipping the ``#`` header lines), values as strings."""
    with open(path, newline="") as f:
        return list(csv.DictReader(line for line in f if not line.startswith("#")))


def write_report(result: BenchResult) -> None:
    """Write runs.csv, summary.csv, (sequential_*.csv), results.md and results.json into ``result.out``."""
    out, h = result.out, result.header
    files = {"runs": out / "runs.csv", "summary": out / "summary.csv", "markdown": out / "results.md",
             "json": out / "results.json"}
    atomic_write_text(files["runs"], to_csv(result.runs, h))
    atomic_write_text(files["summary"], to_csv(result.summary, h))
    if result.sequential_runs:
        files |= {"sequential_runs": out / "sequential_runs.csv", "sequential_summary": out / "sequential_summary.csv"}
        atomic_write_text(files["sequential_runs"], to_csv(result.sequential_runs, h))
        atomic_write_text(files["sequential_summary"], to_csv(result.sequential_summary, h))
    atomic_write_text(files["markdown"], to_markdown(result))
    doc = {"header": h, "config": result.config.to_dict(), "summary": result.summary, "runs": result.runs,
           "sequential_summary": result.sequential_summary, "sequential_runs": result.sequential_runs,
           "tuning": result.tuning, "population": result.population}
    atomic_write_text(files["json"], json.dumps(doc, indent=1, default=str))
    result.files = files


def print_report(result: BenchResult, console: Console) -> None:
    """Print the header and every table with rich."""
    console.print(f"[bold]oblivio bench: {result.config.name}[/]  " + "  ".join(header_lines(result.header)),
                  highlight=False)
    for title, headers, rows in all_tables(result):
        for table in fit_tables(title, headers, rows, console.width):
            console.print(table)
    for r in result.errors:
        console.print(f"[red]failed[/] {', '.join(f'{k} {r[k]}' for k in HEAD_COLUMNS if k in r)}: {r['error']}",
                      highlight=False)
    for what, rows in (("forgot nothing", result.forgot_nothing), ("unchanged", result.unchanged)):
        for r in rows:
            console.print(f"[yellow]{what}[/] {', '.join(f'{k} {r[k]}' for k in HEAD_COLUMNS if k in r)}: "
                          f"{escape(r.get('note', ''))}", highlight=False)
    for r in result.warnings:
        console.print(f"[yellow]warning[/] {', '.join(f'{k} {r[k]}' for k in HEAD_COLUMNS if k in r)}: {r['warnings']}",
                      highlight=False)


def fit_tables(title: str, headers: list[str], rows: list[list[str]], width: int) -> list[Table]:
    """``rows`` as rich tables no wider than ``width``: cells never wrap or get cut (no "l1-spa…", no
    number broken over two lines); headers may wrap at spaces. When the columns do not fit, they are
    folded into several tables, each repeating the label columns (Method, Scenario, ...)."""
    labels = [i for i, h in enumerate(headers) if i == 0 or h in ("Method", "Scenario")]
    values = [i for i in range(len(headers)) if i not in labels]

    def need(i: int) -> int:  # cell width (never wrapped) or the header's longest word, plus padding and border
        cells = [len(str(r[i])) for r in rows if i < len(r)]
        return max(cells + [max((len(w) for w in str(headers[i]).split()), default=1)]) + 3

    groups: list[list[int]] = [[]]
    used = sum(need(i) for i in labels) + 1
    room = max(width, used + max((need(i) for i in values), default=0))
    for i in values:
        if groups[-1] and used + need(i) > room:
            groups.append([])
            used = sum(need(i) for i in labels) + 1
        groups[-1].append(i)
        used += need(i)
    tables = []
    for n, group in enumerate(groups):
        part = f" ({n + 1}/{len(groups)})" if len(groups) > 1 else ""
        table = Table(title=title + part, title_justify="left")
        for i in labels + group:
            cells = [len(str(r[i])) for r in rows if i < len(r)]
            table.add_column(headers[i], justify="left" if i in labels else "right", no_wrap=True,
                             min_width=max(cells, default=1), overflow="fold")
        for r in rows:
            table.add_row(*[r[i] for i in labels + group])
        tables.append(table)
    return tables
