"""Run a benchmark grid: methods x scenarios x seeds, always with the original and retrain rows.

Per seed and scenario the split is built once, the original model is trained once (and shared
by every scenario on clean data of that seed), the gold-standard retrain is trained once on the
retain set, and each method unlearns from the original. Every finished cell is cached (see
``store``), so an interrupted run resumes where it stopped.
"""
from __future__ import annotations

import dataclasses
import os
from concurrent.futures import Future, ThreadPoolExecutor
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
from ..device import check_amp, deterministic as deterministic_mode, resolve_device
from ..errors import OblivioError
from ..scenarios import Backdoor, RandomSubset, Split, make_split
from ..training import place, train
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


def _first_line(e: Exception) -> str:
    message = str(e) if isinstance(e, OblivioError) else f"{type(e).__name__}: {e}"
    return (message.splitlines() or [type(e).__name__])[0]


def measure_workers() -> int:
    """Threads that compute cells' metrics (CPU work: the MIA SVC) while the next model trains."""
    return max(1, min(8, (os.cpu_count() or 2) - 1))


class _Runner:
    """Computes (or loads from the cache) every cell of one config.

    Models (original, retrain, unlearned) are cached under keys without the audit code, cells
    (their measures) under keys with it: a changed metric re-measures cached models, it does not
    retrain or unlearn again.
    """

    def __init__(self, cfg: BenchConfig, data: Dataset, store: Store, bar: tqdm, device: torch.device,
                 pool: ThreadPoolExecutor):
        self.cfg, self.data, self.store, self.bar, self.device, self.pool = cfg, data, store, bar, device, pool
        self.measure, _ = _audit()
        from ..audit.metrics import metrics_from_outputs, model_outputs

        self.outputs, self.metrics = model_outputs, metrics_from_outputs
        self.base = cfg.base_spec() | {"oblivio": __version__}
        if device.type != "cpu":  # GPU numbers differ from CPU ones in the last bits: separate caches
            self.base |= {"device": device.type, "deterministic": cfg.deterministic}
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
            model, record = self.store.model(key, build, arch=self.cfg.model, input_shape=info.input_shape,
                                             num_classes=info.num_classes, dataset=info.name, seed=seed)
            self._models[key] = (place(model, self.device), record)
        return self._models[key]

    def _trained(self, spec: dict, train_set: TensorDataset, seed: int) -> tuple[nn.Module, dict]:
        """A model trained from scratch with the config's recipe on ``train_set``."""
        def build() -> tuple[nn.Module, dict]:
            model, history = train(self.cfg.model, train_set, self.data.num_classes, self.cfg.train_config(seed),
                                   device=self.device)
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
                             seed=split.seed, device=self.device, amp=self.cfg.amp, **options)
            return result.model, {"seconds": result.seconds, "info": result.info}

        return self._model(spec | {"role": "unlearned"}, build, split.seed)

    # -- cells --------------------------------------------------------------------------------------
    def _cell(self, spec: dict, model: Callable[[], tuple[nn.Module, dict]], split: Split, label: str,
              **extra: Any) -> Future:
        """Measure ``model()`` on ``split`` (or read the cached cell), never letting one failure end the run.

        The model is built and run over the data here (on the device, one cell at a time); the metrics
        are computed from its outputs in the pool, so the CPU-bound MIA SVC overlaps the next cell's
        training. Returns a future of the cell; ``future.model_failed`` tells whether the model itself failed.
        """
        self.bar.set_postfix_str(label, refresh=False)
        head = {k: spec[k] for k in ("scenario", "method", "seed", "step") if k in spec}
        key = Store.key(self.base | spec | {"audit": self.audit_code})
        done: Future = Future()
        done.model_failed = False
        doc = self.store.cached_cell(key)
        if doc is not None:
            done.set_result(doc)
            self.bar.update(1)
            return done
        try:
            net, record = model()
            start = time.perf_counter()
            outputs = self.outputs(net, split)
            seconds = time.perf_counter() - start
        except Exception as e:  # noqa: BLE001 - one broken method must not end a long run; the report lists it
            done.model_failed = True
            done.set_result(head | {"error": _first_line(e)})
            self.bar.update(1)
            return done

        def finish() -> dict:
            try:
                start = time.perf_counter()
                metrics = self.metrics(outputs, split.seed)
                doc = head | extra | {"metrics": {k: float(v) for k, v in metrics.items()}, "seconds": record["seconds"],
                                      "info": record.get("info", {}),
                                      "measure_seconds": seconds + time.perf_counter() - start,
                                      "load_avg": os.getloadavg()[0]}
                return self.store.save_cell(key, doc)
            except Exception as e:  # noqa: BLE001 - as above
                return head | {"error": _first_line(e)}
            finally:
                self.bar.update(1)

        future = self.pool.submit(finish)
        future.model_failed = False
        return future

    def _method_spec(self, method: str, options: dict | None = None) -> dict:
        options = self.cfg.methods[method] if options is None else options
        return {"method": method, "options": options, "code": self.method_code[method]}

    def grid(self) -> Iterator[Future]:
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

    def sequential(self) -> Iterator[Future]:
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

    def _chain(self, seed: int, method: str, steps: list[tuple[Split, TensorDataset]], plan: dict) -> Iterator[Future]:
        """Unlearn each request from the previous step's model (cached per step, rebuilt on demand)."""
        previous: Callable[[], nn.Module] = lambda: self.original(steps[0][0])[0]
        for step, (split, request) in enumerate(steps, 1):
            spec = plan | {"step": step} | self._method_spec(method)

            def model(spec=spec, previous=previous, split=split, request=request) -> tuple[nn.Module, dict]:
                return self._unlearned(spec, previous, split, method, forget=request)

            cell = self._cell(spec, model, split, f"sequential seed {seed} step {step} {method}",
                              deleted=len(split.forget_idx))
            yield cell
            if cell.model_failed:  # the chain cannot go on from a failed step
                for later in range(step + 1, len(steps) + 1):
                    self.bar.update(1)
                    yield _done({"seed": seed, "step": later, "method": method, "error": f"step {step} failed"})
                return
            previous = lambda model=model: model()[0]


def _done(doc: dict) -> Future:
    future: Future = Future()
    future.model_failed = True
    future.set_result(doc)
    return future


def run_benchmark(
    config: BenchConfig | str | Path,
    out_dir: str | Path | None = None,
    *,
    resume: bool = True,
    progress: bool = True,
    device: str | None = None,
    amp: str | None = None,
    deterministic: bool | None = None,
) -> BenchResult:
    """Run (or resume) the grid of ``config`` and write CSVs and a Markdown report to ``out_dir``.

    ``out_dir`` defaults to the config's ``output`` or ``runs/bench/<name>``. With ``resume``
    False every cell is recomputed (and the cache overwritten). ``device``, ``amp`` and
    ``deterministic`` override the config's keys of the same names.
    """
    cfg = config if isinstance(config, BenchConfig) else load_config(config)
    overrides = {k: v for k, v in (("device", device), ("amp", check_amp(amp)), ("deterministic", deterministic))
                 if v is not None}
    cfg = dataclasses.replace(cfg, **overrides) if overrides else cfg
    dev = resolve_device(cfg.device)
    out = Path(out_dir or cfg.output or Path("runs/bench") / cfg.name)
    store = Store(out, resume=resume)
    data = load_from_spec(cfg.dataset)
    threads = torch.get_num_threads()
    start = time.perf_counter()
    try:
        torch.set_num_threads(cfg.threads or threads)
        with deterministic_mode(cfg.deterministic), ThreadPoolExecutor(measure_workers()) as pool, \
                tqdm(total=count_cells(cfg), desc=f"bench {cfg.name}", unit="cell", disable=not progress) as bar:
            runner = _Runner(cfg, data, store, bar, dev, pool)
            if cfg.tune:
                runner.tune()
            cells = list(runner.grid())
            seq_cells = list(runner.sequential()) if cfg.sequential else []
            cells = [c.result() for c in cells]
            seq_cells = [c.result() for c in seq_cells]
    finally:
        torch.set_num_threads(threads)
    header = machine_header(cfg, wall_seconds=time.perf_counter() - start, computed=store.computed,
                            cached=store.cached, device=dev)
    result = assemble(cfg, out, header, cells, seq_cells)
    result.tuning = runner.tuning
    write_report(result)
    return result
