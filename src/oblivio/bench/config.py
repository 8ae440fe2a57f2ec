"""Benchmark configuration: one YAML file names the dataset, model, training recipe, methods, scenarios and seeds.

    name: digits
    dataset: {name: digits, n_train: null, n_test: null}
    model: mlp
    train: {epochs: 20, batch_size: 64, lr: 0.05}   # also augment: crop:4+flip (see oblivio.augment)
    third_party_fraction: 0.1
    seeds: [0, 1, 2]
    scenarios:                      # name -> options; ``kind`` defaults to the name
      random: {fraction: 0.1}
      class: {classes: [3]}
      backdoor: {fraction: 0.1, target: 0}
    methods: [ft, ga, {dm: {epochs: 3}}]   # or a mapping name -> options, or "all"
    sequential: {requests: 5, fraction: 0.02, methods: [ft, dm], seeds: [0]}
    tune: {trials: 20, methods: [ft, dm], seed: 0}   # adds rows "ft (tuned, 20 trials)" (see oblivio.tune)
    population: 32                  # per seed and scenario: 32 originals, 32 retrains, each method on every original
    output: runs/bench/digits
    device: auto                    # auto (CUDA when present), cpu, cuda, cuda:N; `oblivio bench --device` overrides
    amp: null                       # or bf16: autocast for training, unlearning and measuring
    deterministic: false            # deterministic CUDA kernels (see oblivio.device)
    ray: {gpus_per_task: 0.25, cpus_per_task: 1}   # resources per task under --ray (default: 1 GPU if any)

"original", "retrain" and "retrain (other seed)" rows are always part of a run: the retrain row is the
gold standard, a fresh model trained with the same recipe and seed on the retain set only; the other-seed
retrain is trained the same way from another seed and scored like a method, so its gap is the noise floor
(how far two honest retrains differ). With ``population: N`` every row is N members (member 0 trains from
the seed itself, the others from seeds derived from it, see ``population.member_seed``) on the same split,
and the report adds per-example metrics over the members (``oblivio.audit.population``).
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import typing
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from ..device import check_amp
from ..errors import OblivioError
from ..methods import available_methods, get_method
from ..scenarios import Scenario, check_third_party_fraction, scenario_from_dict
from ..validation import check_seed
from ..yaml_text import load_yaml
from ..training import TrainConfig

NOISE_FLOOR = "retrain (other seed)"
RESERVED = ("original", "retrain", NOISE_FLOOR)
MAX_POPULATION = 1024
_TOP_KEYS = {"name", "dataset", "model", "train", "third_party_fraction", "seeds", "scenarios", "methods",
             "sequential", "tune", "population", "threads", "output", "ray", "device", "amp", "deterministic"}
_RAY_KEYS = ("gpus_per_task", "cpus_per_task")


@dataclass(frozen=True)
class SequentialConfig:
    """``requests`` disjoint random deletion requests, each ``fraction`` of the train pool, served one after another."""

    requests: int
    fraction: float
    methods: tuple[str, ...]
    seeds: tuple[int, ...]

    def __post_init__(self) -> None:
        if self.requests < 1:
            raise OblivioError(f"sequential: requests must be at least 1, got {self.requests}")
        if not 0 < self.fraction * self.requests < 1:
            raise OblivioError(
                f"sequential: {self.requests} requests of fraction {self.fraction} must delete less than the whole pool"
            )


@dataclass(frozen=True)
class TuneConfig:
    """Tune each of ``methods`` per scenario with ``trials`` trials (same budget for all) before the grid.

    ``seed`` picks the validation request and the sampler (default: the grid's first seed); the
    tuned options then run on every seed as extra rows ``<method> (tuned, <trials> trials)``.
    """

    trials: int
    methods: tuple[str, ...]
    seed: int | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.trials, int) or self.trials < 1:
            raise OblivioError(f"tune: trials must be a positive integer, got {self.trials!r}")

    def label(self, method: str) -> str:
        """The row name of ``method`` with tuned options."""
        return f"{method} (tuned, {self.trials} trials)"


@dataclass(frozen=True)
class BenchConfig:
    """A validated benchmark grid (see the module docstring for the YAML layout)."""

    name: str
    dataset: dict
    model: str
    train: dict
    seeds: tuple[int, ...]
    scenarios: dict[str, dict]
    methods: dict[str, dict]
    third_party_fraction: float = 0.1
    sequential: SequentialConfig | None = None
    tune: TuneConfig | None = None
    population: int | None = None
    threads: int | None = None
    output: str | None = None
    device: str = "auto"
    amp: str | None = None
    deterministic: bool = False
    ray: dict = field(default_factory=dict)
    source: str | None = field(default=None, compare=False)

    @property
    def members(self) -> int:
        """Members per (seed, scenario, row): the population size, 1 without one."""
        return self.population or 1

    def scenario(self, name: str) -> Scenario:
        return scenario_from_dict(self.scenarios[name])

    def train_config(self, seed: int) -> TrainConfig:
        return TrainConfig(**self.train, seed=seed, amp=self.amp)

    def base_spec(self) -> dict:
        """The parts every cell depends on: data, model, training recipe (with its precision), pool cut."""
        spec = {"dataset": self.dataset, "model": self.model, "train": self.train,
                "third_party_fraction": self.third_party_fraction}
        if self.amp:
            spec["amp"] = self.amp
        return spec

    def to_dict(self) -> dict:
        d = asdict(self)
        d.pop("source")
        return d

    def hash(self) -> str:
        """Short hash of everything that decides the numbers (not the output dir, thread count, Ray resources
        or device choice)."""
        d = self.to_dict()
        d.pop("output"), d.pop("threads"), d.pop("ray"), d.pop("device")
        for key, off in (("amp", None), ("deterministic", False), ("population", None)):  # keep the hashes of configs without them
            if d[key] == off:
                d.pop(key)
        return stable_hash(d)


def check_population(value: Any, where: str) -> int:
    """``value`` as a population size (1 = no population), or a one-line error naming ``where``."""
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_POPULATION:
        raise OblivioError(f"{where} must be an integer from 1 to {MAX_POPULATION}, got {value!r}")
    return value


def stable_hash(obj: Any, n: int = 12) -> str:
    """SHA-256 (first ``n`` hex digits) of canonical JSON."""
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:n]


def _seeds(value: Any, where: str) -> tuple[int, ...]:
    if isinstance(value, int) and not isinstance(value, bool):
        value = [value]
    if not isinstance(value, (list, tuple)) or not value or not all(isinstance(s, int) and not isinstance(s, bool)
                                                                    for s in value):
        raise OblivioError(f"{where}: seeds must be a non-empty list of integers, got {value!r}")
    for s in value:
        check_seed(s, f"{where}: seed")
    if len(set(value)) != len(value):
        raise OblivioError(f"{where}: duplicated seeds {list(value)}")
    return tuple(value)


def _methods(value: Any, where: str) -> dict[str, dict]:
    """Normalise ``all`` / a list of names or one-key mappings / a mapping into name -> options."""
    if value == "all":
        return {m: {} for m in available_methods() if m not in RESERVED}
    items: list[tuple[str, Any]] = []
    if isinstance(value, dict):
        items = list(value.items())
    elif isinstance(value, list):
        for v in value:
            if isinstance(v, str):
                items.append((v, {}))
            elif isinstance(v, dict) and len(v) == 1:
                items.append(next(iter(v.items())))
            else:
                raise OblivioError(f"{where}: each method is a name or a one-key mapping name -> options, got {v!r}")
    elif value is not None:
        raise OblivioError(f"{where}: methods must be a list, a mapping or 'all', got {value!r}")
    out: dict[str, dict] = {}
    for name, options in items:
        if name in RESERVED:
            continue  # always run by the harness itself
        options = dict(options or {})
        if name in out:
            raise OblivioError(f"{where}: method {name!r} listed twice")
        get_method(name, **options)  # raises for an unknown method or option
        out[name] = options
    return out


def _scenarios(value: Any) -> dict[str, dict]:
    if not isinstance(value, dict) or not value:
        raise OblivioError("config: scenarios must be a non-empty mapping name -> options")
    out = {}
    for name, options in value.items():
        spec = {"kind": name} | dict(options or {})
        try:
            scenario = scenario_from_dict(dict(spec))
        except TypeError as e:
            raise OblivioError(f"config: scenario {name!r} has a bad option: {e}") from None
        out[str(name)] = asdict(scenario)
    return out


def _train(value: Any) -> dict:
    value = dict(value or {})
    known = {f.name for f in fields(TrainConfig)} - {"seed", "progress", "amp"}  # amp: a top-level key
    unknown = sorted(set(value) - known)
    if unknown:
        raise OblivioError(f"config: unknown train option {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    hints = typing.get_type_hints(TrainConfig)  # the recipe's numbers, as TrainConfig annotates them
    for name, given in value.items():
        kind = hints[name]
        if kind in (int, float) and (isinstance(given, bool) or not isinstance(given, int if kind is int else (int, float))):
            raise OblivioError(f"config: train option {name} must be {'an integer' if kind is int else 'a number'}, "
                               f"got {given!r}")
    recipe = {k: v for k, v in asdict(TrainConfig(**value)).items() if k in known}
    if recipe["augment"] is None:
        del recipe["augment"]  # keep the hashes and headers of configs without augmentation
    return recipe


def _section(value: Any, name: str, known: set[str], methods: dict[str, dict]) -> tuple[dict, tuple[str, ...]]:
    """A sub-section (``sequential``, ``tune``) as a dict with only ``known`` keys, and its methods:
    a subset of the grid's (their options come from there), all of them by default."""
    section = dict(value)
    extra = sorted(set(section) - known)
    if extra:
        raise OblivioError(f"config: unknown {name} option {', '.join(extra)}; known: {', '.join(sorted(known))}")
    chosen = tuple(_methods(section["methods"], name)) if "methods" in section else tuple(methods)
    missing = [m for m in chosen if m not in methods]
    if missing:
        raise OblivioError(f"{name}: method {missing[0]!r} is not in the grid's methods (its options come from there)")
    return section, chosen


def parse_config(doc: dict, source: str | None = None) -> BenchConfig:
    """Validate a config mapping (as read from YAML) into a ``BenchConfig``."""
    if not isinstance(doc, dict):
        raise OblivioError("config: the top level must be a mapping")
    unknown = sorted(set(doc) - _TOP_KEYS)
    if unknown:
        raise OblivioError(f"config: unknown key {', '.join(unknown)}; known: {', '.join(sorted(_TOP_KEYS))}")
    if doc.get("dataset") is None:
        raise OblivioError("config: no 'dataset:' key; name the data, e.g. 'dataset: {name: digits}' "
                           "(see benchmarks/digits.yaml)")
    dataset = doc["dataset"]
    if not isinstance(dataset, (str, dict)):
        raise OblivioError(f"config: dataset must be a name or a mapping with a name, got {dataset!r}")
    dataset = {"name": dataset} if isinstance(dataset, str) else dict(dataset)
    if "name" not in dataset:
        raise OblivioError("config: dataset needs a name")
    dataset = {"name": dataset.pop("name"), "root": dataset.pop("root", None), "n_train": dataset.pop("n_train", None),
               "n_test": dataset.pop("n_test", None), "subset_seed": dataset.pop("subset_seed", 0)} | dataset
    seeds = _seeds(doc.get("seeds", [0, 1, 2]), "config")
    methods = _methods(doc.get("methods", []), "config")
    sequential = None
    if doc.get("sequential"):
        s, seq_methods = _section(doc["sequential"], "sequential", {"requests", "fraction", "methods", "seeds"}, methods)
        sequential = SequentialConfig(int(s.get("requests", 5)), float(s.get("fraction", 0.02)), seq_methods,
                                      _seeds(s.get("seeds", list(seeds)), "sequential"))
    tune = None
    if doc.get("tune"):
        t, tune_methods = _section(doc["tune"], "tune", {"trials", "methods", "seed"}, methods)
        seed = t.get("seed")
        if seed is not None:
            check_seed(seed, "tune: seed")
        tune = TuneConfig(t.get("trials", 20), tune_methods, seed)
    population = doc.get("population")
    if population is not None:
        check_population(population, "config: population")
    threads = doc.get("threads")
    if threads is not None and (not isinstance(threads, int) or threads < 1):
        raise OblivioError(f"config: threads must be a positive integer, got {threads!r}")
    device = str(doc.get("device") or "auto")
    if not re.match(r"^(auto|cpu|cuda|cuda:\d+)$", device):
        raise OblivioError(f"config: unknown device {device!r}; choose auto, cpu, cuda or cuda:N")
    amp = check_amp(doc.get("amp"))
    if not isinstance(doc.get("deterministic", False), bool):
        raise OblivioError(f"config: deterministic must be true or false, got {doc['deterministic']!r}")
    ray = dict(doc.get("ray") or {})
    for key, value in ray.items():
        if key not in _RAY_KEYS:
            raise OblivioError(f"config: unknown ray option {key}; known: {', '.join(_RAY_KEYS)}")
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
            raise OblivioError(f"config: ray {key} must be a number at least 0, got {value!r}")
    tpf = check_third_party_fraction(float(doc.get("third_party_fraction", 0.1)), "config: third_party_fraction")
    return BenchConfig(
        name=str(doc.get("name") or (Path(source).stem if source else dataset["name"])),
        dataset=dataset, model=str(doc.get("model", "mlp")), train=_train(doc.get("train")), seeds=seeds,
        scenarios=_scenarios(doc.get("scenarios", {"random": {"fraction": 0.1}})), methods=methods,
        third_party_fraction=tpf, sequential=sequential, tune=tune, population=population, threads=threads,
        output=doc.get("output"), ray=ray,
        device=device, amp=amp, deterministic=bool(doc.get("deterministic", False)), source=source,
    )


def load_config(path: str | os.PathLike) -> BenchConfig:
    """Read and validate a benchmark YAML file (unknown and duplicate keys refused)."""
    path = Path(path)
    if not path.is_file():
        raise OblivioError(f"benchmark config not found: {path}")
    try:
        doc = load_yaml(path.read_text())
    except yaml.YAMLError as e:
        raise OblivioError(f"benchmark config {path} is not valid YAML: {str(e).splitlines()[0]} "
                           f"{str(getattr(e, 'problem', '') or '')}".strip()) from None
    except UnicodeDecodeError:
        raise OblivioError(f"benchmark config {path} is not a text file") from None
    if doc is None:
        raise OblivioError(f"benchmark config {path} is empty; see benchmarks/digits.yaml for the layout")
    return parse_config(doc, source=str(path))
