"""Glue shared by the CLI, audits and benchmarks: rebuild the data and split behind a checkpoint."""
from __future__ import annotations

from dataclasses import asdict, dataclass, replace

import numpy as np
import torch

from .data import Dataset, load_from_spec
from .errors import OblivioError
from .imported import recorded_cut
from .validation import check_seed
from .scenarios import Backdoor, RandomSubset, Scenario, Split, make_split, scenario_from_dict


def training_spec(data_spec: dict, split: Split) -> dict:
    """What the original model was trained on: data, seed, pool cut and any poisoning (and the class names, for
    data that names its classes; every checkpoint of the lineage carries them)."""
    names = {"class_names": list(split.info.class_names)} if split.info.class_names else {}
    return {
        "data": data_spec,
        "seed": split.seed,
        "third_party_fraction": split.third_party_fraction,
        "pool_hash": split.hashes()["pool"],
        "third_party_hash": split.hashes()["third_party"],
        "backdoor": asdict(split.scenario) if isinstance(split.scenario, Backdoor) else None,
    } | names


def training_split(data: Dataset, seed: int, third_party_fraction: float, backdoor: Backdoor | None,
                   cut: tuple[np.ndarray, np.ndarray] | None = None) -> Split:
    """The split an original model trains on (``split.train``): poisoned if ``backdoor`` is given; ``cut``: the
    explicit (pool, third-party) indices of an imported model instead of the seeded cut."""
    return make_split(data, backdoor or RandomSubset(count=1), seed, third_party_fraction, cut=cut)


def check_classes(data: Dataset, meta: dict) -> None:
    """A one-line error when the data's classes do not match the model's outputs (``num_classes``) or the class
    names recorded in its sidecar's training record (``training.class_names``)."""
    k = meta.get("num_classes")
    names = list(data.info.class_names or [])
    shown = f" ({', '.join(names[:8])}{', ...' if len(names) > 8 else ''})" if names else ""
    if isinstance(k, int) and not isinstance(k, bool) and k != data.num_classes:
        raise OblivioError(f"{data.info.name} has {data.num_classes} classes{shown} but the model outputs {k}")
    recorded = (meta.get("training") or {}).get("class_names")
    if recorded and names and list(recorded) != names:
        i = next((i for i, (a, b) in enumerate(zip(recorded, names)) if a != b), min(len(recorded), len(names)))
        got = repr(names[i]) if i < len(names) else "missing"
        want = repr(recorded[i]) if i < len(recorded) else "missing"
        raise OblivioError(f"{data.info.name}: class names do not match the model's: class {i} is {got} in the "
                           f"data but {want} in the checkpoint")


def split_for_request(meta: dict, scenario: Scenario | None, data: Dataset | None = None) -> tuple[Dataset, Split]:
    """Rebuild the data and split of a checkpoint's training run for a new forget request.

    ``scenario`` None means the backdoor the model was trained with (or an error if none).
    ``data``: the dataset already loaded from ``meta["training"]["data"]`` (else it is loaded).
    """
    spec = meta.get("training")
    if not spec:
        raise OblivioError("checkpoint sidecar has no training record; was it written by 'oblivio train'?")
    if not isinstance(spec, dict) or not isinstance(spec.get("data"), dict):
        raise OblivioError("checkpoint sidecar: its training record is not a mapping with a 'data' entry")
    check_seed(spec.get("seed"), "checkpoint sidecar: training seed")
    tpf = spec.get("third_party_fraction")
    if isinstance(tpf, bool) or not isinstance(tpf, (int, float)):
        raise OblivioError(f"checkpoint sidecar: training third_party_fraction must be a number, got {tpf!r}")
    data = data if data is not None else load_from_spec(spec["data"])
    check_classes(data, meta)
    imported = spec.get("imported") if isinstance(spec.get("imported"), dict) else {}
    in_memory = isinstance(data.x_train, torch.Tensor)  # streamed data is not read whole for every request
    if in_memory and imported.get("data_fingerprint") not in (None, data.fingerprint()):
        raise OblivioError("the data differs from the data the model was imported with (its fingerprint changed)")
    cut = recorded_cut(spec, len(data.y_train))
    poison = scenario_from_dict(spec["backdoor"]) if spec.get("backdoor") else None
    if scenario is None or isinstance(scenario, Backdoor):
        if poison is None:
            raise OblivioError("the backdoor scenario needs a model trained with --backdoor; this one was trained on clean data")
        scenario = poison
    elif poison is not None:
        raise OblivioError(
            "this model was trained on backdoored data; forget the poisoned samples first (--scenario backdoor)"
        )
    split = make_split(data, scenario, spec["seed"], spec["third_party_fraction"], cut=cut)
    if split.hashes()["pool"] != spec["pool_hash"]:
        raise OblivioError("the rebuilt training pool differs from the one the model was trained on (data changed?)")
    return data, split


def split_for_checkpoint(meta: dict) -> tuple[Dataset, Split]:
    """Rebuild the data and forget split recorded in an unlearned checkpoint's sidecar (its ``split`` field)."""
    recorded = meta.get("split")
    if not recorded:
        raise OblivioError("checkpoint sidecar records no forget split; was it written by 'oblivio forget'?")
    data, split = split_for_request(meta, scenario_from_dict(recorded["scenario"]))
    if split.hashes() != recorded["hashes"]:
        raise OblivioError("the rebuilt forget split differs from the one recorded in the checkpoint (data changed?)")
    return data, split



def forgotten_before(meta: dict) -> np.ndarray:
    """Training-set indices the model behind ``meta`` already forgot: recorded by the ledger or by
    ``oblivio forget`` (``forgotten``), else the forget set of the split its sidecar records, else none."""
    extra = meta.get("extra") or {}
    for record in (extra.get("ledger") or {}, extra.get("unlearning") or {}):
        if "forgotten" in record:
            return np.asarray(record["forgotten"], dtype=np.int64)
    if meta.get("split"):
        return split_for_checkpoint(meta)[1].forget_idx
    return np.array([], dtype=np.int64)


@dataclass
class LineageSplit:
    """A request's split on a checkpoint whose lineage already forgot ``previous`` (training-set indices).

    ``split`` leaves ``previous`` out of its pool, so its retain set never brings them back; ``request`` is the
    request's own split (what ``split_for_checkpoint`` rebuilds from its spec); ``new``: the request's indices
    not forgotten before."""

    data: Dataset
    split: Split
    request: Split
    new: np.ndarray
    previous: np.ndarray

    @property
    def forgotten(self) -> list[int]:
        """Everything forgotten once this request is: the lineage's record for the next one."""
        return sorted(int(i) for i in np.union1d(self.previous, self.split.forget_idx))


def split_with_lineage(meta: dict, scenario: Scenario | None) -> LineageSplit:
    """The split of a new request on ``meta``'s checkpoint, counting what its lineage already forgot."""
    data, request = split_for_request(meta, scenario)
    previous = forgotten_before(meta)
    new = np.setdiff1d(request.forget_idx, previous)
    if previous.size and new.size == 0:
        raise OblivioError("every sample of this request was already forgotten by this checkpoint's lineage")
    previous = np.setdiff1d(previous, request.forget_idx)
    split = replace(request, pool_idx=np.setdiff1d(request.pool_idx, previous)) if previous.size else request
    return LineageSplit(data, split, request, new, previous)
