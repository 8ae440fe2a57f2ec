"""Glue shared by the CLI, audits and benchmarks: rebuild the data and split behind a checkpoint."""
from __future__ import annotations

from dataclasses import asdict

from .data import Dataset, load_from_spec
from .errors import OblivioError
from .scenarios import Backdoor, RandomSubset, Scenario, Split, make_split, scenario_from_dict

from .validation import check_seed

def training_spec(data_spec: dict, split: Split) -> dict:
    """What the original model was trained on: data, seed, pool cut and any poisoning."""
    return {
        "data": data_spec,
        "seed": split.seed,
        "third_party_fraction": split.third_party_fraction,
        "pool_hash": split.hashes()["pool"],
        "third_party_hash": split.hashes()["third_party"],
        "backdoor": asdict(split.scenario) if isinstance(split.scenario, Backdoor) else None,
    }


def training_split(data: Dataset, seed: int, third_party_fraction: float, backdoor: Backdoor | None) -> Split:
    """The split an original model trains on (``split.train``): poisoned if ``backdoor`` is given."""
    return make_split(data, backdoor or RandomSubset(count=1), seed, third_party_fraction)


def split_for_request(meta: dict, scenario: Scenario | None, data: Dataset | None = None) -> tuple[Dataset, Split]:
    """Rebuild the data and split of a checkpoint's training run for a new forget request.

    ``scenario`` None means the backdoor the model was trained with (or an error if none).
    ``data``: the dataset already loaded from ``meta["training"]["data"]`` (else it is loaded).
    """
    spec = meta.get("training")
    if not spec:
        raise OblivioError("checkpoint sidecar has no training record; was it written by 'oblivio train'?")
    data = data if data is not None else load_from_spec(spec["data"])
    poison = scenario_from_dict(spec["backdoor"]) if spec.get("backdoor") else None
    if not isinstance(spec, dict) or not isinstance(spec.get("data"), dict):
        raise OblivioError("checkpoint sidecar: its training record is not a mapping with a 'data' entry")
    check_seed(spec.get("seed"), "checkpoint sidecar: training seed")
    tpf = spec.get("third_party_fraction")
    if isinstance(tpf, bool) or not isinstance(tpf, (int, float)):
        raise OblivioError(f"checkpoint sidecar: training third_party_fraction must be a number, got {tpf!r}")
    if scenario is None or isinstance(scenario, Backdoor):
        if poison is None:
            raise OblivioError("the backdoor scenario needs a model trained with --backdoor; this one was trained on clean data")
        scenario = poison
    elif poison is not None:
        raise OblivioError(
            "this model was trained on backdoored data; forget the poisoned samples first (--scenario backdoor)"
        )
    split = make_split(data, scenario, spec["seed"], spec["third_party_fraction"])
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
