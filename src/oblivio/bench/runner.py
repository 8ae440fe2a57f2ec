"""Run a benchmark grid: methods x scenarios x seeds, always with the original and retrain rows.

Per seed and scenario the split is built once, the original model is trained once (and shared
by every scenario on clean data of that seed), the gold-standard retrain is trained once on the
retain set, and each method unlearns from the original. Every finished cell is cached (see
``store``), so an interrupted run resumes where it stopped.
"""
from __future__ import annotations

import os
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch
from torch import nn
from torch.utils.data import TensorDataset
from tqdm.auto import tqdm

from .. import __version__
from ..data import Dataset, load_from_spec
from ..errors import OblivioError
from ..scenarios import Backdoor, RandomSubset, Split, make_split
from ..training import train
from ..unlearning import unlearn
from .config import BenchConfig, load_config
from .report import BenchResult, assemble, machine_header, write_report
from .store import Store, code_hash, method_code_hash


def count_cells(cfg: BenchConfig) -> int:
    """How many cells (original + retrain + methods, per seed and scenario, plus sequential steps) a run has."""
    n = len(cfg.seeds) * len(cfg.scenarios) * (2 + len(cfg.methods) + (len(cfg.tune.methods) if cfg.tune else 0))
    if cfg.sequential:
        s = cfg.sequential
        n += len(s.seeds) * s.requests * (2 + len(s.methods))
    return n


def _audit() -> tuple[Callable, Callable]:
    try:
        from ..audit import gap_to_retrain, measure
    except ImportError as e:
        raise OblivioError(f"the benchmark needs oblivio.audit (measure, gap_to_retrain): {e}") from None
    return measure, gap_to_retrain


class _Runner:
    """Computes (or loads from the cache) every cell of one config.

    Models (original, retrain, unlearned) are cached under keys without the audit code, cells
    (their measures) under keys with it: a changed metric re-measures cached models, it does not
    retrain or unlearn again.
    """

    def __init__(self, cfg: BenchConfig, data: Dataset, store: Store, bar: tqdm):
        self.cfg, self.data, self.store, self.bar = cfg, data, store, bar
        self.measure, _ = _audit()
        self.base = cfg.base_spec() | {"oblivio": __version__}
        self.audit_code = code_hash(self.measure)
        self.method_code = {m: method_code_hash(m) for m in cfg.methods}
        self._models: dict[str, tuple[nn.Module, dict]] = {}
        self.tuned: dict[tuple[str, str], dict] = {}  # (scenario, method) -> tuned options
        self.tuning: list[dict] = []  # one record per tuned (scenario, method)

    # -- tuning -------------------------------------------------------------------------------------
    def tune(self) -> None:
        """Tune every ``tune`` method per scenario on its validation request (cached in ``tune.db``)."""
        from ..tune import tune, tuned_options

        t = self.cfg.tune
        for name in self.cfg.scenarios:
            for method in t.methods:
                self.bar.set_postfix_str(f"tuning {method} on {name}", refresh=True)
                result = tune(self.cfg, method, name, t.trials, seed=t.seed, study=self.store.out / "tune.db",
                              cache_dir=self.store.out, data=self.data)
                self.tuned[(name, method)] = tuned_options(result, self.cfg.methods[method])
                self.tuning.append({"scenario": name, "method": method, "trials": t.trials, "seed": result.seed,
                                    "validation": result.validation, "best_value": result.best_value,
                                    "default_value": result.default_value, "options": result.best_params,
                                    "study": result.study_name, "seconds": round(result.seconds, 1)})

    # -- models -------------------------------------------------------------------------------------
    def _model(self, spec: dict, build: Callable[[], tuple[nn.Module, dict]], seed: int) -> tuple[nn.Module, dict]:
        """The model of ``spec`` and its record, from memory, the disk cache or ``build()``."""
        key = Store.key(self.base | spec)
        if key not in self._models:
            info = self.data.info
            self._models[key] = self.store.model(key, build, arch=self.cfg.model, input_shape=info.input_shape,
                                                 num_classes=info.num_classes, dataset=info.name, seed=seed)
        return self._models[key]

    def _trained(self, spec: dict, train_set: TensorDataset, seed: int) -> tuple[nn.Module, dict]:
        """A model trained from scratch with the config's recipe on ``train_set``."""
        def build() -> tuple[nn.Module, dict]:
            model, history = train(self.cfg.model, train_set, self.data.num_classes, self.cfg.train_config(seed))
            return model, {"seconds": history.seconds}

        return self._model(spec, build, seed)

    def original(self, split: Split) -> tuple[nn.Module, dict]:
        """The original model of this seed (one per seed for clean data, one per backdoor poisoning)."""
        poison = asdict(split.scenario) if isinstance(split.scenario, Backdoor) else None
        return self._trained({"role": "original", "seed": split.seed, "poison": poison}, split.train, split.seed)

    def _unlearned(self, spec: dict, start: Callable[[], nn.Module], split: Split, method: str,
                   forget: TensorDataset | None = None, options: dict | None = None) -> tuple[nn.Module, dict]:
        options = self.cfg.methods[method] if options is None else options

        def build() -> tuple[nn.Module, dict]:
            result = unlearn(start(), forget=forget, split=split, method=method, arch=self.cfg.model,
                             seed=split.seed, **options)
            return result.model, {"seconds": result.seconds, "info": result.info}

        return self._model(spec | {"role": "unlearned"}, build, split.seed)

    # -- cells --------------------------------------------------------------------------------------
    def _cell(self, spec: dict, model: Callable[[], tuple[nn.Module, dict]], split: Split, label: str,
              **extra: Any) -> dict:
        """Measure ``model()`` on ``split`` (or read the cached cell), never letting one failure end the run."""
        self.bar.set_postfix_str(label, refresh=False)
        head = {k: spec[k] for k in ("scenario", "method", "seed", "step") if k in spec}

        def compute() -> dict:
            net, record = model()
            start = time.perf_counter()
            metrics = self.measure(net, split, seed=split.seed)
            return head | extra | {"metrics": {k: float(v) for k, v in metrics.items()}, "seconds": record["seconds"],
                                   "info": record.get("info", {}), "measure_seconds": time.perf_counter() - start,
                                   "load_avg": os.getloadavg()[0]}

        try:
            doc = self.store.cell(Store.key(self.base | spec | {"audit": self.audit_code}), compute)
        except Exception as e:  # noqa: BLE001 - one broken method must not end a long run; the report lists it
            message = str(e) if isinstance(e, OblivioError) else f"{type(e).__name__}: {e}"
            doc = head | {"error": (message.splitlines() or [type(e).__name__])[0]}
        self.bar.update(1)
        return doc

    def _method_spec(self, method: str, options: dict | None = None) -> dict:
        options = self.cfg.methods[method] if options is None else options
        return {"method": method, "options": options, "code": self.method_code[method]}

    def grid(self) -> Iterator[dict]:
        cfg = self.cfg
        for seed in cfg.seeds:
            self._models.clear()
            for name in cfg.scenarios:
                split = make_split(self.data, cfg.scenario(name), seed, cfg.third_party_fraction)
                where = {"scenario": name, "scenario_spec": cfg.scenarios[name], "seed": seed}
                sizes = split.sizes()
                label = f"seed {seed} {name}"

                def original(split: Split = split) -> tuple[nn.Module, dict]:
                    return self.original(split)

                def retrain(split: Split = split, where: dict = where) -> tuple[nn.Module, dict]:
                    return self._trained(where | {"role": "retrain"}, split.retain, split.seed)

                yield self._cell(where | {"method": "original"}, original, split, f"{label} original", sizes=sizes)
                yield self._cell(where | {"method": "retrain"}, retrain, split, f"{label} retrain", sizes=sizes)
                for method in cfg.methods:
                    spec = where | self._method_spec(method)

                    def unlearned(spec: dict = spec, split: Split = split, method: str = method):
                        return self._unlearned(spec, lambda: self.original(split)[0], split, method)

                    yield self._cell(spec, unlearned, split, f"{label} {method}")
                for method in (cfg.tune.methods if cfg.tune else ()):
                    options = self.tuned[(name, method)]
                    row = cfg.tune.label(method)
                    spec = where | self._method_spec(method, options) | {"method": row}

                    def tuned(spec: dict = spec, split: Split = split, method: str = method, options: dict = options):
                        return self._unlearned(spec, lambda: self.original(split)[0], split, method, options=options)

                    yield self._cell(spec, tuned, split, f"{label} {row}", options=options)

    # -- sequential requests ------------------------------------------------------------------------
    def request_splits(self, seed: int) -> list[tuple[Split, TensorDataset]]:
        """Per step: the split with every request so far deleted (retain = the rest), and this step's request."""
        s, cfg = self.cfg.sequential, self.cfg
        pool = make_split(self.data, RandomSubset(count=1), seed, cfg.third_party_fraction).pool_idx
        n = max(1, int(round(s.fraction * len(pool))))
        order = np.random.default_rng([seed, 2]).permutation(pool)
        requests = [np.sort(order[i * n:(i + 1) * n]) for i in range(s.requests)]
        steps = []
        for i, request in enumerate(requests):
            deleted = np.concatenate(requests[: i + 1])
            split = make_split(self.data, RandomSubset(indices=tuple(deleted.tolist())), seed, cfg.third_party_fraction)
            idx = torch.as_tensor(request)
            steps.append((split, TensorDataset(split.x_train[idx], split.y_train[idx])))
        return steps

    def sequential(self) -> Iterator[dict]:
        """Per seed: original and retrain-on-what-remains at every step, then each method's chain of unlearning."""
        s = self.cfg.sequential
        for seed in s.seeds:
            self._models.clear()
            steps = self.request_splits(seed)
            plan = {"sequential": {"requests": s.requests, "fraction": s.fraction}, "seed": seed}
            for step, (split, _) in enumerate(steps, 1):
                where = plan | {"step": step}
                label, deleted = f"sequential seed {seed} step {step}", len(split.forget_idx)

                def retrain(split: Split = split, where: dict = where) -> tuple[nn.Module, dict]:
                    return self._trained(where | {"role": "retrain"}, split.retain, seed)

                yield self._cell(where | {"method": "original"}, lambda split=split: self.original(split), split,
                                 f"{label} original", deleted=deleted)
                yield self._cell(where | {"method": "retrain"}, retrain, split, f"{label} retrain", deleted=deleted)
            for method in s.methods:
                yield from self._chain(seed, method, steps, plan)

    def _chain(self, seed: int, method: str, steps: list[tuple[Split, TensorDataset]], plan: dict) -> Iterator[dict]:
        """Unlearn each request from the previous step's model (cached per step, rebuilt on demand)."""
        previous: Callable[[], nn.Module] = lambda: self.original(steps[0][0])[0]
        for step, (split, request) in enumerate(steps, 1):
            spec = plan | {"step": step} | self._method_spec(method)

            def model(spec=spec, previous=previous, split=split, request=request) -> tuple[nn.Module, dict]:
                return self._unlearned(spec, previous, split, method, forget=request)

            doc = self._cell(spec, model, split, f"sequential seed {seed} step {step} {method}",
                             deleted=len(split.forget_idx))
            yield doc
            if "error" in doc:  # the chain cannot go on from a failed step
                for later in range(step + 1, len(steps) + 1):
                    self.bar.update(1)
                    yield {"seed": seed, "step": later, "method": method, "error": f"step {step} failed"}
                return
            previous = lambda model=model: model()[0]


def run_benchmark(
    config: BenchConfig | str | Path,
    out_dir: str | Path | None = None,
    *,
    resume: bool = True,
    progress: bool = True,
) -> BenchResult:
    """Run (or resume) the grid of ``config`` and write CSVs and a Markdown report to ``out_dir``.

    ``out_dir`` defaults to the config's ``output`` or ``runs/bench/<name>``. With ``resume``
    False every cell is recomputed (and the cache overwritten).
    """
    cfg = config if isinstance(config, BenchConfig) else load_config(config)
    out = Path(out_dir or cfg.output or Path("runs/bench") / cfg.name)
    store = Store(out, resume=resume)
    data = load_from_spec(cfg.dataset)
    threads = torch.get_num_threads()
    start = time.perf_counter()
    try:
        torch.set_num_threads(cfg.threads or threads)
        with tqdm(total=count_cells(cfg), desc=f"bench {cfg.name}", unit="cell", disable=not progress) as bar:
            runner = _Runner(cfg, data, store, bar)
            if cfg.tune:
                runner.tune()
            cells = list(runner.grid())
            seq_cells = list(runner.sequential()) if cfg.sequential else []
    finally:
        torch.set_num_threads(threads)
    header = machine_header(cfg, wall_seconds=time.perf_counter() - start, computed=store.computed,
                            cached=store.cached)
    result = assemble(cfg, out, header, cells, seq_cells)
    result.tuning = runner.tuning
    write_report(result)
    return result
