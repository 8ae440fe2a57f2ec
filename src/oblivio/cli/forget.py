"""``oblivio forget``: unlearn a forget request from a trained checkpoint into a new checkpoint."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

import typer

from ..checkpoint import check_checkpoint_path, checkpoint_lock, load_checkpoint, save_checkpoint, split_companion
from ..io import check_writable
from ..errors import OblivioError
from ..pipeline import split_for_request
from ..scenarios import ClassForget, RandomSubset, Scenario
from ..training import evaluate
from ..unlearning import unlearn
from ..device import check_amp, device_info, resolve_device, set_deterministic
from .app import AMP_HELP, DETERMINISTIC_HELP, DEVICE_HELP, StepLog, app, console, describe, percent_table


def parse_ints(text: str, what: str) -> tuple[int, ...]:
    """``"1,2,3"`` -> (1, 2, 3), with a clear error for anything else."""
    try:
        return tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise OblivioError(f"{what} must be comma-separated integers, got {text!r}") from None


def parse_options(pairs: list[str]) -> dict[str, Any]:
    """``["lr=1e-4", "optimizer=sgd", "bandwidths=[0.1,1]"]`` -> options (JSON values, else strings)."""
    options: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise OblivioError(f"--set expects key=value, got {pair!r}")
        try:
            options[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            options[key.strip()] = value
    return options


def build_scenario(
    scenario: str, classes: Optional[str], fraction: Optional[float], count: Optional[int], indices: Optional[str]
) -> Scenario | None:
    """The forget request; None for a backdoor (the poisoning the model was trained with)."""
    if scenario == "class":
        if not classes:
            raise OblivioError("the class scenario needs --classes, e.g. --classes 3 or --classes 3,5")
        return ClassForget(parse_ints(classes, "--classes"))
    if scenario == "random":
        if fraction is None and count is None and indices is None:
            fraction = 0.1
        return RandomSubset(fraction=fraction, count=count, indices=parse_ints(indices, "--indices") if indices else None)
    if scenario == "backdoor":
        return None
    raise OblivioError(f"unknown scenario {scenario!r}; choose class, random or backdoor")


def json_safe(value: Any) -> Any:
    """``value`` as plain JSON types (numbers from numpy/torch become floats, unknown objects strings)."""
    return json.loads(json.dumps(value, default=lambda v: v.item() if hasattr(v, "item") else str(v)))


@app.command()
def forget(
    checkpoint: Path = typer.Option(..., help="checkpoint written by 'oblivio train' (.safetensors)"),
    out: Path = typer.Option(..., help="new checkpoint to write (never the input)"),
    scenario: str = typer.Option("class", help="class, random or backdoor (the poisoning the model was trained with)"),
    method: str = typer.Option("dm", help="unlearning method (see 'oblivio methods' / oblivio.available_methods())"),
    classes: Optional[str] = typer.Option(None, help="class scenario: classes to forget, e.g. 3 or 3,5"),
    fraction: Optional[float] = typer.Option(None, help="random scenario: share of the training pool to forget (default 0.1)"),
    count: Optional[int] = typer.Option(None, help="random scenario: number of samples to forget"),
    indices: Optional[str] = typer.Option(None, help="random scenario: training-set indices to forget, e.g. 1,2,3"),
    seed: int = typer.Option(0, help="seed of the unlearning run"),
    set_: list[str] = typer.Option([], "--set", help="method option key=value (repeatable), e.g. --set lr=1e-4"),
    device: str = typer.Option("auto", help=DEVICE_HELP),
    amp: Optional[str] = typer.Option(None, help=AMP_HELP),
    deterministic: bool = typer.Option(False, help=DETERMINISTIC_HELP),
) -> None:
    """Make a trained model forget samples, classes or its backdoor; write the result as a new checkpoint."""
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
        _, split = split_for_request(meta, request)
        log.step(f"unlearning with {method!r}: forget {len(split.forget)} samples ({split.sizes()})")
        with log.waiting(f"running {method}"):
            result = unlearn(model, split=split, method=method, arch=meta.get("arch"), seed=seed, device=dev, amp=amp, **options)
        log.step(f"verified: {result.info.get('verified')}")
        record = {
            "method": result.method,
            "config": json_safe(result.config),
            "seconds": result.seconds,
            "info": json_safe(result.info),
            "original": {"path": str(checkpoint), "model_hash": meta["model_hash"]},
            "device": device_info(dev),
            "amp": amp,
            "deterministic": deterministic,
        }
        log.step(f"writing {out}")
        save_checkpoint(
            out, result.model, arch=meta.get("arch"), input_shape=tuple(meta["input_shape"]), num_classes=meta["num_classes"],
            dataset=meta.get("dataset"), seed=seed, split=split.spec(), training=meta["training"],
            extra={"unlearning": record}, companions={split_companion(out): split.save},
        )
    rows = {"original": evaluate(model, split), result.method: evaluate(result.model, split)}
    columns = ["retain", "forget", "test"] + (["asr"] if "asr" in rows["original"] else [])
    console.print(percent_table(f"accuracy (%) after '{result.method}' on {meta.get('dataset')} {split.sizes()}", rows, columns))
    info = ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in result.info.items()
                     if k not in ("verified", "nothing_to_forget", "reason", "warnings"))
    console.print(f"{result.method}: {result.seconds:.2f} s on {describe(dev)}" + (f"; {info}" if info else ""))
    for warning in result.info.get("warnings", []):
        console.print(f"[bold yellow]warning:[/] {warning}", highlight=False)
    if result.info.get("nothing_to_forget"):
        console.print(f"[bold yellow]{result.info['verified']}[/]; the model is unchanged", highlight=False)
    else:
        console.print(f"verified: {result.info.get('verified')}", highlight=False)
    console.print(f"wrote {out}")
