"""Tune a method's options for a benchmark scenario, fairly: on a *validation request*, never on the evaluated one.

The validation request is a different forget set of the same kind, drawn from the same dataset:

- ``random``: another random subset of the same size from the same train pool, drawn from a
  separate seed stream and disjoint from the evaluated forget set whenever the pool allows it.
  The original model is the evaluated one (it trained on the whole pool).
- ``class``: as many other classes as the evaluated request forgets, drawn from a separate seed
  stream; same original model.
- ``backdoor``: the same trigger and poison rate with another split seed (``seed + VALIDATION_SEED_OFFSET``),
  so another set of poisoned samples and another poisoned original model, trained with the same recipe.

Each trial unlearns the validation request with the options the method's ``search_space``
proposes and scores them by Avg. Gap (mean |Δ| over UA, RA, TA, MIA) against the validation
request's own retrained model. Trial 0 is always the method's defaults, so a tuned row is never
worse than the defaults on the validation request. Models (original, retrain) are cached as
checkpoints; trials are stored in an Optuna study (SQLite), so a rerun resumes and never repeats a
finished trial. Each trial's TPE sampler is seeded from (seed, trial number): the same seed gives
the same trials, interrupted or not.

    from oblivio.tune import tune
    result = tune("benchmarks/digits.yaml", "salun", "random", trials=20, study="runs/tune/study.db")
    print(result.best_params, result.best_value)
"""
from __future__ import annotations

import dataclasses
import os
import time
import uuid
import zlib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from . import __version__
from .bench.config import BenchConfig, load_config, stable_hash
from .bench.store import Store, code_hash, method_code_hash, model_base
from .data import Dataset, load_from_spec
from .device import resolve_device
from .errors import OblivioError
from .methods import get_method
from .parallel import Executor, SerialExecutor, Task, TaskFailed
from .scenarios import Backdoor, ClassForget, RandomSubset, Split, make_split
from .training import place, train
from .unlearning import unlearn
from .validation import check_seed

VALIDATION_SEED_OFFSET = 1_000_003  # backdoor validation requests use another split seed
VALIDATION_STREAM = 3  # the random-number stream of the validation forget set (make_split uses 0 and 1)
FINISHED = ("COMPLETE", "FAIL", "PRUNED")


@dataclass
class TuneResult:
    """What a tuning run found; ``trials`` lists every finished trial (number, state, value, params)."""

    method: str
    scenario: str
    seed: int
    study_name: str
    storage: str
    budget: int
    ran: int  # trials run by this call (the rest came from the study file)
    best_params: dict[str, Any]
    best_value: float
    default_value: float | None
    validation: str  # what the validation request is
    trials: list[dict] = field(default_factory=list)
    seconds: float = 0.0
    default_number: int | None = None  # the trial that ran the defaults

    @property
    def options(self) -> dict[str, Any]:
        """The tuned options (the search space's values of the best trial)."""
        return dict(self.best_params)


def _optuna():
    try:
        import optuna
    except ImportError as e:  # pragma: no cover - optuna is a dependency
        raise OblivioError(f"oblivio tune needs optuna (pip install optuna): {e}") from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna


def validation_split(data: Dataset, cfg: BenchConfig, scenario: str, seed: int) -> tuple[Split, str]:
    """The validation request for ``scenario`` of ``cfg`` at ``seed`` (see the module docstring) and a description."""
    if scenario not in cfg.scenarios:
        raise OblivioError(f"config {cfg.name!r} has no scenario {scenario!r}; it has: {', '.join(cfg.scenarios)}")
    evaluated = make_split(data, cfg.scenario(scenario), seed, cfg.third_party_fraction)
    rng = np.random.default_rng([seed, VALIDATION_STREAM])
    kind = evaluated.scenario
    if isinstance(kind, RandomSubset):
        n = len(evaluated.forget_idx)
        others = np.setdiff1d(evaluated.pool_idx, evaluated.forget_idx, assume_unique=True)
        source = others if len(others) - n >= 1 else evaluated.pool_idx
        forget = np.sort(rng.choice(source, size=n, replace=False))
        split = make_split(data, RandomSubset(indices=tuple(int(i) for i in forget)), seed, cfg.third_party_fraction)
        overlap = len(np.intersect1d(forget, evaluated.forget_idx))
        return split, f"another random {n} samples of the seed-{seed} pool ({overlap} shared with the evaluated request)"
    if isinstance(kind, ClassForget):
        k = data.info.num_classes
        free = [c for c in range(k) if c not in kind.classes]
        if len(free) < len(kind.classes):
            raise OblivioError(f"cannot tune on another class: forgetting {list(kind.classes)} of {k} leaves too few")
        classes = tuple(sorted(int(c) for c in rng.choice(free, size=len(kind.classes), replace=False)))
        split = make_split(data, ClassForget(classes), seed, cfg.third_party_fraction)
        return split, f"class {', '.join(map(str, classes))} instead of {', '.join(map(str, kind.classes))}"
    if isinstance(kind, Backdoor):
        vseed = seed + VALIDATION_SEED_OFFSET
        split = make_split(data, kind, vseed, cfg.third_party_fraction)
        return split, f"the same trigger on other poisoned samples (split seed {vseed}, its own poisoned original)"
    raise OblivioError(f"cannot tune scenario {scenario!r} of kind {type(kind).__name__}")


class ModelCache:
    """Originals and retrained models of validation requests, cached as checkpoints in a ``Store``.

    The original's key is the benchmark runner's, so a tuning run inside a benchmark's output
    directory reuses the benchmark's originals (and vice versa).
    """

    def __init__(self, cfg: BenchConfig, data: Dataset, store: Store):
        self.cfg, self.data, self.store = cfg, data, store
        self.device = resolve_device(cfg.device)
        self.base = model_base(cfg, self.device)  # as the benchmark runner keys its models

    def _trained(self, spec: dict, split: Split, train_set, seed: int) -> nn.Module:
        def build() -> tuple[nn.Module, dict]:
            model, history = train(self.cfg.model, train_set, self.data.num_classes, self.cfg.train_config(seed),
                                   device=self.device)
            return model, {"seconds": history.seconds}

        info = self.data.info
        model, _ = self.store.model(Store.key(self.base | spec), build, arch=self.cfg.model,
                                    input_shape=info.input_shape, num_classes=info.num_classes, dataset=info.name,
                                    seed=seed)
        return place(model, self.device)

    def original(self, split: Split) -> nn.Module:
        poison = asdict(split.scenario) if isinstance(split.scenario, Backdoor) else None
        return self._trained({"role": "original", "seed": split.seed, "poison": poison}, split, split.train, split.seed)

    def retrain(self, split: Split) -> nn.Module:
        spec = {"role": "retrain", "validation": True, "scenario_spec": asdict(split.scenario),
                "forget": split.hashes()["forget"], "seed": split.seed}
        return self._trained(spec, split, split.retain, split.seed)

    def prepare(self, split: Split) -> nn.Module:
        """Train (or load) the original of ``split`` into the cache, for every trial to load; return the retrain."""
        self.original(split)
        return self.retrain(split)


def prepare_validation(cfg: BenchConfig, scenario: str, seed: int | None, cache_dir: str | Path,
                       data: Dataset | None = None) -> str:
    """Train (or find in ``cache_dir``) the original and retrained model of ``scenario``'s validation request.

    Run once per scenario before tuning several methods in parallel, so that they do not all train
    the same models at once. Returns the validation request's description.
    """
    data = data if data is not None else load_from_spec(cfg.dataset)
    vsplit, described = validation_split(data, cfg, scenario, cfg.seeds[0] if seed is None else int(seed))
    ModelCache(cfg, data, Store(Path(cache_dir))).prepare(vsplit)
    return described


def search_space_of(method: str) -> Callable[[Any], dict[str, Any]]:
    """The ``search_space(trial)`` of a registered method (an error if it has nothing to tune)."""
    return type(get_method(method)).search_space


def default_params(method: str, fixed: dict | None = None) -> dict[str, Any]:
    """The method's default value (or the config's fixed option) of every option its search space tunes."""

    names: list[str] = []

    class _Probe:  # a stand-in trial that only records which options the space asks for
        def _record(self, name: str, *args: Any, **kwargs: Any) -> Any:
            names.append(name)
            return args[0][0] if isinstance(args[0], (list, tuple)) else args[0]

        suggest_float = suggest_int = suggest_categorical = _record

    search_space_of(method)(_Probe())
    config = get_method(method, **(fixed or {})).config
    return {n: getattr(config, n) for n in names}


def study_name(cfg: BenchConfig, method: str, scenario: str, seed: int, fixed: dict) -> str:
    """A study per (config content, method code and fixed options, scenario, seed): changed code starts a new one."""
    from .audit import measure

    key = stable_hash({"base": cfg.base_spec(), "scenario": cfg.scenarios[scenario], "options": fixed,
                       "method_code": method_code_hash(method), "audit": code_hash(measure),
                       "oblivio": __version__, "validation": [VALIDATION_SEED_OFFSET, VALIDATION_STREAM]})
    return f"{cfg.name}:{scenario}:{method}:seed{seed}:{key}"


MAX_TRIALS = 100_000  # each trial is a task object and a study row; a budget beyond this is a typo


def _storage(study: str | Path) -> str:
    """The storage URL of ``study``, checked before any work: a URL whose database driver is installed, or a
    SQLite file (new, or one that is SQLite) in a folder this process can write."""
    s = str(study)
    if "://" in s:
        try:
            from sqlalchemy.engine import make_url

            make_url(s).get_dialect()
        except Exception as e:  # noqa: BLE001 - unknown scheme, missing driver module, malformed URL
            scheme = s.split("://", 1)[0]
            raise OblivioError(f"--study {scheme}://...: this storage is not available here ({type(e).__name__}: "
                               f"{str(e).splitlines()[0] if str(e) else 'unknown'}); use a SQLite file or install "
                               "its database driver") from None
        return s
    path = Path(s).expanduser().resolve()
    if path.is_dir():
        raise OblivioError(f"--study {study} is a directory; give a SQLite file (e.g. runs/tune/study.db)")
    if path.is_file() and path.stat().st_size:
        with path.open("rb") as f:
            if f.read(16) != b"SQLite format 3\x00":
                raise OblivioError(f"--study {study} is not a SQLite study file; give a new path or a study written "
                                   "by oblivio tune")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OblivioError(f"--study {study}: cannot create its folder ({e.strerror or e})") from None
    if not os.access(path.parent, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise OblivioError(f"--study {study}: not writable (SQLite needs to write the file and its folder)")
    return f"sqlite:///{path}"


def storage_url(study: str | Path) -> str:
    """The Optuna storage URL of ``study``: a URL as given, or ``sqlite:///`` + the absolute path of a file."""
    return _storage(study)


def open_storage(url: str):
    """The Optuna storage for ``url``; SQLite waits up to 2 minutes for a lock, so parallel workers can share a file."""
    optuna = _optuna()
    if url.startswith("sqlite:"):
        return optuna.storages.RDBStorage(url, engine_kwargs={"connect_args": {"timeout": 120}})
    return url


def _trial_rows(study) -> list[dict]:
    return [{"number": t.number, "state": t.state.name, "value": t.value, "params": dict(t.params),
             "error": t.user_attrs.get("error"), "metrics": t.user_attrs.get("metrics")}
            for t in study.trials if t.state.name in FINISHED]


def tune(
    config: BenchConfig | str | Path,
    method: str,
    scenario: str,
    trials: int,
    *,
    seed: int | None = None,
    study: str | Path = "runs/tune/study.db",
    cache_dir: str | Path | None = None,
    data: Dataset | None = None,
    progress: Callable[[dict], None] | None = None,
    executor: Executor | None = None,
    device: str | None = None,
    threads: int | None = None,
) -> TuneResult:
    """Tune ``method``'s options for ``scenario`` of a benchmark config with a budget of ``trials`` trials.

    ``seed`` (default: the config's first seed) picks the split, the validation request and the
    sampler. ``study`` is a SQLite file (or any Optuna storage URL) holding every trial; trials
    already finished there count against the budget. ``cache_dir`` holds the models (default: a
    ``models`` folder beside the study file). ``progress`` is called with each finished trial's row.
    """
    optuna = _optuna()
    cfg = config if isinstance(config, BenchConfig) else load_config(config)
    if device is not None:  # overrides the config's device key
        cfg = dataclasses.replace(cfg, device=device)
    if threads is not None:  # and ``threads`` its threads key
        cfg = dataclasses.replace(cfg, threads=threads)
    resolve_device(cfg.device)
    if isinstance(trials, bool) or not isinstance(trials, int) or not 1 <= trials <= MAX_TRIALS:
        raise OblivioError(f"tune: trials must be an integer from 1 to {MAX_TRIALS:,}, got {trials!r}")
    if seed is not None:
        check_seed(seed, "tune: seed")
    if method in ("retrain",):
        raise OblivioError("tune: retrain has nothing to tune")
    seed = cfg.seeds[0] if seed is None else int(seed)
    fixed = dict(cfg.methods.get(method, {}))
    defaults = default_params(method, fixed)
    if not defaults:
        raise OblivioError(f"tune: method {method!r} declares no options to tune")
    storage = _storage(study)  # before any work: a bad --study fails at once
    data = data if data is not None else load_from_spec(cfg.dataset)
    vsplit, described = validation_split(data, cfg, scenario, seed)
    cache = Path(cache_dir) if cache_dir is not None else (
        Path(str(study)).expanduser().resolve().parent / "models" if "://" not in str(study) else Path("runs/tune/models"))
    name = study_name(cfg, method, scenario, seed, fixed)
    start = time.perf_counter()
    threads = torch.get_num_threads()
    ran = 0
    try:
        torch.set_num_threads(cfg.threads or threads)
        s = optuna.create_study(study_name=name, storage=open_storage(storage), direction="minimize",
                                load_if_exists=True)
        done = [t for t in s.trials if t.state.name in FINISHED]
        todo = trials - len(done)
        if todo > 0:
            from .audit import measure

            gold = measure(ModelCache(cfg, data, Store(cache)).prepare(vsplit), vsplit, seed=vsplit.seed)
            if not done and not any(t.state.name == "WAITING" for t in s.trials):
                # the first trial: the method's defaults (again if a killed run left it RUNNING)
                s.enqueue_trial(defaults)
            run = _TrialRun(cfg, method, scenario, seed, fixed, storage, name, str(cache),
                            {k: float(v) for k, v in gold.items()}, max(3, min(10, trials // 3)), uuid.uuid4().hex)
            executor = executor or SerialExecutor()
            shared_run, shared_data = executor.share(run), executor.share(data)

            def finished(_: int, row: Any) -> None:
                if progress is not None and not isinstance(row, TaskFailed):
                    progress(row)

            try:
                results = []
                if not isinstance(executor, SerialExecutor) and any(t.state.name == "WAITING" for t in s.trials):
                    # the enqueued defaults first, here: parallel workers sharing SQLite could both pop the one
                    # waiting trial (Optuna then fails with UpdateFinishedTrialError)
                    results.append(_one_trial(run, data))
                    finished(0, results[0])
                results += executor.map(_one_trial, [Task((shared_run, shared_data)) for _ in range(todo - len(results))],
                                        finished, num_cpus=cfg.threads or 1, num_gpus=executor.gpus())
            finally:
                _TRIAL_STATE.pop(run.token, None)
            ran = len(results)
            failed = next((r for r in results if isinstance(r, TaskFailed)), None)
            if failed is not None:
                raise OblivioError(f"tune: a trial failed outside the method: {failed.error}") from failed.exception
        s = optuna.load_study(study_name=name, storage=open_storage(storage))
    finally:
        torch.set_num_threads(threads)
    rows = _trial_rows(s)[:trials]
    complete = [r for r in rows if r["state"] == "COMPLETE"]
    if not complete:
        raise OblivioError(f"tune: every trial of {method!r} failed, e.g. {rows[-1]['error'] if rows else '?'}")
    best = min(complete, key=lambda r: (r["value"], r["number"]))
    first = next((r for r in rows if r["params"] == defaults and r["state"] == "COMPLETE"), None)
    return TuneResult(method=method, scenario=scenario, seed=seed, study_name=name, storage=storage, budget=trials,
                      ran=ran, best_params=dict(best["params"]), best_value=float(best["value"]),
                      default_value=None if first is None else float(first["value"]), validation=described,
                      trials=rows, seconds=time.perf_counter() - start,
                      default_number=None if first is None else first["number"])


@dataclass(frozen=True)
class _TrialRun:
    """What every trial of one ``tune`` call shares (sent once to each worker)."""

    cfg: BenchConfig
    method: str
    scenario: str
    seed: int
    fixed: dict
    storage: str
    name: str
    cache: str
    gold: dict
    n_startup: int
    token: str


# Per process and tune call: the validation split and its original model, loaded once for all trials.
_TRIAL_STATE: dict[str, tuple[Split, nn.Module]] = {}


def _one_trial(run: _TrialRun, data: Dataset) -> dict:
    """Run the next trial of the study (sampler seeded from its number); its row."""
    from .audit import gap_to_retrain, measure

    optuna = _optuna()
    if run.token not in _TRIAL_STATE:
        _TRIAL_STATE.clear()
        if run.cfg.threads:
            torch.set_num_threads(run.cfg.threads)
        vsplit, _ = validation_split(data, run.cfg, run.scenario, run.seed)
        _TRIAL_STATE[run.token] = vsplit, ModelCache(run.cfg, data, Store(Path(run.cache))).original(vsplit)
    vsplit, original = _TRIAL_STATE[run.token]
    space = search_space_of(run.method)

    def objective(trial) -> float:
        params = space(trial)
        trial.set_user_attr("options", {k: v for k, v in params.items()})
        try:
            result = unlearn(original, split=vsplit, method=run.method, arch=run.cfg.model, seed=vsplit.seed,
                             device=resolve_device(run.cfg.device), amp=run.cfg.amp,
                             augment=run.cfg.train.get("augment"), train_epochs=run.cfg.train_config(vsplit.seed).epochs,
                             **(run.fixed | params))
            metrics = measure(result.model, vsplit, seed=vsplit.seed)
        except OblivioError as e:
            trial.set_user_attr("error", str(e).splitlines()[0])
            raise
        trial.set_user_attr("metrics", {k: float(v) for k, v in metrics.items()})
        trial.set_user_attr("seconds", result.seconds)
        return float(gap_to_retrain(metrics, run.gold)["avg_gap"])

    s = optuna.load_study(study_name=run.name, storage=open_storage(run.storage))
    s.sampler = optuna.samplers.TPESampler(seed=_sampler_seed(run.seed, len(s.trials), run.name),
                                           n_startup_trials=run.n_startup)
    mine: list[int] = []
    s.optimize(objective, n_trials=1, catch=(OblivioError,), callbacks=[lambda _, trial: mine.append(trial.number)])
    return next(r for r in _trial_rows(s) if r["number"] == mine[0])


def _sampler_seed(seed: int, number: int, study: str) -> int:
    """The sampler seed of trial ``number``: from the seed and the study (so methods and scenarios draw differently)."""
    return int(np.random.SeedSequence([seed, number, zlib.crc32(study.encode())]).generate_state(1)[0])


def tuned_options(result: TuneResult, fixed: dict | None = None) -> dict[str, Any]:
    """The options a tuned benchmark row runs with: the config's fixed options, then the tuned values."""
    return dict(fixed or {}) | result.options


__all__ = ["TuneResult", "VALIDATION_SEED_OFFSET", "default_params", "prepare_validation", "study_name", "tune",
           "tuned_options", "validation_split"]
