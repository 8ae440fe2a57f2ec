"""The language-model benchmark: TOFU-style forgetting of 1 / 5 / 10 % of fictitious authors, every LM method.

Per seed: one corpus and tokenizer, one original trained on all non-held-out authors (shared by every forget
percentage). Per (seed, forget %): the gold retrain (the forget-quality reference), a second retrain with
another seed (the noise floor), and each method on the original. Rows: forget quality (KS p-value against
the gold retrain's forget truth ratios), model utility, forget ROUGE-L, MIA AUC by loss / zlib / min-k %
(forget vs holdout authors), fluency (n-gram entropy of the forget answers) and time as a multiple of the
retrain's; each output opens with the commit, machine, date and seeds. Config: a YAML mapping with
``task: lm`` (see ``benchmarks/lm-tofu.yaml``).
"""
from __future__ import annotations

import json
import os
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import OblivioError

METRICS = ("forget_quality", "utility", "forget_rouge", "fluency", "mia_loss", "mia_zlib", "mia_min_k")
UTILITY_TOLERANCE = 0.02  # dm's target: utility within 2 % of the retrain's


@dataclass
class LMBenchConfig:
    n_authors: int = 100
    arch: str = "gpt2"
    size: str = "cpu"
    train: dict = field(default_factory=lambda: {"steps": 400, "lr": 0.01, "batch_size": 64})
    forget_percents: list = field(default_factory=lambda: [1, 5, 10])
    seeds: list = field(default_factory=lambda: [0, 1, 2])
    methods: list = field(default_factory=lambda: ["ga", "graddiff", "npo", "simnpo", "idkdpo", "rmu", "dm"])
    options: dict = field(default_factory=dict)
    threads: int = 1


def load_config(path: str | Path) -> LMBenchConfig:
    """An ``LMBenchConfig`` from YAML; unknown keys, a wrong task and unknown methods are one-line errors."""
    import yaml

    from ..yaml_text import load_yaml
    from .methods import LM_METHODS

    path = Path(path)
    if not path.is_file():
        raise OblivioError(f"bench config not found: {path}")
    try:
        raw = load_yaml(path.read_text())
    except yaml.YAMLError as e:
        raise OblivioError(f"{path} is not valid YAML: {str(e).splitlines()[0]}") from None
    if not isinstance(raw, dict):
        raise OblivioError(f"{path} must hold a YAML mapping")
    if raw.pop("task", "lm") != "lm":
        raise OblivioError(f"{path}: a language-model bench needs 'task: lm'")
    raw.pop("name", None)
    known = set(LMBenchConfig.__dataclass_fields__)
    unknown = sorted(set(raw) - known)
    if unknown:
        raise OblivioError(f"{path}: unknown key {unknown[0]!r}; keys: {', '.join(sorted(known))}")
    cfg = LMBenchConfig(**raw)
    bad = [m for m in cfg.methods if m not in LM_METHODS or m == "retrain"]
    if bad:
        raise OblivioError(f"{path}: unknown method {bad[0]!r}; choose from "
                           f"{', '.join(sorted(set(LM_METHODS) - {'retrain'}))} (retrain always runs)")
    if not cfg.seeds or not cfg.forget_percents:
        raise OblivioError(f"{path}: seeds and forget_percents must not be empty")
    return cfg


def run_bench(cfg: LMBenchConfig, log=print, source: str | None = None) -> dict:
    """Run the grid; returns {"rows": [...], "config": ..., "seconds": ...} (one row per seed, percent, method)."""
    import torch

    from . import data as D, metrics as X
    from .methods import LMUnlearnData, unlearn_lm
    from .models import build_lm, model_config
    from .training import TrainConfig, train_lm

    from datetime import datetime, timezone

    from ..bench.report import cpu_name, git_commit

    torch.set_num_threads(cfg.threads)
    header = {"commit": git_commit(), "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
              "machine": f"{platform.machine()}, {cpu_name()}, {os.cpu_count()} CPUs, "
                         f"{cfg.threads} torch thread(s), torch {torch.__version__}",
              "seeds": list(cfg.seeds), "config": source}
    began = time.perf_counter()
    rows = []
    tc = TrainConfig(**cfg.train)
    for seed in cfg.seeds:
        corpus = D.generate(cfg.n_authors, seed=seed)
        tok = D.train_tokenizer(corpus)
        base = D.make_splits(corpus, cfg.forget_percents[0], seed=seed)
        original = build_lm(cfg.arch, cfg.size, tok.vocab_size, seed=seed, eos_id=tok.eos_id, pad_id=tok.pad_id)
        t = train_lm(original, tok, D.with_paraphrases(base.qa("train")), tc, seed=seed)
        log(f"seed {seed}: original trained in {t['seconds']:.1f} s (loss {t['final_loss']:.4f})")
        for pct in cfg.forget_percents:
            s = D.make_splits(corpus, pct, seed=seed)
            data = LMUnlearnData.from_splits(tok, s, seed, tc, {"arch": cfg.arch, "config": model_config(original)})
            gold = unlearn_lm(original, data, "retrain")
            r_gold = X.truth_ratios(gold.model, tok, s.qa("forget"))
            cell = {"seed": seed, "forget_percent": pct, "forget_authors": len(s.forget),
                    "forget_facts": len(s.qa("forget"))}

            def record(name, model, seconds, info=None):
                ev = X.evaluate(model, tok, s, r_gold, seed=seed)
                row = cell | {"method": name, "seconds": seconds, "x_retrain": seconds / gold.seconds}
                row |= {k: v for k, v in ev.items() if not isinstance(v, np.ndarray)}
                row["info"] = {k: v for k, v in (info or {}).items() if isinstance(v, (int, float, str, bool))}
                rows.append(row)
                log(f"  {pct:g} % {name:10s} FQ {row['forget_quality']:.3g}  utility {row['utility']:.3f}  "
                    f"ROUGE {row['forget_rouge']:.2f}  fluency {row['fluency']:.2f}  MIA {row['mia_loss']:.2f}  "
                    f"{seconds:.1f} s")

            record("original", original, 0.0)
            record("retrain", gold.model, gold.seconds)
            second = unlearn_lm(original, data, "retrain", seed_offset=1000)
            record("retrain (2nd seed)", second.model, second.seconds)
            for name in cfg.methods:
                res = unlearn_lm(original, data, name, **cfg.options.get(name, {}))
                record(name, res.model, res.seconds, res.info)
    header["seconds"] = time.perf_counter() - began
    return {"header": header, "rows": rows, "config": cfg.__dict__, "seconds": header["seconds"],
            "machine": header["machine"]}


def summarise(result: dict) -> list[dict]:
    """Mean and per-seed values of each metric per (forget %, method), in run order."""
    groups: dict[tuple, list[dict]] = {}
    for r in result["rows"]:
        groups.setdefault((r["forget_percent"], r["method"]), []).append(r)
    out = []
    for (pct, method), rs in groups.items():
        s = {"forget_percent": pct, "method": method, "n": len(rs)}
        for m in METRICS + ("x_retrain",):
            vals = [r[m] for r in rs]
            s[m], s[m + "_seeds"] = float(np.mean(vals)), vals
        out.append(s)
    return out


REFERENCES = ("original", "retrain", "retrain (2nd seed)")


def verdicts(result: dict) -> list[str]:
    """Per forget %, dm's place: the method with the highest mean forget quality, and dm's utility against the
    retrain's (target: within ``UTILITY_TOLERANCE``), stated as met or missed by how much."""
    out = []
    summary = summarise(result)
    for pct in dict.fromkeys(s["forget_percent"] for s in summary):
        rows = {s["method"]: s for s in summary if s["forget_percent"] == pct}
        methods = {m: s for m, s in rows.items() if m not in REFERENCES}
        if "dm" not in methods or "retrain" not in rows:
            continue
        best = max(methods, key=lambda m: methods[m]["forget_quality"])
        dm, gold = methods["dm"], rows["retrain"]
        gap = (dm["utility"] - gold["utility"]) / gold["utility"] if gold["utility"] else float("nan")
        fq = "highest forget quality" if best == "dm" else (
            f"forget quality {dm['forget_quality']:.3f}, below {best}'s {methods[best]['forget_quality']:.3f}")
        ok = gap >= -UTILITY_TOLERANCE
        out.append(f"- {pct:g} %: dm has the {fq}; its utility is {abs(gap) * 100:.1f} % "
                   f"{'above' if gap >= 0 else 'under'} the retrain's ({'within' if ok else 'misses'} the "
                   f"{UTILITY_TOLERANCE * 100:g} % target{'' if ok else f' by {(-gap - UTILITY_TOLERANCE) * 100:.1f} points'}).")
    return out


def markdown(result: dict) -> str:
    """The RESULTS.md section: the run's header, the table (mean over seeds, forget quality also per seed) and
    dm's verdict per forget percentage."""
    h = result.get("header", {})
    lines = [f"commit {h.get('commit')}, {h.get('date')}, {h.get('machine', result.get('machine'))}, seeds "
             f"{h.get('seeds')}, {result['seconds']:.0f} s in all; config `{h.get('config')}`", "",
             "| forget | method | forget quality (per seed) | utility | forget ROUGE-L | fluency | "
             "MIA AUC loss / zlib / min-k | time x retrain |", "|---|---|---|---|---|---|---|---|"]
    for s in summarise(result):
        fq = ", ".join(f"{v:.2g}" for v in s["forget_quality_seeds"])
        lines.append(f"| {s['forget_percent']:g} % | {s['method']} | {s['forget_quality']:.3f} ({fq}) | "
                     f"{s['utility']:.3f} | {s['forget_rouge']:.2f} | {s['fluency']:.2f} | {s['mia_loss']:.2f} / "
                     f"{s['mia_zlib']:.2f} / {s['mia_min_k']:.2f} | {s['x_retrain']:.2f} |")
    return "\n".join(lines + [""] + verdicts(result))


def save(result: dict, path: str | Path) -> Path:
    """Write the result: to ``path`` when it names a ``.json`` file, else into the folder ``path`` as
    ``results.json`` and ``results.md`` (the layout ``benchmarks/publish.py`` reads)."""
    path = Path(path)
    if path.suffix == ".json":
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(result, indent=1, default=float))
        return path
    path.mkdir(parents=True, exist_ok=True)
    (path / "results.json").write_text(json.dumps(result, indent=1, default=float))
    (path / "results.md").write_text(markdown(result) + "\n")
    return path / "results.json"
