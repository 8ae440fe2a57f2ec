"""``oblivio import``: record a model trained elsewhere, with the samples it saw, as an oblivio checkpoint."""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from ..checkpoint import check_checkpoint_path, file_sha256, save_checkpoint
from ..data import load_from_spec
from ..device import device_info, resolve_device
from ..errors import OblivioError
from ..imported import NO_STATEMENT, image_files, read_entries, resolve, stated_cut, to_runs
from ..io import check_writable
from ..models import build_model, check_compatible, load_weights, read_state_dict
from ..pipeline import training_spec, training_split
from ..training import accuracy, place
from ..validation import check_seed
from .app import DEVICE_HELP, app, console, describe, percent_table, threads_option, use_threads
from .train import checked_arch, data_options, data_spec

LIST_HELP = ("a .npy/.json list or a text file, one entry a line: an index into the dataset's training part, or "
             "(imagefolder) an image path relative to --data-dir")


def _file(path: Path) -> dict:
    return {"file": str(path.resolve()), "sha256": file_sha256(path)}


@app.command("import")
def import_(
    model: str = typer.Option(..., help="mlp, cnn, resnet18, or package.module:factory (any importable callable "
                                        "returning a torch nn.Module)"),
    model_arg: Optional[List[str]] = typer.Option(
        None, "--model-arg", metavar="KEY=VALUE", help="a keyword argument of the model's factory, repeatable; the "
                                                       "value read as YAML (8, 0.5, true, relu)"),
    weights: Path = typer.Option(..., help="the trained state_dict (.safetensors, or a torch.save file read with "
                                           "weights_only=True)"),
    dataset: str = typer.Option("digits", help="digits, fashion-mnist, cifar10, cifar100, npz, imagefolder or csv"),
    data_dir: Optional[str] = typer.Option(None, help="dataset directory (an image folder for imagefolder; the file "
                                                      "for npz and csv)"),
    data_option: Optional[List[str]] = typer.Option(
        None, "--data-option", metavar="KEY=VALUE", help="a loader option, repeatable: label=COLUMN (csv), mode=L|RGB "
                                    "(imagefolder), test_fraction=0.2 (without train/test folders)"),
    trained_on: Optional[Path] = typer.Option(None, help="the samples the model was trained on: " + LIST_HELP
                                              + " (default: every sample not in --third-party)"),
    third_party: Optional[Path] = typer.Option(None, help="samples the model never saw, the unseen reference dm and "
                                               "the audit need: " + LIST_HELP + " (default: every sample not in "
                                               "--trained-on)"),
    out: Path = typer.Option(Path("runs/model.safetensors"), help="checkpoint to write (.safetensors + .json sidecar)"),
    seed: int = typer.Option(0, help="seed of oblivio's later random choices on this model (forget --count picks, "
                                     "retrain's initial weights)"),
    device: str = typer.Option("auto", help=DEVICE_HELP),
    threads: Optional[int] = threads_option(),
) -> None:
    """Record a model trained elsewhere, and which samples it saw, as a checkpoint for forget, audit and the ledger.

    At least one of --trained-on and --third-party is needed: unlearning and its audit compare the forgotten
    samples with samples the model never saw. The model is evaluated (trained-on, third-party and test accuracy);
    nothing is written unless every input checks out.
    """
    threads = use_threads(threads)
    check_seed(seed, "--seed")
    check_checkpoint_path(out, "--out")
    if dataset == "digits" and data_dir:
        raise OblivioError("digits is bundled with scikit-learn and takes no --data-dir; drop it (or pick another dataset)")
    options = data_options(dataset, data_option)
    _, arch = checked_arch(model, model_arg, hf=False)
    read_state_dict(weights)  # a missing or unreadable file shows before any data loads
    if trained_on is None and third_party is None:
        raise OblivioError(NO_STATEMENT)
    lists = {flag: (path, read_entries(path, flag)) for flag, path in (("--trained-on", trained_on),
                                                                      ("--third-party", third_party)) if path}
    check_writable(out, what="--out", need_bytes=1 << 20)
    dev = resolve_device(device)
    spec = data_spec(dataset, data_dir, None, None, options)
    data = load_from_spec(spec)
    n = len(data.y_train)
    root = Path(spec["root"]) if dataset == "imagefolder" else None
    images = None
    if root is not None and any(isinstance(e, str) for _, entries in lists.values() for e in entries):
        images = image_files(root, options.get("test_fraction"), data.y_train.numpy())
    found = {flag: resolve(entries, flag, n, root, images) for flag, (_, entries) in lists.items()}
    pool, third = stated_cut(n, found.get("--trained-on"), found.get("--third-party"))
    net = load_weights(build_model(arch, data.info.input_shape, data.num_classes, seed=seed), weights)
    net = place(net, dev).eval()
    check_compatible(net, data.info.input_shape, data.num_classes)
    split = training_split(data, seed, round(len(third) / n, 6), None, cut=(pool, third))
    scores = {"trained_on": accuracy(net, split.train), "third_party": accuracy(net, split.third_party),
              "test": accuracy(net, split.test)}
    imported = {"weights": _file(weights), "data_fingerprint": data.fingerprint()} | {
        flag.strip("-").replace("-", "_"): _file(path) for flag, (path, _) in lists.items()}
    training = training_spec(spec, split) | {"cut": {"pool": to_runs(pool), "third_party": to_runs(third)},
                                             "imported": imported}
    save_checkpoint(out, net, arch=arch, input_shape=data.info.input_shape, num_classes=data.num_classes,
                    dataset=dataset, seed=seed, training=training,
                    extra={"train_config": None, "scores": scores, "device": device_info(dev), "threads": threads})
    unused = n - len(pool) - len(third)
    console.print(percent_table(
        f"{model} on {dataset}: trained on {len(pool)}, third-party {len(third)}"
        + (f", unused {unused}" if unused else "") + f", test {len(split.y_test)} ({describe(dev)})",
        {"imported": scores}, ["trained_on", "third_party", "test"]))
    console.print(f"wrote {out}")
