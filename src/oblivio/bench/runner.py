"""Run a benchmark grid: methods x scenarios x seeds, always with the original and retrain rows.

Per seed and scenario the split is built once, the original model is trained once (and shared
by every scenario on clean data of that seed), the gold-standard retrain is trained once on the
retain set, an other-seed retrain gives the noise floor, and each method unlearns from the original.
With a population every one of these is done per member (see ``population``). Every finished cell
is cached (see ``store``), so an interrupted run resumes where it stopped.

The grid is cut into jobs (``plan_jobs``): one per original model, one per cell, one per
sequential chain; a job waits for the original it starts from. An executor (``oblivio.parallel``)
runs them in this process or as Ray tasks; the cell logic (``_Runner``) is the same either way.

Every model trains, unlearns and is run over the data on the config's ``device``. In a serial run
the metrics of a cell (CPU work: the MIA SVC takes seconds on a 10k test set) are computed in a
thread pool from the model's outputs, so they overlap the next cell's GPU work.
"""
from __future__ import annotations

import dataclasses
import os
import sys
import time
import uuid
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn
from torch.utils.data import TensorDataset
from tqdm.auto import tqdm

from ..data import Dataset, load_from_spec
from ..device import check_amp, deterministic as deterministic_mode, gpu_recipe_warning, resolve_device
from ..errors import OblivioError
from ..parallel import Executor, SerialExecutor, Task, TaskFailed
from ..scenarios import Backdoor, RandomSubset, Split, make_split
from ..training import place, train
from ..unlearning import unlearn
from ..verification import NothingForgotten
from .config import NOISE_FLOOR, BenchConfig, check_population, load_config, stable_hash
from .population import member_seed, other_seed, per_example
from .report import BenchResult, assemble, git_commit, machine_header, write_report
from .store import Store, code_hash, method_code_hash, model_base


def count_cells(cfg: BenchConfig) -> int:
    """How many cells (original + retrain + other-seed retrain + methods, per seed, scenario and population member,
    plus sequential steps) a run has."""
    rows = 3 + len(cfg.methods) + (len(cfg.tune.methods) if cfg.tune else 0)
    n = len(cfg.seeds) * len(cfg.scenarios) * cfg.members * rows
    if cfg.sequential:
        s = cfg.sequential
        n += len(s.seeds) * s.requests * (2 + len(s.methods))
    return n


def measure_workers() -> int:
    """Threads that compute cells' metrics while the next model trains (serial runs)."""
    return max(1, min(8, (os.cpu_count() or 2) - 1))


def _first_line(e: Exception) -> str:
    message = str(e) if isinstance(e, OblivioError) else f"{type(e).__name__}: {e}"
    return (message.splitlines() or [type(e).__name__])[0]


def _error(e: Exception) -> dict:
    """A failed cell's record; ``refused`` marks a result that verification refused (it forgot nothing)."""
    return {"error": _first_line(e)} | ({"refused": True} if isinstance(e, NothingForgotten) else {})


CELL_FORMAT = 2  # cells carry per-example phi (population metrics); older cached cells are measured again


def _failed(doc: dict | Future) -> bool:
    """Whether a cell's model could not be built (a pending cell's model was built: only its metrics are due)."""
    return isinstance(doc, dict) and "error" in doc


class _Runner:
    """Computes (or loads from the cache) every cell of one config.

    Models (original, retrain, unlearned) are cached under keys without the audit code, cells
    (their measures) under keys with it: a changed metric re-measures cached models, it does not
    retrain or unlearn again.
    """

    def __init__(self, cfg: BenchConfig, data: Dataset, store: Store, pool: ThreadPoolExecutor | None = None):
        self.cfg, self.data, self.store, self.pool = cfg, data, store, pool
        self.device = resolve_device(cfg.device)
        from ..audit import metrics as audit_metrics

        self.outputs, self.metrics = audit_metrics.model_outputs, audit_metrics.metrics_from_outputs
        self.base = model_base(cfg, self.device)
        self.audit_code = code_hash(audit_metrics)  # a changed metric re-measures cached models
        self.method_code = {m: method_code_hash(m) for m in cfg.methods}
        self._models: dict[str, tuple[nn.Module, dict]] = {}
        self._splits: dict[tuple, Any] = {}
        self._seed: int | None = None
        self.tuned: dict[tuple[str, str], dict] = {}  # (scenario, method) -> tuned options (see ``tune_grid``)
        self.progress = False  # training steps shown under the cells bar (``_Run.progress``)
        self.tune_errors: dict[tuple[str, str], str] = {}  # (scenario, method) -> why its tuning failed

    # -- models -------------------------------------------------------------------------------------
    def _model(self, spec: dict, build: Callable[[], tuple[nn.Module, dict]], seed: int) -> tuple[nn.Module, dict]:
        """The model of ``spec`` and its record, from memory, the disk cache or ``build()``."""
        key = Store.key(self.base | spec)
        if key not in self._models:
            info = self.data.info
            model, record = self.store.model(key, build, arch=self.cfg.model, input_shape=info.input_shape,
                                             num_classes=info.num_classes, dataset=info.name, seed=seed)
            self._models[key] = (place(model, self.device), record)
        return self._models[key]

    def _trained(self, spec: dict, train_set: TensorDataset, seed: int) -> tuple[nn.Module, dict]:
        """A model trained from scratch with the config's recipe on ``train_set``."""
        def build() -> tuple[nn.Module, dict]:
            config = replace(self.cfg.train_config(seed), progress=self.progress)
            model, history = train(self.cfg.model, train_set, self.data.num_classes, config, device=self.device,
                                   leave_progress=False)
            return model, {"seconds": history.seconds}

        return self._model(spec, build, seed)

    def original(self, split: Split, member: int = 0) -> tuple[nn.Module, dict]:
        """The original model of this seed and population member (one per seed and member for clean data, one
        per backdoor poisoning)."""
        poison = asdict(split.scenario) if isinstance(split.scenario, Backdoor) else None
        spec = {"role": "original", "seed": split.seed, "poison": poison} | _member(member)
        return self._trained(spec, split.train, member_seed(split.seed, member))

    def _unlearned(self, spec: dict, start: Callable[[], nn.Module], split: Split, method: str,
                   forget: TensorDataset | None = None, options: dict | None = None,
                   member: int = 0, previously_forgotten: TensorDataset | None = None) -> tuple[nn.Module, dict]:
        """``method`` applied to ``start()``; a result that forgot nothing is kept and marked (``forgot_nothing``)."""
        options = self.cfg.methods[method] if options is None else options
        seed = member_seed(split.seed, member)

        def build() -> tuple[nn.Module, dict]:
            result = unlearn(start(), forget=forget, split=split, method=method, arch=self.cfg.model,
                             seed=seed, device=self.device, amp=self.cfg.amp, verify="record",
                             previously_forgotten=previously_forgotten, augment=self.cfg.train.get("augment"),
                             train_epochs=self.cfg.train_config(split.seed).epochs,
                             **options)
            return result.model, {"seconds": result.seconds, "info": result.info}

        return self._model(spec | {"role": "unlearned"}, build, seed)

    # -- cells --------------------------------------------------------------------------------------
    def _cell(self, spec: dict, model: Callable[[], tuple[nn.Module, dict]], split: Split, **extra: Any) -> dict | Future:
        """Measure ``model()`` on ``split`` (or read the cached cell), never letting one failure end the run.

        With a thread pool the model is built and run over the data here, and its metrics are computed in
        the pool: the cell is then a future, resolved by ``run_benchmark``.
        """
        head = {k: spec[k] for k in ("scenario", "method", "seed", "member", "step") if k in spec}
        key = self._cell_key(spec)

        def measured(outputs, record: dict, seconds: float) -> dict:
            start = time.perf_counter()
            metrics = self.metrics(outputs, split.seed)
            return head | extra | {"metrics": {k: float(v) for k, v in metrics.items()}, "seconds": record["seconds"],
                                   "info": record.get("info", {}), "per_example": per_example(outputs, split),
                                   "measure_seconds": seconds + time.perf_counter() - start,
                                   "load_avg": os.getloadavg()[0]}

        def compute() -> dict:
            net, record = model()
            start = time.perf_counter()
            return measured(self.outputs(net, split), record, time.perf_counter() - start)

        if self.pool is None:
            try:
                return self.store.cell(key, compute)
            except Exception as e:  # noqa: BLE001 - one broken method must not end a long run; the report lists it
                return head | _error(e)
        doc = self.store.cached_cell(key)
        if doc is not None:
            return doc
        try:
            net, record = model()
            start = time.perf_counter()
            outputs = self.outputs(net, split)
            seconds = time.perf_counter() - start
        except Exception as e:  # noqa: BLE001 - as above
            return head | _error(e)

        def finish() -> dict:
            try:  # counted when run_benchmark collects it
                return self.store.save_cell(key, measured(outputs, record, seconds), count=False)
            except Exception as e:  # noqa: BLE001 - as above
                return head | {"error": _first_line(e)}

        return self.pool.submit(finish)

    def _cell_key(self, spec: dict) -> str:
        return Store.key(self.base | spec | {"audit": self.audit_code, "cell_format": CELL_FORMAT})

    def _method_spec(self, method: str, options: dict | None = None) -> dict:
        options = self.cfg.methods[method] if options is None else options
        return {"method": method, "options": options, "code": self.method_code[method]}

    def split(self, seed: int, scenario: str) -> Split:
        """The split of ``scenario`` for ``seed`` (built once per seed)."""
        if (seed, scenario) not in self._splits:
            cfg = self.cfg
            self._splits[seed, scenario] = make_split(self.data, cfg.scenario(scenario), seed, cfg.third_party_fraction)
        return self._splits[seed, scenario]

    def _grid_spec(self, seed: int, name: str, method: str, tuned: bool = False, member: int = 0) -> dict:
        """What decides the cell of ``method`` (``original``, ``retrain``, the other-seed retrain, a method, a tuned
        method) on ``name`` for population ``member``."""
        where = {"scenario": name, "scenario_spec": self.cfg.scenarios[name], "seed": seed} | _member(member)
        if method in ("original", "retrain", NOISE_FLOOR):
            return where | {"method": method}
        if tuned:
            return where | self._method_spec(method, self.tuned[(name, method)]) | {"method": self.cfg.tune.label(method)}
        return where | self._method_spec(method)

    def grid_cell(self, seed: int, name: str, method: str, tuned: bool = False, member: int = 0) -> dict:
        """One cell of the main grid: ``original``, ``retrain``, the other-seed retrain or a method's (default or
        ``tuned``) unlearned model, for population ``member``."""
        split = self.split(seed, name)
        if tuned and (name, method) in self.tune_errors:  # its tuning failed: the row says why, the run goes on
            return {"scenario": name, "method": self.cfg.tune.label(method), "seed": seed, **_member(member),
                    "error": f"tuning failed: {self.tune_errors[name, method]}"}
        spec = self._grid_spec(seed, name, method, tuned, member)
        if method == "original":
            return self._cell(spec, lambda: self.original(split, member), split, sizes=split.sizes())
        if method in ("retrain", NOISE_FLOOR):
            where = {k: v for k, v in spec.items() if k != "method"} | {"role": "retrain"}
            train_seed = member_seed(seed, member)
            if method == NOISE_FLOOR:
                train_seed = other_seed(seed, member)
                where |= {"train_seed": train_seed}
            return self._cell(spec, lambda: self._trained(where, split.retain, train_seed), split, sizes=split.sizes())
        options = self.tuned[(name, method)] if tuned else None
        model = lambda: self._unlearned(spec, lambda: self.original(split, member)[0], split, method,  # noqa: E731
                                        options=options, member=member)
        return self._cell(spec, model, split, **({"options": options} if tuned else {}))

    # -- sequential requests ------------------------------------------------------------------------
    def request_splits(self, seed: int) -> list[tuple[Split, TensorDataset, TensorDataset | None]]:
        """Per step: the split with every request so far deleted (retain = the rest), this step's request, and
        the requests deleted before it (None at the first step)."""
        if ("sequential", seed) in self._splits:
            return self._splits["sequential", seed]
        s, cfg = self.cfg.sequential, self.cfg
        pool = make_split(self.data, RandomSubset(count=1), seed, cfg.third_party_fraction).pool_idx
        n = max(1, int(round(s.fraction * len(pool))))
        order = np.random.default_rng([seed, 2]).permutation(pool)
        requests = [np.sort(order[i * n:(i + 1) * n]) for i in range(s.requests)]
        steps = []
        for i, request in enumerate(requests):
            deleted = np.concatenate(requests[: i + 1])
            split = make_split(self.data, RandomSubset(indices=tuple(deleted.tolist())), seed, cfg.third_party_fraction)
            earlier = np.concatenate(requests[:i]) if i else None
            steps.append((split, split.subset(request), split.subset(earlier) if earlier is not None else None))
        self._splits["sequential", seed] = steps
        return steps

    def _plan(self, seed: int) -> dict:
        s = self.cfg.sequential
        return {"sequential": {"requests": s.requests, "fraction": s.fraction}, "seed": seed}

    def _sequential_spec(self, seed: int, step: int, method: str) -> dict:
        where = self._plan(seed) | {"step": step}
        return where | ({"method": method} if method in ("original", "retrain") else self._method_spec(method))

    def sequential_cell(self, seed: int, step: int, method: str) -> dict:
        """The ``original`` or ``retrain``-on-what-remains cell at one step of the sequential requests."""
        split = self.request_splits(seed)[step - 1][0]
        spec, deleted = self._sequential_spec(seed, step, method), len(split.forget_idx)
        if method == "original":
            return self._cell(spec, lambda: self.original(split), split, deleted=deleted)
        where = {k: v for k, v in spec.items() if k != "method"}
        return self._cell(spec, lambda: self._trained(where | {"role": "retrain"}, split.retain, seed), split,
                          deleted=deleted)

    def chain(self, seed: int, method: str) -> list[dict]:
        """Unlearn each request from the previous step's model (cached per step, rebuilt on demand)."""
        steps = self.request_splits(seed)
        previous: Callable[[], nn.Module] = lambda: self.original(steps[0][0])[0]
        docs = []
        for step, (split, request, earlier) in enumerate(steps, 1):
            spec = self._sequential_spec(seed, step, method)

            def model(spec=spec, previous=previous, split=split, request=request, earlier=earlier) -> tuple[nn.Module, dict]:
                return self._unlearned(spec, previous, split, method, forget=request, previously_forgotten=earlier)

            docs.append(self._cell(spec, model, split, deleted=len(split.forget_idx)))
            if _failed(docs[-1]):  # the chain cannot go on from a failed step
                docs += [{"seed": seed, "step": later, "method": method, "error": f"step {step} failed"}
                         for later in range(step + 1, len(steps) + 1)]
                break
            previous = lambda model=model: model()[0]
        return docs

    # -- jobs ---------------------------------------------------------------------------------------
    def cell_specs(self, job: "Job") -> list[dict]:
        """The specs of the cells ``job`` produces (none for an ``original`` job or a failed tuning)."""
        if job.kind == "grid" or (job.kind == "tuned" and (job.scenario, job.method) in self.tuned):
            return [self._grid_spec(job.seed, job.scenario, job.method, tuned=job.kind == "tuned", member=job.member)]
        if job.kind == "sequential":
            return [self._sequential_spec(job.seed, job.step, job.method)]
        if job.kind == "chain":
            return [self._sequential_spec(job.seed, step, job.method) for step in range(1, self.cfg.sequential.requests + 1)]
        return []

    def run(self, job: "Job") -> list[dict]:
        """The cells of one job (none for an ``original`` job, which only fills the model cache)."""
        if (job.seed, job.member) != self._seed:  # keep one seed's (and member's) models in memory at a time
            self._models.clear()
            if job.seed != (self._seed or (None,))[0]:
                self._splits.clear()
            self._seed = (job.seed, job.member)
        if job.kind == "original":
            needed = (spec for later in job.needed_by for spec in self.cell_specs(later))
            if all(self.store.has_cell(self._cell_key(spec)) for spec in needed):
                return []  # every cell starting from it is cached: no need to load (or rebuild) the model
            split = self.split(job.seed, job.scenario) if job.scenario else self.request_splits(job.seed)[0][0]
            try:
                self.original(split, job.member)
            except Exception:  # noqa: BLE001 - the cells that need it fail and report why
                pass
            return []
        if job.kind in ("grid", "tuned"):
            return [self.grid_cell(job.seed, job.scenario, job.method, tuned=job.kind == "tuned", member=job.member)]
        if job.kind == "sequential":
            return [self.sequential_cell(job.seed, job.step, job.method)]
        return self.chain(job.seed, job.method)


@dataclass(frozen=True)
class Job:
    """One unit of work of a run: ``original`` (train an original model into the cache), ``grid`` (one cell),
    ``tuned`` (one cell with tuned options), ``sequential`` (original/retrain at one step) or ``chain``
    (a method through every sequential step).

    ``heads`` name the cells it produces, for the error rows of a job that failed as a whole.
    """

    kind: str
    seed: int
    scenario: str | None = None
    method: str | None = None
    step: int | None = None
    heads: tuple = ()
    needed_by: tuple = ()  # for an ``original`` job: the jobs that start from its model
    member: int = 0  # population member (0 without a population)

    @property
    def label(self) -> str:
        where = f"seed {self.seed} {self.scenario}" if self.scenario else (
            f"sequential seed {self.seed}" + (f" step {self.step}" if self.step else ""))
        return f"{where}{f' member {self.member}' if self.member else ''} {self.method or 'original'}"


def plan_jobs(cfg: BenchConfig) -> list[Task]:
    """The jobs of a run in report order, each after the job training the original model it starts from.

    Originals come first for each seed so that every cell starting from one finds it in the cache.
    """
    tasks: list[Task] = []
    clean: dict[int, int] = {}  # seed -> the job training its clean original (shared with the sequential part)
    for seed, member in ((seed, member) for seed in cfg.seeds for member in range(cfg.members)):
        originals: dict[str, int] = {}
        for name in cfg.scenarios:
            scenario = cfg.scenario(name)
            key = stable_hash(asdict(scenario)) if isinstance(scenario, Backdoor) else "clean"
            if key not in originals:
                originals[key] = len(tasks)
                tasks.append(Task((Job("original", seed, name, member=member),)))
                if key == "clean" and member == 0:
                    clean[seed] = originals[key]
            after = (originals[key],)
            for method in ("original", "retrain", NOISE_FLOOR, *cfg.methods):
                head = {"scenario": name, "method": method, "seed": seed} | _member(member)
                tasks.append(Task((Job("grid", seed, name, method, heads=(head,), member=member),),
                                  () if method in ("retrain", NOISE_FLOOR) else after))
            for method in cfg.tune.methods if cfg.tune else ():
                head = {"scenario": name, "method": cfg.tune.label(method), "seed": seed} | _member(member)
                tasks.append(Task((Job("tuned", seed, name, method, heads=(head,), member=member),), after))
    s = cfg.sequential
    for seed in s.seeds if s else ():
        first = clean.get(seed, len(tasks))
        if seed not in clean:
            tasks.append(Task((Job("original", seed),)))
        for step in range(1, s.requests + 1):
            for method in ("original", "retrain"):
                head = {"seed": seed, "step": step, "method": method}
                tasks.append(Task((Job("sequential", seed, None, method, step, (head,)),), (first,)))
        for method in s.methods:
            heads = tuple({"seed": seed, "step": step, "method": method} for step in range(1, s.requests + 1))
            tasks.append(Task((Job("chain", seed, None, method, heads=heads),), (first,)))
    needed_by: dict[int, list[Job]] = {}
    for task in tasks:
        for i in task.after:
            needed_by.setdefault(i, []).append(task.args[0])
    return [Task((replace(t.args[0], needed_by=tuple(needed_by.get(i, ()))),), t.after) if t.args[0].kind == "original"
            else t for i, t in enumerate(tasks)]


def _member(member: int) -> dict:
    """The ``member`` key of specs and rows: absent for member 0, so runs without a population keep their keys."""
    return {"member": member} if member else {}


# Runners built in this process, per run: a Ray worker keeps one across the jobs of a run it is given.
_RUNNERS: dict[str, _Runner] = {}


@dataclass(frozen=True)
class _Run:
    """What every job of one run shares: the config, output dir, resume flag and a token naming the run."""

    cfg: BenchConfig
    out: str
    resume: bool
    since: float
    token: str
    tuned: dict = field(default_factory=dict)
    tune_errors: dict = field(default_factory=dict)
    progress: bool = False  # show each training's steps under the cells bar (serial runs in a terminal)


_POOLS: dict[str, ThreadPoolExecutor] = {}  # run token -> metric threads of a serial run in this process


def warm_up() -> None:
    """Pay a process's one-time costs before any cell is timed: torch imports ``torch._dynamo`` when a process builds
    its first optimiser (of any kind), which would otherwise be billed to the first cell that trains."""
    torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.1)


def _run_job(run: _Run, data: Dataset, job: Job) -> tuple[list[dict], int, int]:
    """Run one job; return its cells and how many cells were computed and read from the cache."""
    runner = _RUNNERS.get(run.token)
    if runner is None:
        _RUNNERS.clear()  # a worker serves one run at a time; drop an earlier run's models
        warm_up()
        if run.cfg.threads:
            torch.set_num_threads(run.cfg.threads)
        runner = _RUNNERS[run.token] = _Runner(run.cfg, data, Store(Path(run.out), resume=run.resume, since=run.since),
                                               _POOLS.get(run.token))
        runner.tuned, runner.tune_errors, runner.progress = run.tuned, run.tune_errors, run.progress
    computed, cached = runner.store.computed, runner.store.cached
    docs = runner.run(job)
    return docs, runner.store.computed - computed, runner.store.cached - cached


def _tune_one(cfg: BenchConfig, data: Dataset, out: str, scenario: str, method: str) -> tuple[dict, dict]:
    """Tune ``method`` on ``scenario`` (a study in ``<out>/tune.db``); its tuned options and a record for the report."""
    from ..tune import tune, tuned_options

    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    t = cfg.tune
    result = tune(cfg, method, scenario, t.trials, seed=t.seed, study=Path(out) / "tune.db", cache_dir=Path(out),
                  data=data)
    record = {"scenario": scenario, "method": method, "trials": t.trials, "seed": result.seed,
              "validation": result.validation, "best_value": result.best_value, "default_value": result.default_value,
              "options": result.best_params, "study": result.study_name, "seconds": round(result.seconds, 1)}
    return tuned_options(result, cfg.methods[method]), record


def _prepare_one(cfg: BenchConfig, data: Dataset, out: str, scenario: str) -> str:
    """Train (or load) the original and retrain of ``scenario``'s validation request into ``out``."""
    from ..tune import prepare_validation

    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    return prepare_validation(cfg, scenario, cfg.tune.seed, Path(out), data)


def tune_grid(cfg: BenchConfig, data: Any, out: Path, executor: Executor,
              bar: tqdm | None = None) -> tuple[dict[tuple[str, str], dict], list[dict], dict[tuple[str, str], str]]:
    """Tune every ``tune`` method per scenario (one task each, trials in order, so any executor gives the same
    options); the tuned options by (scenario, method), one record per tuning, and why a tuning failed
    (a failed tuning becomes a failed tuned row, the run goes on).

    ``data``: the dataset, or its handle from ``executor.share``.
    """
    from ..tune import open_storage, storage_url

    pairs = [(name, method) for name in cfg.scenarios for method in cfg.tune.methods]
    open_storage(storage_url(out / "tune.db"))  # create the tables here, not in several workers at once
    if bar is not None:
        bar.set_postfix_str(f"tuning {len(pairs)} methods x scenarios", refresh=True)
    # the validation requests' models first (one task per scenario), so parallel tunings share them
    executor.map(_prepare_one, [Task((cfg, data, str(out.resolve()), name)) for name in cfg.scenarios],
                 **_resources(cfg, executor))
    results = executor.map(_tune_one, [Task((cfg, data, str(out.resolve()), name, method)) for name, method in pairs],
                           **_resources(cfg, executor))
    tuned, records, errors = {}, [], {}
    for (name, method), r in zip(pairs, results):
        if isinstance(r, TaskFailed):
            errors[name, method] = (str(r.exception) if isinstance(r.exception, OblivioError) else r.error).splitlines()[0]
            records.append({"scenario": name, "method": method, "trials": cfg.tune.trials, "error": errors[name, method]})
        else:
            tuned[name, method] = r[0]
            records.append(r[1])
    return tuned, records, errors


def _resources(cfg: BenchConfig, executor: Executor) -> dict:
    """CPUs and GPUs one job claims: the executor's GPU share, else the config's ``ray`` section, else 1 GPU if any."""
    gpus = executor.gpus_per_task
    if gpus is None:
        gpus = cfg.ray.get("gpus_per_task")
    if gpus is None:
        gpus = executor.gpus()
    return {"num_cpus": cfg.ray.get("cpus_per_task") or cfg.threads or 1, "num_gpus": gpus}


def run_benchmark(
    config: BenchConfig | str | Path,
    out_dir: str | Path | None = None,
    *,
    resume: bool = True,
    progress: bool = True,
    executor: Executor | None = None,
    device: str | None = None,
    amp: str | None = None,
    deterministic: bool | None = None,
    population: int | None = None,
    threads: int | None = None,
) -> BenchResult:
    """Run (or resume) the grid of ``config`` and write CSVs and a Markdown report to ``out_dir``.

    ``out_dir`` defaults to the config's ``output`` or ``runs/bench/<name>``. With ``resume``
    False every cell is recomputed (and the cache overwritten). ``executor`` (default: serial, in
    this process) runs the jobs, e.g. ``oblivio.parallel.RayExecutor()`` for Ray tasks; every
    worker reads and writes the cache under ``out_dir``, so on a cluster it must be a shared
    filesystem. The numbers do not depend on the executor. ``device``, ``amp``, ``deterministic`` and
    ``population`` override the config's keys of the same names, and so does ``threads`` (torch CPU threads,
    recorded in the header). A GPU recipe about to run on the CPU gets a one-line warning on stderr.
    """
    cfg = config if isinstance(config, BenchConfig) else load_config(config)
    if population is not None:
        check_population(population, "--population")
    overrides = {k: v for k, v in (("device", device), ("amp", check_amp(amp)), ("deterministic", deterministic),
                                   ("population", population), ("threads", threads)) if v is not None}
    cfg = dataclasses.replace(cfg, **overrides) if overrides else cfg
    dev = resolve_device(cfg.device)
    out = Path(out_dir or cfg.output or Path("runs/bench") / cfg.name)
    executor = executor or SerialExecutor()
    data = load_from_spec(cfg.dataset)
    warning = gpu_recipe_warning(cfg.model, len(data.y_train), int(cfg.train.get("epochs", 1)), dev)
    if warning:
        print(warning, file=sys.stderr, flush=True)
    threads = torch.get_num_threads()
    start, commit = time.perf_counter(), git_commit()  # the code that runs: the checkout may change during a long run
    token, counts = uuid.uuid4().hex, [0, 0]
    if isinstance(executor, SerialExecutor):
        _POOLS[token] = ThreadPoolExecutor(measure_workers())
    try:
        torch.set_num_threads(cfg.threads or threads)
        with deterministic_mode(cfg.deterministic), \
                tqdm(total=count_cells(cfg), desc=f"bench {cfg.name}", unit="cell", disable=not progress,
                     dynamic_ncols=True) as bar:
            shared_data = executor.share(data)
            tuned, tuning, tune_errors = tune_grid(cfg, shared_data, out, executor, bar) if cfg.tune else ({}, [], {})
            tasks = plan_jobs(cfg)
            shared_run = executor.share(_Run(cfg, str(out.resolve()), resume, time.time(), token, tuned, tune_errors,
                                             progress and isinstance(executor, SerialExecutor)))
            docs: list[list[dict]] = [[] for _ in tasks]

            def done(i: int, result: Any) -> None:
                job: Job = tasks[i].args[0]
                if isinstance(result, TaskFailed):  # the job as a whole failed: one error row per cell it owed
                    docs[i] = [head | {"error": result.error} for head in job.heads]
                else:
                    docs[i], computed, cached = result
                    counts[0] += computed
                    counts[1] += cached
                bar.set_postfix_str(job.label, refresh=False)
                bar.update(len(docs[i]))

            executor.map(_run_job, [Task((shared_run, shared_data, t.args[0]), t.after) for t in tasks], done,
                         **_resources(cfg, executor))
            for ds in docs:  # cells whose metrics were computed in the pool
                for j, d in enumerate(ds):
                    if isinstance(d, Future):
                        ds[j] = d.result()
                        counts[0] += "error" not in ds[j]
    finally:
        torch.set_num_threads(threads)
        _RUNNERS.pop(token, None)
        pool = _POOLS.pop(token, None)
        if pool is not None:
            pool.shutdown(wait=True)
    cells = [d for t, ds in zip(tasks, docs) if t.args[0].kind in ("grid", "tuned") for d in ds]
    seq_cells = [d for t, ds in zip(tasks, docs) if t.args[0].kind in ("sequential", "chain") for d in ds]
    header = machine_header(cfg, wall_seconds=time.perf_counter() - start, computed=counts[0], cached=counts[1],
                            device=dev, commit=commit)
    header["executor"] = executor.describe()
    result = assemble(cfg, out, header, cells, seq_cells)
    result.tuning = tuning
    write_report(result)
    return result
