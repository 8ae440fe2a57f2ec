"""``oblivio lm``: train a small causal LM on fictitious authors, make it forget some, audit it, bench methods.

Everything it imports from ``oblivio.lm`` (and so ``transformers``) is imported inside the commands: the rest
of the CLI works without the ``lm`` extra.
"""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from ..errors import OblivioError
from .forget import parse_options
from .app import app, console, err_console, threads_option, use_threads

lm_app = typer.Typer(help="Language models: make a causal LM forget facts about fictitious authors (TOFU-style).",
                     no_args_is_help=True)
app.add_typer(lm_app, name="lm")


# 'oblivio lm train's defaults, also what 'oblivio train --task lm' trains with
TRAIN_DEFAULTS = {"authors": 100, "arch": "gpt2", "size": "cpu", "steps": 400, "lr": 0.01, "batch_size": 64}


def _splits(info: dict, authors: list[str] | None, percent: float | None, seed: int):
    from ..lm import data as D

    corpus = D.recorded_corpus(info)
    if authors is not None and percent is not None:
        raise OblivioError("give --author or --percent, not both")
    if authors is not None:
        return D.make_splits(corpus, seed=seed, forget_authors=[a.strip() for a in authors if a.strip()] or [])
    return D.make_splits(corpus, 10.0 if percent is None else percent, seed=seed)


@lm_app.command("train")
def train(
    out: Path = typer.Option(..., "--out", help="where to write the model (.safetensors; tokenizer and sidecar beside it)"),
    authors: int = typer.Option(TRAIN_DEFAULTS["authors"], "--authors", help="fictitious authors to generate (a sixth are held out)"),
    seed: int = typer.Option(0, help="seeds the corpus, the model's initialisation and training"),
    arch: str = typer.Option(TRAIN_DEFAULTS["arch"], help="gpt2 or llama"),
    size: str = typer.Option(TRAIN_DEFAULTS["size"], help="test (seconds), cpu (about a minute on 2 cores) or gpu"),
    steps: int = typer.Option(TRAIN_DEFAULTS["steps"], help="training steps"),
    lr: float = typer.Option(TRAIN_DEFAULTS["lr"], help="learning rate"),
    batch_size: int = typer.Option(TRAIN_DEFAULTS["batch_size"], help="batch size"),
    threads: Optional[int] = threads_option(),
) -> None:
    """Generate the corpus, train a tokenizer and a causal LM on every non-held-out author, save them."""
    from ..lm import data as D, require_lm
    from ..lm.models import build_lm, save_lm
    from ..lm.training import TrainConfig, train_lm

    require_lm()
    use_threads(threads)
    corpus = D.generate(authors, seed=seed)
    splits = D.make_splits(corpus, seed=seed)
    tok = D.train_tokenizer(corpus)
    model = build_lm(arch, size, tok.vocab_size, seed=seed, eos_id=tok.eos_id, pad_id=tok.pad_id)
    tc = TrainConfig(steps=steps, lr=lr, batch_size=batch_size)
    info = train_lm(model, tok, D.with_paraphrases(splits.qa("train")), tc, seed=seed,
                    progress=lambda s, n, l: err_console.print(f"step {s}/{n} loss {l:.4f}"))
    save_lm(out, model, tok, seed=seed, extra={"corpus": D.corpus_spec(corpus), "train": tc.spec(),
                                               "trained_authors": splits.forget + splits.retain,
                                               "heldout_authors": splits.reference + splits.holdout})
    console.print(f"trained {arch}/{size} on {len(splits.qa('train'))} facts ({len(splits.forget + splits.retain)} "
                  f"authors + world) in {info['seconds']:.1f} s (loss {info['final_loss']:.4f}); wrote {out}",
                  highlight=False)


@lm_app.command("forget")
def forget(
    model_path: Path = typer.Argument(..., help="an oblivio LM checkpoint (.safetensors)"),
    out: Path = typer.Option(..., "--out", help="where to write the unlearned model (.safetensors)"),
    method: str = typer.Option("dm", help="an LM method (oblivio lm methods)"),
    author: Optional[List[str]] = typer.Option(None, "--author", help="forget this author (repeatable)"),
    percent: Optional[float] = typer.Option(None, help="forget this % of the trained authors (default 10)"),
    seed: int = typer.Option(0, help="picks the authors for --percent; seeds the method"),
    option: List[str] = typer.Option([], "--option", help="method option key=value (repeatable)"),
    threads: Optional[int] = threads_option(),
) -> None:
    """Make the model forget every fact about the chosen authors; the output records who was forgotten."""
    from ..lm.methods import LMUnlearnData, unlearn_lm
    from ..lm.models import load_lm, save_lm
    from ..lm.training import TrainConfig

    use_threads(threads)
    model, tok, info = load_lm(model_path)
    s = _splits(info, author, percent, seed)
    data = LMUnlearnData.from_splits(tok, s, seed, TrainConfig(**info["train"]) if isinstance(info.get("train"), dict)
                                     else None, {"arch": info["arch"], "config": info["config"]})
    res = unlearn_lm(model, data, method, **parse_options(option, "--option"))
    keep = {k: info[k] for k in ("corpus", "train", "trained_authors", "heldout_authors") if k in info}
    save_lm(out, res.model, tok, seed=seed, extra=keep | {"forgotten_authors": s.forget, "method": method,
                                                          "unlearn_info": res.info, "original": str(model_path)})
    console.print(f"{method}: forgot {len(s.forget)} author(s) ({len(s.qa('forget'))} facts) in {res.seconds:.1f} s; "
                  f"wrote {out}", highlight=False)


@lm_app.command("audit")
def audit(
    model_path: Path = typer.Argument(..., help="the unlearned LM checkpoint"),
    retrain: Path = typer.Option(..., "--retrain", help="the gold model trained without the forgotten authors"),
    author: Optional[List[str]] = typer.Option(None, "--author", help="the forgotten author (default: as recorded)"),
    json_out: bool = typer.Option(False, "--json", help="print JSON"),
    threads: Optional[int] = threads_option(),
) -> None:
    """Forget quality against the retrained model, utility, forget ROUGE-L and MIA AUCs (TOFU / MUSE)."""
    import json

    import numpy as np

    from ..lm import metrics as X
    from ..lm.models import load_lm

    use_threads(threads)
    model, tok, info = load_lm(model_path)
    gold, _, _ = load_lm(retrain)
    who = author if author else info.get("forgotten_authors")
    if not who:
        raise OblivioError(f"{model_path} records no forgotten authors; name them with --author")
    s = _splits(info, list(who), None, 0)
    ev = X.evaluate(model, tok, s, X.truth_ratios(gold, tok, s.qa("forget")))
    ev = {k: v for k, v in ev.items() if not isinstance(v, np.ndarray)}
    if json_out:
        console.print_json(json.dumps(ev))
        return
    for k, v in ev.items():
        console.print(f"{k:18s} {v:.4f}", highlight=False)


@lm_app.command("bench")
def bench(
    config: Path = typer.Argument(..., help="a 'task: lm' YAML (benchmarks/lm-tofu.yaml)"),
    out: Path = typer.Option(Path("runs/bench/lm"), "--out", help="a folder (results.json + results.md) or a .json file"),
    threads: Optional[int] = typer.Option(None, "--threads", help="torch CPU threads (default: the config's)"),
) -> None:
    """Run every LM method on forget 1 / 5 / 10 % x seeds; print the table (mean over seeds)."""
    from ..lm import bench as B, require_lm

    require_lm()
    cfg = B.load_config(config)
    if threads is not None:
        use_threads(threads)
        cfg.threads = threads
    result = B.run_bench(cfg, log=lambda s: err_console.print(s), source=str(config))
    console.print(B.markdown(result), highlight=False)
    written = B.save(result, out)
    console.print(f"{len(result['rows'])} rows in {result['seconds']:.0f} s; wrote {written}", highlight=False)


@lm_app.command("methods")
def methods() -> None:
    """The language-model unlearning methods."""
    from ..lm.methods import LM_METHODS

    for name, cls in sorted(LM_METHODS.items()):
        console.print(f"{name:9s} {cls.paper}", highlight=False)
