"""``unlearn``: the one public call that checks the request and runs a registered method."""
from __future__ import annotations

import copy
import hashlib
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset as TorchDataset

from .augment import canonical as canonical_augment
from .device import check_amp, resolve_device
from .errors import OblivioError
from .methods import UnlearnData, UnlearnResult, get_method
from .models import check_compatible
from .batching import DeviceData
from .parts import select
from .training import dataset_shape, place, tensors_of

FORGOT_NOTHING = "forgot_nothing"  # info key: verification's refusal, kept by ``unlearn(verify="record")``


def _sample_hashes(data: TorchDataset) -> set[bytes]:
    out = set()
    for x, _ in DeviceData(data, "cpu").epoch(1024):  # in batches: streamed data is never stacked
        out |= {hashlib.blake2b(row.tobytes(), digest_size=16).digest() for row in x.contiguous().float().numpy()}
    return out


def infer_num_classes(model: nn.Module, forget: TorchDataset) -> int:
    """The number of logits ``model`` outputs for one forget sample (a clear error if it cannot take it)."""
    x = tensors_of(select(forget, [0]))[0]
    was = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = model(x.to(next(model.parameters()).device))
    except RuntimeError as e:
        raise OblivioError(f"model does not accept inputs of shape {tuple(x.shape[1:])}: {str(e).splitlines()[0]}") from None
    finally:
        model.train(was)
    if out.ndim != 2:
        raise OblivioError(f"model outputs shape {tuple(out.shape[1:])} per sample; expected one logit per class")
    return int(out.shape[1])


def check_request(
    model: nn.Module,
    forget: TorchDataset,
    retain: TorchDataset | None,
    third_party: TorchDataset | None,
    num_classes: int,
    forget_classes: tuple[int, ...] | None = None,
    backdoor_target: int | None = None,
) -> None:
    """Raise a clear ``OblivioError`` for an empty forget set, unknown classes, shape mismatch,
    a model that outputs NaN/inf, or a third-party pool that shares samples with the training data."""
    if forget is None or len(forget) == 0:
        raise OblivioError("empty forget set: nothing to unlearn")
    shape, _ = dataset_shape(forget)
    check_compatible(model, shape, num_classes)
    for name, part in (("forget", forget), ("retain", retain), ("third-party", third_party)):
        if part is None:
            continue
        if len(part) == 0:
            raise OblivioError(f"the {name} set is empty; pass None to go without it")
        pshape, py = dataset_shape(part)
        if pshape != shape:
            raise OblivioError(f"the {name} set has inputs of shape {pshape}, the forget set {shape}")
        bad = py[(py < 0) | (py >= num_classes)]
        if bad.numel():
            raise OblivioError(f"the {name} set has class {int(bad[0])}, but the model has classes 0..{num_classes - 1}")
    for what, classes in (("forgotten class", forget_classes or ()), ("backdoor target", () if backdoor_target is None else (backdoor_target,))):
        bad = [c for c in classes if not 0 <= c < num_classes]
        if bad:
            raise OblivioError(f"{what} {bad[0]} does not exist: the model has classes 0..{num_classes - 1}")
    with torch.no_grad():
        was = model.training
        model.eval()
        out = model(tensors_of(select(forget, range(min(64, len(forget)))))[0].to(next(model.parameters()).device))
        model.train(was)
    if not torch.isfinite(out).all():
        raise OblivioError("the model outputs NaN/inf on the forget set; it cannot be unlearned (is the checkpoint corrupt?)")
    if third_party is not None:
        trained = _sample_hashes(forget) | (_sample_hashes(retain) if retain is not None else set())
        leaked = len(_sample_hashes(third_party) & trained)
        if leaked:
            raise OblivioError(
                f"the third-party pool shares {leaked} sample(s) with the training data; it must be data the model never trained on"
            )


def unlearn(
    model: nn.Module,
    forget: TorchDataset | None = None,
    retain: TorchDataset | None = None,
    third_party: TorchDataset | None = None,
    method: str = "dm",
    *,
    split=None,
    num_classes: int | None = None,
    forget_classes: tuple[int, ...] | None = None,
    backdoor_target: int | None = None,
    arch: str | None = None,
    seed: int = 0,
    config: Any = None,
    verify: bool | str = True,
    previously_forgotten: TorchDataset | None = None,
    device: torch.device | str | None = "auto",
    amp: str | None = None,
    augment: str | None = None,
    train_epochs: int | None = None,
    **options: Any,
) -> UnlearnResult:
    """Make ``model`` forget ``forget`` with ``method``; returns a new model and run info.

    Pass the sets directly, or ``split=`` a ``Split`` to take all of them (and the scenario's
    forgotten classes / backdoor target) from it. Extra keyword options set the method's config.
    The method runs on ``device`` (``auto`` = CUDA when present; None = where ``model`` is; the input
    model is never moved) and the result lives there; ``amp="bf16"`` runs it under bf16 autocast.
    ``augment``: the original's training augmentation spec (``oblivio.augment``), used by the methods that
    fine-tune with it (``ft``, ``l1-sparse``, ``salun``) and by ``retrain``; ``train_epochs``: the original's
    training epochs (``dm`` keeps its cost under a share of a retrain's, see its ``budget``).
    With ``verify`` (default) the result is checked before it is returned
    (``verification.verify_unlearning``): a model that did not change, or whose forget-set score
    did not fall where the scenario requires it, raises ``NothingForgotten`` (an ``OblivioError``);
    ``info["verified"]`` says what changed. ``verify="record"`` returns such a result instead, with the
    refusal in ``info["forgot_nothing"]`` (the bench reports it as a result, not a failure).
    ``previously_forgotten``: samples deleted earlier from this model's lineage (keep them out of ``retain``);
    methods that use it make the union look unseen, not only the new request.
    """
    if split is not None:
        forget = split.forget if forget is None else forget
        retain = split.retain if retain is None else retain
        third_party = split.third_party if third_party is None else third_party
        num_classes = num_classes or split.info.num_classes
        forget_classes = forget_classes or split.forget_classes
        backdoor_target = backdoor_target if backdoor_target is not None else split.backdoor_target
    if forget is None or len(forget) == 0:
        raise OblivioError("empty forget set: nothing to unlearn")
    unlearner = get_method(method, config, **options)
    amp = check_amp(amp)
    if device is not None:
        dev = resolve_device(device)
        if next(model.parameters()).device != dev:
            model = place(copy.deepcopy(model), dev)
    if num_classes is None:
        num_classes = infer_num_classes(model, forget)
    check_request(model, forget, retain, third_party, num_classes, forget_classes, backdoor_target)
    data = UnlearnData(
        forget=forget,
        num_classes=num_classes,
        retain=retain,
        third_party=third_party,
        forget_classes=tuple(forget_classes) if forget_classes else None,
        backdoor_target=backdoor_target,
        arch=arch,
        seed=seed,
        previously_forgotten=previously_forgotten if previously_forgotten is not None and len(previously_forgotten) else None,
        augment=canonical_augment(augment),
        train_epochs=train_epochs,
    )
    torch.manual_seed(seed)
    try:
        result = unlearner.unlearn(model, data, amp=amp)
    except OblivioError as e:
        msg = str(e) if repr(unlearner.name) in str(e) else f"method {unlearner.name!r}: {e}"
        raise OblivioError(msg if "original model" in msg else f"{msg}; the original model is kept") from None
    if verify:
        from .verification import NothingForgotten, verify_unlearning

        try:
            result.info["verified"] = verify_unlearning(model, result, data)
        except NothingForgotten as e:
            if verify != "record":
                raise
            result.info[FORGOT_NOTHING] = str(e)
    return result
