"""``oblivio train`` and ``oblivio demo``."""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer
from torch import nn

from .. import hf_models
from ..augment import canonical as canonical_augment
from ..checkpoint import check_checkpoint_path, file_sha256, save_checkpoint
from ..data import dataset_options, load_from_spec
from ..errors import OblivioError
from ..io import check_writable
from ..pipeline import training_spec, training_split
from ..scenarios import Backdoor, ClassForget, RandomSubset, check_third_party_fraction, make_split
from ..models import (available_models, build_model, check_compatible, import_factory, load_weights, model_arch,
                      parse_model_args, read_state_dict)
from ..training import History, TrainConfig, evaluate, place, train as train_model
from ..validation import check_options
from ..device import device_info, gpu_recipe_warning, resolve_device, set_deterministic
from ..validation import check_seed
from .forget import parse_options
from .app import (AMP_HELP, DETERMINISTIC_HELP, DEVICE_HELP, app, console, describe, err_console, percent_table,
                  threads_option, use_threads)


FILE_DATASETS = ("npz", "csv")  # --data-dir names a file, recorded as the spec's path


def data_options(dataset: str, pairs: Optional[List[str]]) -> dict:
    """``["label=species", "test_fraction=0.25"]`` -> the loader's keywords (JSON values, else strings)."""
    options = parse_options(pairs or [], "--data-option")
    known = [o for o in dataset_options(dataset) if o != "path"]
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise OblivioError(f"--data-option: dataset {dataset} has no option {unknown[0]!r}; "
                           + (f"its options: {', '.join(known)}" if known else "it takes none"))
    return options


def checked_arch(model: str, model_arg: Optional[List[str]], hf: bool = True) -> tuple[Optional[Path], str]:
    """``--model`` and ``--model-arg`` as (the Hugging Face folder or None, the sidecar's arch string), checked
    before any data loads: a registered name, an importable ``package.module:factory``, or (``hf``) ``hf:FOLDER``."""
    if hf and model.startswith(hf_models.PREFIX):  # a local Hugging Face image-classification folder
        return hf_models.hf_arch(model, parse_model_args(model_arg))
    arch = model_arch(model, parse_model_args(model_arg))
    if ":" in model:
        import_factory(model)  # an import error shows before any data loads
    elif model not in available_models():
        raise OblivioError(f"unknown model {model!r}; choose one of: {', '.join(available_models())}, "
                           "or give package.module:factory" + (" or hf:FOLDER" if hf else ""))
    return None, arch


def data_spec(dataset: str, data_dir: Optional[str], n_train: Optional[int], n_test: Optional[int],
              options: Optional[dict] = None) -> dict:
    spec = {"name": dataset, "root": str(Path(data_dir).resolve()) if data_dir else None, "n_train": n_train, "n_test": n_test}
    if dataset in FILE_DATASETS:
        spec |= {"path": spec.pop("root"), "root": None}
    if options:
        spec["options"] = options
    return spec


@app.command()
def train(
    dataset: str = typer.Option("digits", help="digits, fashion-mnist, cifar10, cifar100, npz, imagefolder, csv, "
                                               "hf-disk or parquet"),
    model: str = typer.Option("mlp", help="mlp, cnn, resnet18, package.module:factory (any importable callable "
                                          "returning a torch nn.Module), or hf:FOLDER (a local Hugging Face "
                                          "image-classification model)"),
    model_arg: Optional[List[str]] = typer.Option(
        None, "--model-arg", metavar="KEY=VALUE", help="a keyword argument of the model's factory, repeatable; the "
                                                       "value read as YAML (8, 0.5, true, relu)"),
    weights: Optional[Path] = typer.Option(None, help="start from this state_dict (.safetensors, or a torch.save file "
                                                      "read with weights_only=True); --epochs 0 records it as is"),
    out: Path = typer.Option(Path("runs/model.safetensors"), help="checkpoint to write (.safetensors + .json sidecar)"),
    epochs: int = typer.Option(20, help="training epochs (0 with --weights: record the given weights untrained)"),
    batch_size: int = 64,
    lr: float = 0.05,
    optimizer: str = typer.Option("sgd", help="sgd or adam"),
    seed: int = 0,
    third_party_fraction: float = typer.Option(0.1, help="share of the training set held out as third-party data"),
    backdoor: bool = typer.Option(False, help="poison the training data with a BadNets trigger"),
    poison_fraction: float = 0.1,
    target: int = typer.Option(0, help="backdoor target class"),
    patch_size: Optional[int] = typer.Option(None, help="trigger side in pixels, or features on tabular data (default ~1/7 of the image)"),
    trigger_value: float = typer.Option(1.0, help="value written into the trigger's pixels (features)"),
    trigger_position: str = typer.Option("bottom-right", help="trigger corner: top-left, top-right, bottom-left or bottom-right"),
    data_dir: Optional[str] = typer.Option(None, help="dataset directory (an image folder for imagefolder, a "
                                                      "save_to_disk folder for hf-disk; the file for npz and csv; "
                                                      "a file or folder for parquet)"),
    data_option: Optional[List[str]] = typer.Option(
        None, "--data-option", metavar="KEY=VALUE", help="a loader option, repeatable: label=COLUMN (csv, hf-disk, "
                                    "parquet), image=COLUMN (hf-disk, parquet), mode=L|RGB (imagefolder), "
                                    "test_fraction=0.2 (without train/test splits)"),
    n_train: Optional[int] = typer.Option(None, help="use a seeded subset of this many training samples"),
    n_test: Optional[int] = typer.Option(None, help="use a seeded subset of this many test samples"),
    augment: Optional[str] = typer.Option(None, help="augment training batches: crop:P (pad P pixels, random crop) "
                                                     "and/or flip (horizontal), joined by +, e.g. crop:4+flip"),
    progress: bool = True,
    device: str = typer.Option("auto", help=DEVICE_HELP),
    amp: Optional[str] = typer.Option(None, help=AMP_HELP),
    deterministic: bool = typer.Option(False, help=DETERMINISTIC_HELP),
    threads: Optional[int] = threads_option(),
    task: str = typer.Option("classifier", help="classifier, or lm: a small causal LM on generated fictitious authors "
                                                "at 'oblivio lm train's defaults (its command has the LM options)"),
) -> None:
    """Train an original model on the train pool (third-party data held out) and save a checkpoint."""
    if task == "lm":
        from .lm import TRAIN_DEFAULTS, train as lm_train

        lm_train(out=out, seed=seed, threads=threads, **TRAIN_DEFAULTS)
        return
    if task != "classifier":
        raise OblivioError(f"--task must be classifier or lm, got {task!r}")
    threads = use_threads(threads)
    check_seed(seed, "--seed")
    check_checkpoint_path(out, "--out")
    for name, value in (("--n-train", n_train), ("--n-test", n_test)):
        if value is not None and value < 1:
            raise OblivioError(f"{name} must be at least 1 (leave it out to use every sample), got {value}")
    if dataset == "digits" and data_dir:
        raise OblivioError("digits is bundled with scikit-learn and takes no --data-dir; drop it (or pick another dataset)")
    check_third_party_fraction(third_party_fraction, "--third-party-fraction")
    options = data_options(dataset, data_option)
    hf_folder, arch = checked_arch(model, model_arg)
    if epochs == 0 and weights is None and hf_folder is None:
        raise OblivioError("--epochs 0 records a model without training it: give its --weights (or an hf: folder)")
    if weights is not None:
        read_state_dict(weights)  # a missing or unreadable file shows before any data loads
    poison = Backdoor(poison_fraction, target, patch_size, trigger_value, trigger_position) if backdoor else None  # checked before any data loads
    recipe = check_options("train", TrainConfig, {"epochs": epochs or 1, "batch_size": batch_size, "lr": lr, "optimizer": optimizer,
                                              "augment": augment})
    canonical_augment(augment)  # a bad spec shows before any data loads
    check_writable(out, what="--out", need_bytes=1 << 20)
    dev = resolve_device(device)
    if deterministic:
        set_deterministic(True)
    spec = data_spec(dataset, data_dir, n_train, n_test, options)
    data = load_from_spec(spec)
    split = training_split(data, seed, third_party_fraction, poison)
    config = TrainConfig(**recipe, seed=seed, progress=progress, amp=amp)
    warning = gpu_recipe_warning(model, len(split.train), config.epochs, dev)
    if warning:
        err_console.print(f"[bold yellow]{warning}[/]")
    start: nn.Module | str = arch
    if weights is not None:
        start = load_weights(build_model(arch, data.info.input_shape, data.num_classes, seed=seed), weights)
    elif hf_folder is not None:
        start = hf_models.pretrained(hf_folder, arch, data.info.input_shape, data.num_classes, data.info.class_names)
    if epochs:
        net, history = train_model(start, split.train, data.num_classes, config, device=dev)
    else:  # the given weights as they are
        net, history = place(start, dev).eval(), History()
        check_compatible(net, data.info.input_shape, data.num_classes)
    given = {"weights": {"file": str(weights.resolve()), "sha256": file_sha256(weights)}} if weights else {}
    given |= {"hf_model": {"folder": str(hf_folder)}} if hf_folder else {}
    scores = evaluate(net, split)
    if poison is None:
        del scores["forget"]  # no forget request yet: retain here is the whole train pool minus one sample
    save_checkpoint(
        out, net, arch=arch, input_shape=data.info.input_shape, num_classes=data.num_classes, dataset=dataset,
        seed=seed, training=training_spec(spec, split),
        extra={"train_config": config.__dict__ if epochs else None, "train_seconds": history.seconds,
               "scores": scores, "device": device_info(dev), "deterministic": deterministic, "threads": threads}
        | given,
    )
    console.print(percent_table(f"{model} on {dataset} ({history.seconds:.1f} s on {describe(dev)}, {threads} "
                                f"thread{'s' * (threads > 1)})", {"original": scores}))
    console.print(f"wrote {out}")


@app.command()
def demo(
    scenario: str = typer.Option("class", help="class, random or backdoor"),
    method: str = typer.Option("dm", help="unlearning method to run ('none' to only train)"),
    seed: int = 0,
    threads: Optional[int] = threads_option(),
) -> None:
    """Train an MLP on digits, make a forget request, unlearn it and compare with retraining."""
    threads = use_threads(threads)
    check_seed(seed, "--seed")
    from ..data import load_dataset
    from ..training import retrain
    from ..unlearning import unlearn

    data = load_dataset("digits")
    request = {"class": ClassForget((3,)), "random": RandomSubset(fraction=0.1), "backdoor": Backdoor(0.1, 0)}.get(scenario)
    if request is None:
        raise typer.BadParameter(f"unknown scenario {scenario!r}; choose class, random or backdoor")
    split = make_split(data, request, seed=seed)
    console.print(f"digits: {split.sizes()}  scenario: {request}")
    config = TrainConfig(seed=seed)
    original, hist = train_model("mlp", split.train, data.num_classes, config)
    rows = {"original": evaluate(original, split)}
    times = {"original": hist.seconds}
    if method != "none":
        result = unlearn(original, split=split, method=method, arch="mlp", seed=seed)
        rows[method] = evaluate(result.model, split)
        times[method] = result.seconds
        if result.info:
            console.print(f"{method}: " + ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in result.info.items()))
        gold, ghist = retrain("mlp", split.retain, data.num_classes, config)
        rows["retrain"] = evaluate(gold, split)
        times["retrain"] = ghist.seconds
    columns = ["retain", "forget", "test"] + (["asr"] if "asr" in rows["original"] else [])
    console.print(percent_table("accuracy (%) on each part of the data (asr: backdoor attack success rate)", rows, columns))
    console.print("wall time: " + ", ".join(f"{k} {v:.2f} s" for k, v in times.items())
                  + f" ({threads} thread{'s' * (threads > 1)})")
