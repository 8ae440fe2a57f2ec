"""``oblivio forget``: unlearn a forget request from a trained checkpoint into a new checkpoint."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, List, Optional

import typer

from ..checkpoint import (check_checkpoint_path, checkpoint_lock, load_checkpoint, recorded_recipe, save_checkpoint,
                          split_companion)
from ..io import check_writable
from ..errors import OblivioError
from ..pipeline import split_with_lineage
from ..scenarios import ClassForget, RandomSubset, Scenario
from ..training import evaluate
from ..unlearning import unlearn
from ..device import check_amp, device_info, resolve_device, set_deterministic
from ..validation import check_seed
from .app import (AMP_HELP, DETERMINISTIC_HELP, DEVICE_HELP, StepLog, app, console, describe, percent_table,
                  threads_option, use_threads)


def parse_ints(text: str, what: str) -> tuple[int, ...]:
    """``"1,2,3"`` -> (1, 2, 3), with a clear error for anything else."""
    try:
        return tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise OblivioError(f"{what} must be comma-separated integers, got {text!r}") from None


def parse_options(pairs: list[str], flag: str = "--set") -> dict[str, Any]:
    """``["lr=1e-4", "optimizer=sgd", "bandwidths=[0.1,1]"]`` -> options (JSON values, else strings)."""
    options: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise OblivioError(f"{flag} expects key=value, got {pair!r}")
        try:
            options[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            options[key.strip()] = value
    return options


def infer_scenario(
    scenario: Optional[str], classes: Optional[str], fraction: Optional[float], count: Optional[int],
    indices: Optional[str],
) -> str:
    """The scenario the flags ask for: ``--scenario`` if given, else ``class`` for ``--classes`` and ``random`` for
    ``--fraction`` / ``--count`` / ``--indices``; a flag of another scenario is an error naming the conflict."""
    random_flags = [f for f, v in (("--fraction", fraction), ("--count", count), ("--indices", indices)) if v is not None]
    class_flags = ["--classes"] if classes is not None else []
    if scenario is None:
        if class_flags and random_flags:
            raise OblivioError(f"--classes asks for the class scenario and {random_flags[0]} for the random one; "
                               "give one of them")
        if class_flags:
            return "class"
        if random_flags:
            return "random"
        raise OblivioError("no forget request: give --classes (class), --fraction, --count or --indices (random), "
                           "or --scenario backdoor")
    if scenario not in ("class", "random", "backdoor"):
        raise OblivioError(f"unknown scenario {scenario!r}; choose class, random or backdoor")
    stray = {"class": random_flags, "random": class_flags, "backdoor": class_flags + random_flags}[scenario]
    if stray:
        raise OblivioError(f"{stray[0]} does not apply to --scenario {scenario}; drop it "
                           + ("(the backdoor scenario forgets the poisoned samples the model was trained with)"
                              if scenario == "backdoor" else f"or drop --scenario {scenario}"))
    return scenario


def build_scenario(
    scenario: Optional[str], classes: Optional[str], fraction: Optional[float], count: Optional[int],
    indices: Optional[str],
) -> Scenario | None:
    """The forget request (scenario inferred from the flags when not given); None for a backdoor."""
    scenario = infer_scenario(scenario, classes, fraction, count, indices)
    if scenario == "class":
        if not classes:
            raise OblivioError("the class scenario needs --classes, e.g. --classes 3 or --classes 3,5")
        return ClassForget(parse_ints(classes, "--classes"))
    if scenario == "random":
        if fraction is None and count is None and indices is None:
            fraction = 0.1
        return RandomSubset(fraction=fraction, count=count, indices=parse_ints(indices, "--indices") if indices else None)
    return None


def json_safe(value: Any) -> Any:
    """``value`` as plain JSON types (numbers from numpy/torch become floats, unknown objects strings)."""
    return json.loads(json.dumps(value, default=lambda v: v.item() if hasattr(v, "item") else str(v)))


@app.command()
def forget(
    checkpoint: Path = typer.Option(..., help="checkpoint written by 'oblivio train' (.safetensors)"),
    out: Path = typer.Option(..., help="new checkpoint to write (never the input)"),
    scenario: Optional[str] = typer.Option(None, help="class, random or backdoor (the poisoning the model was trained "
                                           "with); default: inferred from --classes or --fraction/--count/--indices"),
    method: str = typer.Option("dm", help="unlearning method (see 'oblivio methods' / oblivio.available_methods())"),
    classes: Optional[str] = typer.Option(None, help="class scenario: classes to forget, e.g. 3 or 3,5"),
    fraction: Optional[float] = typer.Option(None, help="random scenario: share of the training pool to forget (default 0.1)"),
    count: Optional[int] = typer.Option(None, help="random scenario: number of samples to forget"),
    indices: Optional[str] = typer.Option(None, help="random scenario: training-set indices to forget, e.g. 1,2,3"),
    author: Optional[List[str]] = typer.Option(None, "--author", help="a language model ('oblivio lm train'): forget "
                                               "this author (repeatable; --fraction picks a share of the authors)"),
    seed: int = typer.Option(0, help="seed of the unlearning run"),
    set_: list[str] = typer.Option([], "--set", help="method option key=value (repeatable), e.g. --set lr=1e-4"),
    device: str = typer.Option("auto", help=DEVICE_HELP),
    amp: Optional[str] = typer.Option(None, help=AMP_HELP),
    deterministic: bool = typer.Option(False, help=DETERMINISTIC_HELP),
    threads: Optional[int] = threads_option(),
) -> None:
    """Make a trained model forget samples, classes or its backdoor (or, for a language model, authors); write the
    result as a new checkpoint."""
    from ..lm import is_lm_checkpoint

    lm = is_lm_checkpoint(checkpoint)
    if author or lm:  # the language-model task: 'oblivio lm forget'
        from .lm import forget as lm_forget

        if not lm:
            raise OblivioError(f"--author is for language-model checkpoints ('oblivio lm train'); {checkpoint.name} is not one")
        if scenario or classes or count or indices:
            raise OblivioError("a language model forgets authors: give --author (or --fraction), not --scenario, "
                               "--classes, --count or --indices")
        lm_forget(checkpoint, out, method, author, None if fraction is None else 100 * fraction, seed, set_, threads)
        return
    threads = use_threads(threads)
    check_seed(seed, "--seed")
    if checkpoint.is_dir():
        raise OblivioError(f"--checkpoint {checkpoint} is a directory; give the .safetensors file written by oblivio")
    dev = resolve_device(device)
    check_amp(amp)
    if deterministic:
        set_deterministic(True)
    check_checkpoint_path(out, "--out")
    if out.resolve() == checkpoint.resolve():
        raise OblivioError("--out is the input checkpoint; unlearning never overwrites the original, choose another path")
    size = checkpoint.stat().st_size if checkpoint.is_file() else 0
    check_writable(out, what="--out", need_bytes=2 * size + (1 << 20))
    options = parse_options(set_)
    request = build_scenario(scenario, classes, fraction, count, indices)
    log = StepLog()
    with checkpoint_lock(out):  # a second writer of the same --out fails here, before any work
        log.step(f"loading {checkpoint}")
        model, meta = load_checkpoint(checkpoint, device=dev)
        log.step("rebuilding the training data and the forget split")
        lineage = split_with_lineage(meta, request)
        split, previous = lineage.split, lineage.previous
        earlier = f" ({len(previous)} forgotten earlier in this model's lineage stay out of the retain set)" \
            if len(previous) else ""
        log.step(f"unlearning with {method!r}: forget {len(split.forget_idx)} samples ({split.sizes()}){earlier}")
        recipe = recorded_recipe(meta)  # the original's augmentation and epochs, or what its lineage carried on
        with log.waiting(f"running {method}"):
            result = unlearn(model, split=split, previously_forgotten=split.subset(previous) if len(previous) else None,
                             method=method, arch=meta.get("arch"), seed=seed, device=dev, amp=amp, **recipe,
                             **options)
        log.step(f"verified: {result.info.get('verified')}")
        record = {
            "method": result.method,
            "config": json_safe(result.config),
            "seconds": result.seconds,
            "info": json_safe(result.info),
            "original": {"path": str(checkpoint), "model_hash": meta["model_hash"]},
            "forgotten": lineage.forgotten,
            "device": device_info(dev),
            "amp": amp,
            "deterministic": deterministic,
            "threads": threads,
            "recipe": recipe,
        }
        log.step(f"writing {out}")
        save_checkpoint(
            out, result.model, arch=meta.get("arch"), input_shape=tuple(meta["input_shape"]), num_classes=meta["num_classes"],
            dataset=meta.get("dataset"), seed=seed, split=lineage.request.spec(), training=meta["training"],
            extra={"unlearning": record}, companions={split_companion(out): lineage.request.save},
        )
    rows = {"original": evaluate(model, split), result.method: evaluate(result.model, split)}
    columns = ["retain", "forget", "test"] + (["asr"] if "asr" in rows["original"] else [])
    console.print(percent_table(f"accuracy (%) after '{result.method}' on {meta.get('dataset')} {split.sizes()}", rows, columns))
    info = ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in result.info.items()
                     if k not in ("verified", "nothing_to_forget", "reason", "warnings", "per_sample", "initial_per_sample"))
    console.print(f"{result.method}: {result.seconds:.2f} s on {describe(dev)}, {threads} thread{'s' * (threads > 1)}"
                  + (f"; {info}" if info else ""), highlight=False)
    for warning in result.info.get("warnings", []):
        console.print(f"[bold yellow]warning:[/] {warning}", highlight=False)
    if result.info.get("nothing_to_forget"):
        console.print(f"[bold yellow]{result.info['verified']}[/]; the model is unchanged", highlight=False)
    else:
        console.print(f"verified: {result.info.get('verified')}", highlight=False)
    console.print(f"wrote {out}")
