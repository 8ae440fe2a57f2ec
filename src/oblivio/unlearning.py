"""``unlearn``: the one public call that checks the request and runs a registered method."""
from __future__ import annotations

import hashlib
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset as TorchDataset

from .errors import OblivioError
from .methods import UnlearnData, UnlearnResult, get_method
from .models import check_compatible
from .training import dataset_shape


def _sample_hashes(data: TorchDataset) -> set[bytes]:
    x, _ = data.tensors if hasattr(data, "tensors") else (torch.stack([d[0] for d in data]), None)
    x = x.detach().cpu().contiguous().float().numpy()
    return {hashlib.blake2b(row.tobytes(), digest_size=16).digest() for row in x}


def check_request(
    model: nn.Module,
    forget: TorchDataset,
    retain: TorchDataset | None,
    third_party: TorchDataset | None,
    num_classes: int,
) -> None:
    """Raise a clear ``OblivioError`` for an empty forget set, unknown classes, shape mismatch or leaked third-party data."""
    if forget is None or len(forget) == 0:
        raise OblivioError("empty forget set: nothing to unlearn")
    shape, y = dataset_shape(forget)
    check_compatible(model, shape, num_classes)
    for name, part in (("forget", forget), ("retain", retain), ("third-party", third_party)):
        if part is None:
            continue
        if len(part) == 0 and name != "forget":
            raise OblivioError(f"the {name} set is empty; pass None to go without it")
        pshape, py = dataset_shape(part)
        if pshape != shape:
            raise OblivioError(f"the {name} set has inputs of shape {pshape}, the forget set {shape}")
        bad = py[(py < 0) | (py >= num_classes)]
        if bad.numel():
            raise OblivioError(f"the {name} set has class {int(bad[0])}, but the model has classes 0..{num_classes - 1}")
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
    **options: Any,
) -> UnlearnResult:
    """Make ``model`` forget ``forget`` with ``method``; returns a new model and run info.

    Pass the sets directly, or ``split=`` a ``Split`` to take all of them (and the scenario's
    forgotten classes / backdoor target) from it. Extra keyword options set the method's config.
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
    if num_classes is None:
        with torch.no_grad():
            was = model.training
            model.eval()
            num_classes = int(model(forget[0][0][None].to(next(model.parameters()).device)).shape[1])
            model.train(was)
    unlearner = get_method(method, config, **options)
    check_request(model, forget, retain, third_party, num_classes)
    data = UnlearnData(
        forget=forget,
        num_classes=num_classes,
        retain=retain,
        third_party=third_party,
        forget_classes=tuple(forget_classes) if forget_classes else None,
        backdoor_target=backdoor_target,
        arch=arch,
        seed=seed,
    )
    torch.manual_seed(seed)
    return unlearner.unlearn(model, data)
