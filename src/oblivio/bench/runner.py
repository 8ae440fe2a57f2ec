"""Run a benchmark grid: methods x scenarios x seeds, always with the original and retrain rows.

Per seed and scenario the split is built once, the original model is trained once (and shared
by every scenario on clean data of that seed), the gold-standard retrain is trained once on the
retain set, and each method unlearns from the original. Every finished cell is cached (see
``store``), so an interrupted run resumes where it stopped.
"""
from __future__ import annotations

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
    n = len(cfg.seeds) * len(cfg.scenarios) * (2 + len(cfg.methods))
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
    """Computes (or loads from the cache) every cell of one config."""

    def __init__(self, cfg: BenchConfig, data: Dataset, store: Store, bar: tqdm):
        self.cfg, self.data, self.store, self.bar = cfg, data, store, bar
        self.measure, _ = _audit()
        self.base = cfg.base_spec() | {"oblivio": __version__}
        self.audit_code = code_hash(self.measure)
        self.method_code = {m: method_code_hash(m) for m in cfg.methods}
        self._models: dict[str, nn.Module] = {}

    # -- models -------------------------------------------------------------------------------------
    def _meta(self, seed: int) -> dict:
        info = self.data.info
        return {"arch": self.cfg.model, "input_shape": info.input_shape, "num_classes": info.num_classes,
                "dataset": info.name, "seed": seed}

    def _trained(self, key: str, train_set: TensorDataset, seed: int) -> tuple[nn.Module, float]:
        """A model trained with the config's recipe on ``train_set`` (cached on disk and in memory)."""
        if key not in self._models:
            def build() -> tuple[nn.Module, float]:
                model, history = train(self.cfg.model, train_set, self.data.num_classes, self.cfg.train_config(seed))
                return model, history.seconds

            self._models[key] = self.store.model(key, build, **self._meta(seed))
        return self._models[key]

    def original_key(self, split: Split) -> str:
        poison = asdict(split.scenario) if isinstance(split.scenario, Backdoor) else None
        return Store.key(self.base | {"role": "original", "seed": split.seed, "poison": poison})

    def original(self, split: Split) -> nn.Module:
        return self._trained(self.original_key(split), split.train, split.seed)[0]

    # -- cells --------------------------------------------------------------------------------------
    def _cell(self, spec: dict, compute: Callable[[], dict], label: str, force: bool = False) -> dict:
        self.bar.set_postfix_str(label, refresh=False)
        head = {k: spec[k] for k in ("scenario", "method", "seed", "step") if k in spec}
        try:
            doc = self.store.cell(Store.key(self.base | spec | {"audit": self.audit_code}), lambda: head | compute(),
                                  force=force)
        except Exception as e:  # noqa: BLE001 - one broken method must not end a long run; the report lists it
            doc = head | {"error": str(e) if isinstance(e, OblivioError) else f"{type(e).__name__}: {e}"}
        self.bar.update(1)
        return doc

    def _measured(self, model: nn.Module, split: Split, seconds: float, **extra: Any) -> dict:
        start = time.perf_counter()
        metrics = self.measure(model, split, seed=split.seed)
        return {"metrics": {k: float(v) for k, v in metrics.items()}, "seconds": seconds,
                "measure_seconds": time.perf_counter() - start} | extra

    def _unlearned(self, model: nn.Module, split: Split, method: str, forget: TensorDataset | None = None):
        return unlearn(model, forget=forget, split=split, method=method, arch=self.cfg.model, seed=split.seed,
                       **self.cfg.methods[method])

    def grid(self) -> Iterator[dict]:
        cfg = self.cfg
        for seed in cfg.seeds:
            self._models.clear()
            for name in cfg.scenarios:
                split = make_split(self.data, cfg.scenario(name), seed, cfg.third_party_fraction)
                where = {"scenario": name, "scenario_spec": cfg.scenarios[name], "seed": seed}
                sizes = split.sizes()

                def original_cell() -> dict:
                    model, seconds = self._trained(self.original_key(split), split.train, seed)
                    return self._measured(model, split, seconds, sizes=sizes)

                def retrain_cell() -> dict:
                    key = Store.key(self.base | where | {"role": "retrain"})
                    model, seconds = self._trained(key, split.retain, seed)
                    return self._measured(model, split, seconds, sizes=sizes)

                yield self._cell(where | {"method": "original"}, original_cell, f"seed {seed} {name} original")
                yield self._cell(where | {"method": "retrain"}, retrain_cell, f"seed {seed} {name} retrain")
                for method, options in cfg.methods.items():
                    def method_cell(method: str = method) -> dict:
                        result = self._unlearned(self.original(split), split, method)
                        return self._measured(result.model, split, result.seconds, info=result.info)

                    spec = where | {"method": method, "options": options, "code": self.method_code[method]}
                    yield self._cell(spec, method_cell, f"seed {seed} {name} {method}")

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
        s = self.cfg.sequential
        for seed in s.seeds:
            self._models.clear()
            steps = self.request_splits(seed)
            plan = {"sequential": {"requests": s.requests, "fraction": s.fraction}, "seed": seed}
            for step, (split, _) in enumerate(steps, 1):
                where = plan | {"step": step, "deleted": len(split.forget_idx)}

                def original_cell() -> dict:
                    model, seconds = self._trained(self.original_key(split), split.train, seed)
                    return self._measured(model, split, seconds, deleted=len(split.forget_idx))

                def retrain_cell() -> dict:
                    model, seconds = self._trained(Store.key(self.base | where | {"role": "retrain"}), split.retain, seed)
                    return self._measured(model, split, seconds, deleted=len(split.forget_idx))

                yield self._cell(where | {"method": "original"}, original_cell, f"seq seed {seed} step {step} original")
                yield self._cell(where | {"method": "retrain"}, retrain_cell, f"seq seed {seed} step {step} retrain")
            for method in s.methods:
                yield from self._chain(seed, method, steps, plan)

    def _chain(self, seed: int, method: str, steps: list[tuple[Split, TensorDataset]], plan: dict) -> Iterator[dict]:
        """Unlearn each request from the previous step's model; each step's model is checkpointed for resuming."""
        previous: Callable[[], nn.Module] = lambda: self.original(steps[0][0])
        for step, (split, request) in enumerate(steps, 1):
            spec = plan | {"step": step, "method": method, "options": self.cfg.methods[method],
                           "code": self.method_code[method]}
            key = Store.key(self.base | spec | {"audit": self.audit_code})
            done = self.store.has_model(key) and self.store.cell_path(key).is_file()

            def compute(previous=previous, split=split, request=request, key=key) -> dict:
                result = self._unlearned(previous(), split, method, forget=request)
                self.store.save_model(key, result.model, result.seconds, **self._meta(seed))
                return self._measured(result.model, split, result.seconds, deleted=len(split.forget_idx),
                                      info=result.info)

            doc = self._cell(spec, compute, f"seq seed {seed} step {step} {method}", force=not done)
            yield doc
            if "error" in doc:  # the chain cannot go on from a failed step
                for later in range(step + 1, len(steps) + 1):
                    yield {"seed": seed, "step": later, "method": method, "error": f"step {step} failed"}
                    self.bar.update(1)
                return
            previous = (lambda path=self.store.model_path(key): self.store.load_model(path))


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
            cells = list(runner.grid())
            seq_cells = list(runner.sequential()) if cfg.sequential else []
    finally:
        torch.set_num_threads(threads)
    header = machine_header(cfg, wall_seconds=time.perf_counter() - start, computed=store.computed,
                            cached=store.cached)
    result = assemble(cfg, out, header, cells, seq_cells)
    write_report(result)
    return result
