"""A self-contained HTML audit report (inline CSS, matplotlib PNGs embedded as base64) and ``audit.json``."""
from __future__ import annotations

import base64
import io
import json
import os
from html import escape
from pathlib import Path

import numpy as np

from ..io import atomic_files, check_writable, output_lock, recover_files

ROLE_LABEL = {"original": "original (before)", "unlearned": "unlearned (after)", "retrained": "retrained (gold standard)"}
ROLE_COLOR = {"original": "#9ca3af", "unlearned": "#2563eb", "retrained": "#16a34a"}
LINE = {"original": {"lw": 2.5, "ls": (0, (4, 2))}, "unlearned": {"lw": 2}, "retrained": {"lw": 2}}
FORGET_COLOR, REFERENCE_COLOR = "#e4572e", "#4c78a8"
STATUS = {"pass": ("#15803d", "#dcfce7", "✓"), "warn": ("#b45309", "#fef3c7", "!"), "fail": ("#b91c1c", "#fee2e2", "✗")}
UNITS = {"UA": "%", "RA": "%", "TA": "%", "MIA": "%", "ASR": "%", "AUC": "0–1", "KS": "0–1"}
NAMES = {"UA": "Unlearning accuracy (UA)", "RA": "Retain accuracy (RA)", "TA": "Test accuracy (TA)",
         "MIA": "MIA-efficacy", "ASR": "Backdoor attack success (ASR)", "AUC": "Threshold-attack AUC",
         "KS": "KS distance (confidences)"}


def _figure_png(fig) -> str:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    plt.rcParams.update({"font.size": 10, "axes.spines.top": False, "axes.spines.right": False,
                         "axes.titleweight": "bold", "axes.titlesize": 11})
    return plt


def histogram_figure(result) -> str:
    """Histograms of the logit-scaled true-label confidence, forget vs reference samples, per model."""
    plt = _plt()
    roles = [r for r in ROLE_LABEL if r in result.curves]
    fig, axes = plt.subplots(1, len(roles), figsize=(4.2 * len(roles), 3.1), sharey=True, squeeze=False)
    allphi = np.concatenate([np.concatenate([result.curves[r]["phi_forget"], result.curves[r]["phi_reference"]]) for r in roles])
    lo, hi = np.percentile(allphi, [0.5, 99.5])
    bins = np.linspace(lo, hi, 40)
    for ax, role in zip(axes[0], roles):
        c = result.curves[role]
        ax.hist(np.clip(c["phi_reference"], lo, hi), bins=bins, density=True, alpha=0.55, color=REFERENCE_COLOR, label="held-out reference")
        ax.hist(np.clip(c["phi_forget"], lo, hi), bins=bins, density=True, alpha=0.55, color=FORGET_COLOR, label="forget set")
        m = result.metrics[role]
        ax.set_title(f"{ROLE_LABEL[role]}\nAUC {m['AUC']:.3f} · KS {m['KS']:.3f}")
        ax.set_xlabel("confidence in true label, log p/(1−p)")
        top = ax.secondary_xaxis("top")
        ticks: list[float] = []
        for t in (0.5, 0.01, 0.99, 0.9999, 1e-4, 0.999999, 1e-6, 1 - 1e-9, 1e-9):
            x = np.log(t / (1 - t))
            if lo <= x <= hi and all(abs(x - np.log(u / (1 - u))) > (hi - lo) / 7 for u in ticks):
                ticks.append(t)
        top.set_xticks([np.log(t / (1 - t)) for t in ticks], [f"{t:g}" for t in ticks])
        top.tick_params(labelsize=8, colors="#6b7280")
    axes[0][0].set_ylabel("density")
    axes[0][0].legend(frameon=False, fontsize=9, loc="upper left")
    fig.tight_layout()
    return _figure_png(fig)


def bars_figure(result) -> str:
    """Grouped bars of the percent metrics, and of AUC / KS (/ LiRA AUC), for each model."""
    plt = _plt()
    roles = [r for r in ROLE_LABEL if r in result.metrics]
    pct = [k for k in ("UA", "RA", "TA", "MIA", "ASR") if k in result.metrics["unlearned"]]
    unit = ["AUC", "KS"] + (["LiRA AUC"] if result.lira else [])
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 3.4), gridspec_kw={"width_ratios": [len(pct), len(unit) + 0.6]})
    width = 0.8 / len(roles)
    for i, role in enumerate(roles):
        vals = [result.metrics[role][k] for k in pct]
        x = np.arange(len(pct)) + (i - (len(roles) - 1) / 2) * width
        bars = a1.bar(x, vals, width, color=ROLE_COLOR[role], label=ROLE_LABEL[role])
        a1.bar_label(bars, fmt="%.1f", fontsize=7, padding=1)
        uvals = [result.metrics[role]["AUC"], result.metrics[role]["KS"]]
        if result.lira:
            uvals.append(result.lira["results"][role]["AUC"])
        x2 = np.arange(len(unit)) + (i - (len(roles) - 1) / 2) * width
        bars = a2.bar(x2, uvals, width, color=ROLE_COLOR[role])
        a2.bar_label(bars, fmt="%.2f", fontsize=7, padding=1)
    a1.set_xticks(range(len(pct)), pct)
    a1.set_ylabel("percent")
    a1.set_ylim(0, 112)
    a1.legend(frameon=False, fontsize=8, ncol=len(roles), loc="upper center", bbox_to_anchor=(0.5, -0.12))
    a2.set_xticks(range(len(unit)), unit)
    a2.set_ylim(0, 1.12)
    a2.axhline(0.5, color="#6b7280", lw=0.8, ls="--")
    a2.text(-0.45, 1.0, "dashed: chance AUC 0.5", ha="left", va="bottom", fontsize=7, color="#6b7280")
    a1.set_title("accuracy-based metrics")
    a2.set_title("attack metrics")
    fig.tight_layout()
    return _figure_png(fig)


def roc_figure(result) -> str:
    """ROC curves of the threshold attack (linear axes) and, when run, LiRA (log-log, low-FPR regime)."""
    plt = _plt()
    roles = [r for r in ROLE_LABEL if r in result.curves]
    panels = 2 if result.lira else 1
    fig, axes = plt.subplots(1, panels, figsize=(5.2 * panels, 4.0), squeeze=False)
    ax = axes[0][0]
    for role in roles:
        c = result.curves[role]
        ax.plot(c["threshold_fpr"], c["threshold_tpr"], color=ROLE_COLOR[role], **LINE[role],
                label=f"{ROLE_LABEL[role]}  AUC {result.metrics[role]['AUC']:.3f}")
    ax.plot([0, 1], [0, 1], color="#6b7280", ls="--", lw=0.8)
    ax.set(xlabel="false-positive rate", ylabel="true-positive rate", title="threshold attack (confidence / loss)")
    ax.legend(frameon=False, fontsize=8, loc="lower right")
    if result.lira:
        ax = axes[0][1]
        floor = 1.0 / max(result.split["sizes"]["reference"], 1)
        for role in roles:
            c = result.curves[role]
            ax.plot(np.maximum(c["lira_fpr"], floor / 2), np.maximum(c["lira_tpr"], floor / 2), color=ROLE_COLOR[role], **LINE[role],
                    label=f"{ROLE_LABEL[role]}  AUC {result.lira['results'][role]['AUC']:.3f}")
        grid = np.logspace(np.log10(floor / 2), 0, 50)
        ax.plot(grid, grid, color="#6b7280", ls="--", lw=0.8)
        ax.set(xscale="log", yscale="log", xlabel="false-positive rate", ylabel="true-positive rate",
               title=f"LiRA offline, {result.lira['shadows']} shadows")
        ax.legend(frameon=False, fontsize=8, loc="lower right")
    fig.tight_layout()
    return _figure_png(fig)


def population_figure(result) -> str:
    """Per forget sample, each model's z against the retrained population, and the z histograms per model."""
    plt = _plt()
    pop, c = result.population, result.curves["population"]
    roles = [r for r in ROLE_LABEL if f"z_{r}" in c]
    order = np.argsort(c["z_unlearned"] if "z_unlearned" in c else c[f"z_{roles[0]}"], kind="stable")
    rank = np.arange(len(order))
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 3.8), gridspec_kw={"width_ratios": [1.6, 1]})
    left_out = c.get("z_left_out")
    if left_out is not None:
        shown = left_out[: max(1, 20000 // left_out.shape[1])]  # a readable number of dots for large forget sets
        a1.scatter(np.tile(rank, len(shown)), shown[:, order].ravel(), s=4, color="#d1d5db", lw=0,
                   label="retrained, left out", zorder=1)
    for role in roles:
        z, flag = c[f"z_{role}"][order], c[f"flagged_{role}"][order]
        marker = {"original": "D", "retrained": "s"}.get(role, "o")
        a1.scatter(rank, z, s=9 if role == "unlearned" else 7, marker=marker, color=ROLE_COLOR[role], lw=0,
                   label=ROLE_LABEL[role], zorder=3 if role == "unlearned" else 2)
        if flag.any():
            a1.scatter(rank[flag], z[flag], s=40, facecolors="none", edgecolors=FORGET_COLOR, lw=1.1, zorder=4,
                       label="flagged (BH, FDR 5%)" if role == roles[0] else None)
    for role, ls in (("unlearned", "--"), ("original", ":")):
        if role in roles:
            a1.axhline(pop["flagged"][role]["z_threshold"], color=ROLE_COLOR[role], ls=ls, lw=1,
                       label=f"BH cutoff, {role}")
    a1.set(xlabel="forget samples, ranked by the unlearned model's z" if "z_unlearned" in c else "forget samples, ranked",
           ylabel="z vs retrained population", title=f"each forget sample against {pop['members']} retrained models")
    a1.legend(frameon=False, fontsize=7, loc="upper left", ncol=2)
    values = [c[f"z_{r}"] for r in roles] + ([left_out.ravel()] if left_out is not None else [])
    lo, hi = np.percentile(np.concatenate(values), [0.5, 99.5])
    lo, hi = min(lo, -4.0), max(hi, 4.0)
    bins = np.linspace(lo, hi, 40)
    if left_out is not None:
        a2.hist(np.clip(left_out.ravel(), lo, hi), bins=bins, density=True, color="#d1d5db", label="retrained, left out")
    for role in roles:
        a2.hist(np.clip(c[f"z_{role}"], lo, hi), bins=bins, density=True, histtype="step", color=ROLE_COLOR[role],
                lw=LINE[role]["lw"], ls=LINE[role].get("ls", "-"), label=ROLE_LABEL[role])
    grid = np.linspace(lo, hi, 200)
    a2.plot(grid, np.exp(-grid ** 2 / 2) / np.sqrt(2 * np.pi), color="#111827", lw=0.8, label="N(0, 1)")
    a2.set(xlabel="z (clipped to the shown range)", ylabel="density", title="z per model")
    a2.legend(frameon=False, fontsize=7, loc="upper right")
    fig.tight_layout()
    return _figure_png(fig)


def _population_section(result) -> str:
    """'Per-example test against N retrained models': headline, flagged counts per model and noise floor, figure."""
    pop = getattr(result, "population", None)
    if not pop:
        return ""
    n_forget = result.split["sizes"]["forget"]
    rows = []
    for role in [r for r in ROLE_LABEL if r in pop["flagged"]]:
        f, z = pop["flagged"][role], pop["z"][role]
        held = f"{100 * f['held_out']['share']:.1f}%" if "held_out" in f else "–"
        over = f.get("over_forgotten", {}).get("count", "–")
        rows.append(f"<tr><th>{escape(ROLE_LABEL[role])}</th><td>{f['count']} of {n_forget}</td><td>{100 * f['share']:.1f}%</td>"
                    f"<td>{held}</td><td>{z['median']:.2f}</td><td>{z['p95']:.2f}</td><td>{over}</td></tr>")
    floor, held = pop["noise_floor_share"], pop.get("noise_floor_held_out_share")
    if floor is not None:
        z = pop["z"]["retrained_left_out"]
        rows.append(f"<tr class=strong><th>retrained models, each left out (noise floor)</th><td>{floor * n_forget:.1f} "
                    f"of {n_forget} on average</td><td>{100 * floor:.1f}%</td>"
                    f"<td>{'–' if held is None else f'{100 * held:.1f}%'}</td><td>{z['median']:.2f}</td><td>{z['p95']:.2f}</td>"
                    "<td>–</td></tr>")
    else:
        rows.append("<tr><th>retrained models, each left out (noise floor)</th><td colspan=6>needs at least 3 retrained "
                    "models</td></tr>")
    table = ("<table class=numbers><thead><tr><th>model</th><th>flagged forget samples</th><th>share</th>"
             "<th>held-out samples flagged (control)</th><th>median z</th><th>95th pct. z</th>"
             "<th>over-forgotten</th></tr></thead>"
             f"<tbody>{''.join(rows)}</tbody></table>")
    cfg = pop["train_config"]
    flagged = pop["flagged"].get("unlearned", {}).get("train_indices", [])
    listed = ""
    if flagged:
        more = f" and {len(flagged) - 50} more (all in audit.json)" if len(flagged) > 50 else ""
        listed = (f"<p class=caption>Flagged forget samples of the unlearned model (training-set indices): "
                  f"{escape(', '.join(map(str, flagged[:50])))}{escape(more)}</p>")
    return f"""<h2>Per-example test against {pop['members']} retrained models</h2>
<div class=popline>{escape(pop['verdict'])}</div>
<p class=caption>{pop['members']} models were trained from scratch on the retain set with the original's recipe
({escape(str(cfg['arch']))}, {cfg['train']['epochs']} epochs, lr {cfg['train']['lr']}, {escape(str(cfg['train']['optimizer']))};
{pop['seconds_per_member']:.1f} s each), so none of them saw a forget sample. For each forget sample, the logit-scaled
confidence under them gives a Gaussian; a model's z says how far above it the model's confidence lies, and a sample is
flagged (still looks trained-on) when Benjamini–Hochberg rejects it at a false discovery rate of {100 * pop['fdr']:.0f}%
over the {n_forget} forget samples. The noise floor is what the test flags for an honest retrain: each retrained model
in turn tested against the others (Hayes et al., SaTML 2025). The control applies the same test to held-out
samples that no model trained on: a model flagged there too is more confident than the retrained models on unseen
data as well, and its flagged forget samples say less about memorisation. Over-forgotten samples fail the same test
on the lower tail: far less confident than under every retrained model, which an attacker can detect too.</p>
{table}
<img alt="per-example z against the retrained population" src="{population_figure(result)}">
{listed}"""


def _fmt(value: float | None, unit: str) -> str:
    if value is None:
        return "–"
    return f"{value:.3f}" if unit == "0–1" else f"{value:.2f}"


def _numbers_table(result) -> str:
    roles = [r for r in ROLE_LABEL if r in result.metrics]
    has_gap = "unlearned" in result.gap
    head = "".join(f"<th>{escape(ROLE_LABEL[r])}</th>" for r in roles) + ("<th>|unlearned − retrained|</th>" if has_gap else "")
    rows = []
    for key in [k for k in UNITS if k in result.metrics["unlearned"]]:
        cells = "".join(f"<td>{_fmt(result.metrics[r].get(key), UNITS[key])}</td>" for r in roles)
        if has_gap:
            cells += f"<td>{_fmt(abs(result.metrics['unlearned'][key] - result.metrics['retrained'][key]), UNITS[key])}</td>"
        rows.append(f"<tr><th>{escape(NAMES[key])}</th><td class=unit>{UNITS[key]}</td>{cells}</tr>")
    if has_gap:
        cells = "".join(f"<td>{result.gap[r]['avg_gap']:.2f}</td>" if r in result.gap else "<td>0.00</td>" for r in roles)
        rows.append(f"<tr class=strong><th>Avg. Gap to retrain (UA, RA, TA, MIA)</th><td class=unit>pts</td>{cells}<td></td></tr>")
    if result.lira:
        for key, unit in (("AUC", "0–1"), ("TPR@1%FPR", "%"), ("TPR@0.1%FPR", "%")):
            cells = "".join(f"<td>{_fmt(result.lira['results'][r][key], unit)}</td>" for r in roles)
            rows.append(f"<tr><th>LiRA {escape(key)}</th><td class=unit>{unit}</td>{cells}{'<td></td>' if has_gap else ''}</tr>")
    t = result.time
    if t.get("seconds") is not None or t.get("retrain_seconds") is not None:
        times = {"original": None, "unlearned": t.get("seconds"), "retrained": t.get("retrain_seconds")}
        cells = "".join(f"<td>{times[r]:.2f}</td>" if times[r] is not None else "<td>–</td>" for r in roles)
        ratio = f"ratio {t['ratio']:.3f}" if t.get("ratio") is not None else ""
        rows.append(f"<tr><th>Wall time of the run</th><td class=unit>s</td>{cells}{'<td>' + ratio + '</td>' if has_gap else ''}</tr>")
    return f"<table class=numbers><thead><tr><th>metric</th><th>unit</th>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def _checks_table(v: dict) -> str:
    rows = []
    for c in v["checks"]:
        rule = {"close": "within ±", "at_most": "at most +", "at_least": "at least −"}[c["rule"]]
        mark = "<span class=ok>✓</span>" if c["ok"] else "<span class=bad>✗</span>"
        rows.append(f"<tr><td>{mark}</td><th>{escape(c['name'])}</th><td>{c['value']:.2f}%</td>"
                    f"<td>{c['reference']:.2f}% ({escape(c['reference_is'])})</td><td>{rule}{c['tolerance']:.2f} pts</td></tr>")
    return ("<table class=checks><thead><tr><th></th><th>check</th><th>unlearned</th><th>reference</th><th>rule</th>"
            f"</tr></thead><tbody>{''.join(rows)}</tbody></table>")


def _chips(result) -> str:
    m = result.metrics
    chips = []

    def chip(title: str, key: str, transform=lambda v: v, unit="%"):
        parts = []
        for role in ("original", "unlearned", "retrained"):
            if role in m and key in m[role]:
                cls = "now" if role == "unlearned" else ""
                parts.append(f"<span class='{cls}' title='{role}'>{transform(m[role][key]):.1f}{unit}</span>")
        chips.append(f"<div class=chip><div class=label>{escape(title)}</div><div class=vals>{' → '.join(parts)}</div></div>")

    chip("forget-set accuracy", "UA", lambda v: 100 - v)
    chip("MIA-efficacy", "MIA")
    if "ASR" in m["unlearned"]:
        chip("backdoor ASR", "ASR")
    chip("test accuracy", "TA")
    if "unlearned" in result.gap:
        chips.append(f"<div class=chip><div class=label>Avg. Gap to retrain</div><div class=vals><span class=now>"
                     f"{result.gap['unlearned']['avg_gap']:.2f} pts</span></div></div>")
    legend = " → ".join(r for r in ("original", "unlearned", "retrained") if r in m)
    return f"<div class=chips>{''.join(chips)}</div><p class=legend>values: {escape(legend)}</p>"


CSS = """
body{font-family:-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif;margin:0;background:#f8fafc;color:#111827}
main{max-width:1120px;margin:0 auto;padding:28px 32px 48px}
h1{font-size:22px;margin:0 0 4px} h2{font-size:17px;margin:34px 0 8px;border-bottom:1px solid #e5e7eb;padding-bottom:6px}
.sub{color:#4b5563;margin:0 0 18px;font-size:14px}
.verdict{border-radius:10px;padding:16px 20px;display:flex;gap:16px;align-items:center;border:1px solid}
.verdict .icon{font-size:30px;font-weight:700;width:46px;height:46px;border-radius:50%;display:flex;align-items:center;justify-content:center;color:#fff;flex:none}
.verdict .text{font-size:18px;font-weight:600;line-height:1.35}
.chips{display:flex;flex-wrap:wrap;gap:10px;margin-top:14px}
.chip{background:#fff;border:1px solid #e5e7eb;border-radius:8px;padding:8px 12px;min-width:150px}
.chip .label{font-size:12px;color:#6b7280;text-transform:uppercase;letter-spacing:.03em}
.chip .vals{font-size:16px;margin-top:2px;color:#6b7280} .chip .now{color:#111827;font-weight:700}
.legend{font-size:12px;color:#6b7280;margin:6px 0 0}
img{max-width:100%;background:#fff;border:1px solid #e5e7eb;border-radius:8px}
table{border-collapse:collapse;background:#fff;font-size:13px;margin:6px 0}
th,td{border-bottom:1px solid #e5e7eb;padding:6px 10px;text-align:right} th:first-child,td:first-child{text-align:left}
thead th{background:#f1f5f9;font-weight:600} tbody th{font-weight:500;text-align:left}
td.unit{color:#6b7280;text-align:left} tr.strong th,tr.strong td{font-weight:700}
.ok{color:#15803d;font-weight:700} .bad{color:#b91c1c;font-weight:700}
.caption{font-size:13px;color:#4b5563;margin:4px 0 10px;max-width:900px}
.popline{font-size:16px;font-weight:600;background:#fff;border:1px solid #e5e7eb;border-left:4px solid #2563eb;border-radius:6px;padding:10px 14px;margin:6px 0 8px}
dl{font-size:13px;display:grid;grid-template-columns:140px 1fr;gap:4px 14px;margin:8px 0} dt{font-weight:600} dd{margin:0;color:#374151}
code{font-size:12px;background:#f1f5f9;padding:1px 4px;border-radius:3px}
footer{margin-top:36px;font-size:12px;color:#6b7280}
"""


def render_html(result) -> str:
    """The report as one self-contained HTML page (no external assets)."""
    from .core import CONVENTIONS

    v = result.verdict
    fg, bg, icon = STATUS[v["status"]]
    split = result.split
    scenario = ", ".join(f"{k}={','.join(map(str, val)) if isinstance(val, (list, tuple)) else val}"
                         for k, val in split["scenario"].items() if val is not None and k != "kind")
    method = (result.method or {}).get("method") or "unknown method"
    sizes = ", ".join(f"{k} {n}" for k, n in split["sizes"].items())
    basis = "compared with a retrained model" if v["basis"] == "retrained" else "no retrained model given: proxy checks"
    lira_text = ""
    if result.lira:
        cfg = result.lira["config"]
        lira_text = (f"<p class=caption>LiRA: {result.lira['shadows']} shadow models ({escape(str(cfg['arch']))}, "
                     f"{cfg['train']['epochs']} epochs, lr {cfg['train']['lr']}, {cfg['train']['optimizer']}), each trained on a "
                     f"balanced random half of train pool + third-party pool ({result.lira['seconds_per_shadow']:.1f} s per shadow). "
                     f"With {split['sizes']['reference']} reference samples, FPRs below {100 / split['sizes']['reference']:.2f}% "
                     "cannot be resolved; TPR at a target FPR is the best TPR whose FPR does not exceed it.</p>")
    conventions = "".join(f"<dt>{escape(k)}</dt><dd>{escape(text)}</dd>" for k, text in CONVENTIONS.items())
    hashes = ", ".join(f"{k} <code>{escape(str(h))}</code>" for k, h in result.models.items() if h)
    split_hashes = ", ".join(f"{k} <code>{h}</code>" for k, h in split["hashes"].items())
    notes = "".join(f"<li>{escape(n)}</li>" for n in result.notes)
    method_cfg = (result.method or {}).get("config")
    return f"""<!doctype html>
<html lang=en><head><meta charset=utf-8><title>oblivio audit: {escape(method)} on {escape(split['dataset'])}</title>
<style>{CSS}</style></head><body><main>
<h1>Unlearning audit: {escape(method)} on {escape(split['dataset'])}</h1>
<p class=sub>scenario <b>{escape(split['scenario']['kind'])}</b> ({escape(scenario)}) · seed {result.seed} · {escape(basis)}</p>
<div class=verdict style="background:{bg};border-color:{fg}"><div class=icon style="background:{fg}">{icon}</div>
<div class=text style="color:{fg}">{escape(v['headline'])}</div></div>
{_chips(result)}
<h2>Checks behind the verdict</h2>
<p class=caption>Each check compares a rate of the unlearned model with the reference's rate on the same samples. Tolerance: max(2 points, 2 standard errors of the difference of two such rates, √2 × the Agresti–Coull binomial SE of the reference).</p>
{_checks_table(v)}
<h2>Confidence on forget vs held-out samples</h2>
<p class=caption>Each panel: how confident the model is in the true label of forget samples (orange) and of held-out
reference samples it never trained on (blue: {escape(split['reference'])}). A model that memorised the forget set puts them
further right; after successful unlearning the two histograms overlap as they do for the retrained model.</p>
<img alt="confidence histograms" src="{histogram_figure(result)}">
<h2>Metrics per model</h2>
<img alt="metric bars" src="{bars_figure(result)}">
<h2>Membership-inference attacks</h2>
<p class=caption>Attacks try to tell forget samples (members of the original training set) from held-out reference
samples. A curve on the diagonal (AUC 0.5) means the model treats the forget set like data it never saw.</p>
<img alt="ROC curves" src="{roc_figure(result)}">
{lira_text}
{_population_section(result)}
<h2>All numbers</h2>
{_numbers_table(result)}
<h2>Setup</h2>
<dl><dt>dataset</dt><dd>{escape(split['dataset'])} · sizes: {escape(sizes)}</dd>
<dt>method</dt><dd>{escape(method)}{' · config <code>' + escape(json.dumps(method_cfg)) + '</code>' if method_cfg else ''}</dd>
<dt>model hashes</dt><dd>{hashes}</dd><dt>split hashes</dt><dd>{split_hashes}</dd></dl>
{'<ul class=caption>' + notes + '</ul>' if notes else ''}
<h2>Conventions</h2><dl>{conventions}</dl>
<footer>oblivio audit · numbers also in audit.json</footer>
</main></body></html>
"""


def write_report(result, out_dir: str | os.PathLike) -> tuple[Path, Path]:
    """Write ``audit.json`` and ``report.html`` into ``out_dir`` (each atomically); return both paths."""
    doc, html = json.dumps(result.to_dict(), indent=2), render_html(result)  # render first: nothing written on error
    return write_audit_files(out_dir, doc, html)


def write_audit_files(out_dir: str | os.PathLike, doc: str, html: str) -> tuple[Path, Path]:
    """Write ``doc`` as ``audit.json`` and ``html`` as ``report.html`` into ``out_dir``: both or neither (a
    crash mid-write is recovered on the next write); return both paths."""
    out = check_writable(out_dir, kind="dir", what="audit output")
    json_path, html_path = out / "audit.json", out / "report.html"
    with output_lock(json_path, what="--out"):
        recover_files([json_path, html_path])
        with atomic_files([json_path, html_path]) as tmp:  # both or neither (a full disk keeps the previous pair)
            tmp[json_path].write_text(doc)
            tmp[html_path].write_text(html)
    return json_path, html_path
