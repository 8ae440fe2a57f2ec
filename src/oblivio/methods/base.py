"""The unlearning interface: a method is a class with a name, a config dataclass and ``unlearn``.

A new method is one new file in this folder that subclasses ``Unlearner`` and is decorated
with ``@register``; ``methods/__init__.py`` imports every module here. A method shipped in another
package is a plug-in: an entry point in the ``oblivio.methods`` group (see ``load_plugins``).
``oblivio.testing.check_unlearner`` runs the checks every method must pass.

This module depends on no other module of ``methods`` (``common`` builds on it, never the reverse).
"""
from __future__ import annotations

import copy
import dataclasses
import time
import types
import warnings
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn
from torch.utils.data import Dataset as TorchDataset

from ..device import autocast
from ..errors import OblivioError
from ..models import running_stats_for_single_samples
from ..batching import select
from ..training import accuracy
from ..validation import check_options

COLLAPSE_DROP = 0.2  # retain accuracy falling more than 20 points under the original's is a collapse
PROBE_SIZE = 512


@dataclass
class UnlearnData:
    """What a method may use. ``retain`` and ``third_party`` may be None if the user has none.

    ``forget_classes`` is set for class forgetting; ``backdoor_target`` for a backdoor.
    ``arch`` names the registered architecture (used by retrain) when known.
    ``previously_forgotten``: samples deleted earlier in this model's lineage (already out of ``retain``);
    a method may treat the union as what must look unseen (``dm`` does).
    ``augment``: the original's training augmentation (``oblivio.augment`` spec), for the methods whose papers
    fine-tune with the training pipeline's transforms (``ft``, ``l1-sparse``, ``salun``) and ``retrain``.
    ``train_epochs``: the original's training epochs, so a method can size its budget against a retrain's
    (``epochs`` x ``len(retain)`` sample passes; ``dm`` does).
    """

    forget: TorchDataset
    num_classes: int
    retain: TorchDataset | None = None
    third_party: TorchDataset | None = None
    forget_classes: tuple[int, ...] | None = None
    backdoor_target: int | None = None
    arch: str | None = None
    seed: int = 0
    previously_forgotten: TorchDataset | None = None
    augment: str | None = None
    train_epochs: int | None = None


NOTHING_TO_FORGET = "nothing_to_forget"

# info keys with one meaning for every method (``UnlearnResult``); none is required of a method, but where
# present each has this type (checked by ``oblivio.testing.check_unlearner``). Lines of text are one line.
INFO_KEYS: dict[str, tuple[type, str]] = {
    "steps": (int, "optimiser steps taken (the methods that step)"),
    "stopped_by": (str, "what ended the run early or on time, e.g. budget, safeguard, unseen_level"),
    "safeguard": (str, "which retain-accuracy safeguard fired, when one did"),
    NOTHING_TO_FORGET: (bool, "the method proved there is nothing to forget; the model is returned unchanged"),
    "reason": (str, "why there was nothing to forget (one line; with nothing_to_forget)"),
    "warnings": (list, "one-line warnings, e.g. a retain-accuracy collapse (added by Unlearner.unlearn)"),
    "verified": (str, "what changed, by oblivio.unlearn's verification (added by oblivio.unlearn)"),
    "forgot_nothing": (str, "verification's refusal, kept by oblivio.unlearn(verify='record')"),
}


@dataclass
class UnlearnResult:
    """The unlearned model (a new object; the input model is never modified) and what the run did.

    ``info`` is the one place the run's account lives (the CLI prints it, checkpoints and the ledger store
    it): string keys, JSON values (numbers, strings, booleans, None, lists and dicts of them). A method
    chooses its own keys; those in ``INFO_KEYS`` mean the same thing for every method and have the type
    given there. ``Unlearner.unlearn`` adds ``warnings`` (a retain-accuracy collapse); ``oblivio.unlearn``
    adds ``verified`` (what changed), or ``forgot_nothing`` with ``verify="record"``.

    A method whose own stopping rule proves there is nothing to forget (e.g.
    dm's forget set already indistinguishable from unseen data) sets ``info["nothing_to_forget"] =
    True`` and ``info["reason"]`` (one line); ``oblivio.unlearn`` then reports the
    unchanged model as done and states why. Any other result must measurably change the model.
    """

    model: nn.Module
    method: str
    config: dict
    seconds: float
    info: dict[str, Any] = field(default_factory=dict)


class Unlearner(ABC):
    """Base class of every unlearning method.

    Subclasses set ``name``, ``Config`` (a dataclass of hyperparameters with working defaults),
    ``requires`` (subset of {"retain", "third_party"}), and implement ``run`` on a copy of the model.
    """

    name: ClassVar[str]
    Config: ClassVar[type]
    requires: ClassVar[frozenset[str]] = frozenset()
    paper: ClassVar[str] = ""

    def __init__(self, config: Any = None, **overrides: Any):
        """Defaults, then ``config`` (a ``Config`` or a dict of options), then ``overrides``; every
        option is checked by type and range before any work (``validation.check_options``:
        annotations give the type, field metadata or name conventions the range)."""
        if isinstance(config, dict):
            overrides = {**config, **overrides}
            config = None
        base = config if config is not None else self.Config()
        if not isinstance(base, self.Config):
            raise OblivioError(f"method {self.name!r}: config must be a {self.name} Config or a dict, got {type(base).__name__}")
        values = {f.name: getattr(base, f.name) for f in dataclasses.fields(self.Config)} | dict(overrides)
        checked = check_options(f"method {self.name!r}", self.Config, values)
        try:
            self.config = dataclasses.replace(base, **checked)
        except OblivioError:
            raise
        except (TypeError, ValueError) as e:  # a method's own __post_init__ check
            raise OblivioError(f"method {self.name!r}: invalid options: {e}") from None

    def unlearn(self, model: nn.Module, data: UnlearnData, *, amp: str | None = None) -> UnlearnResult:
        """Unlearn ``data.forget`` from a copy of ``model`` (on the model's device); time it; refuse NaN/inf
        results; warn in ``info["warnings"]`` when retain accuracy collapsed (see ``collapse_warning``).
        One-sample batches use BatchNorm's running statistics (``running_stats_for_single_samples``).

        ``amp="bf16"`` runs the method under bf16 autocast on the model's device.
        """
        for need in sorted(self.requires):
            part = getattr(data, need)
            if part is None or len(part) == 0:
                raise OblivioError(f"method {self.name!r} needs a non-empty {need.replace('_', '-')} set")
        work = copy.deepcopy(model)
        start = time.perf_counter()
        with autocast(next(work.parameters()).device, amp), running_stats_for_single_samples(work):
            info = self.run(work, data) or {}
        seconds = time.perf_counter() - start
        work.eval()
        for pname, p in work.named_parameters():
            if not torch.isfinite(p).all():
                raise OblivioError(f"method {self.name!r} produced NaN/inf weights ({pname}); the original model is kept")
        warning = collapse_warning(model, work, data)
        if warning:
            info.setdefault("warnings", []).append(warning)
        return UnlearnResult(work, self.name, dataclasses.asdict(self.config), seconds, info)

    @classmethod
    def search_space(cls, trial: Any) -> dict[str, Any]:
        """Options to tune, sampled from an Optuna ``trial`` (see ``oblivio.tune``).

        The generic space (``generic_search_space``) covers learning rates, epoch and step counts;
        a method overrides this (calling ``super()``) to add its own options.
        """
        return generic_search_space(cls.Config(), trial)

    @abstractmethod
    def run(self, model: nn.Module, data: UnlearnData) -> dict[str, Any] | None:
        """Modify ``model`` (already a private copy) in place; return extra info (steps, distances...)."""


def subsample(part: TorchDataset, size: int, seed: int) -> TorchDataset:
    """A seeded random sample of at most ``size`` samples of ``part`` (a view: streamed data stays unread)."""
    if len(part) > size:
        part = select(part, torch.randperm(len(part), generator=torch.Generator().manual_seed(seed))[:size])
    return part


def probe_set(data: UnlearnData, size: int = PROBE_SIZE) -> TorchDataset | None:
    """A seeded sample of at most ``size`` retain samples (third-party ones when there is no retain set)."""
    part = data.retain if data.retain is not None and len(data.retain) else data.third_party
    if part is None or len(part) == 0:
        return None
    return subsample(part, size, data.seed)


def collapse_warning(original: nn.Module, unlearned: nn.Module, data: UnlearnData, drop: float = COLLAPSE_DROP) -> str | None:
    """A warning when the unlearned model's accuracy on a retain probe is more than ``drop`` under the original's."""
    probe = probe_set(data)
    if probe is None:
        return None
    before, after = accuracy(original, probe), accuracy(unlearned, probe)
    if after < before - drop:
        return (f"retain accuracy collapsed: {100 * after:.1f}% on a {len(probe)}-sample retain probe "
                f"vs the original's {100 * before:.1f}%")
    return None


def generic_search_space(defaults: Any, trial: Any) -> dict[str, Any]:
    """The shared part of every search space, around ``defaults`` (a Config instance).

    Learning rates (``lr``, ``*_lr``): log-uniform within 10x of the default. Epoch counts
    (``epochs``, ``*_epochs``): 1 to twice the default. ``steps``: a quarter to twice the default.
    """
    space: dict[str, Any] = {}
    for f in dataclasses.fields(defaults):
        value = getattr(defaults, f.name)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        if (f.name == "lr" or f.name.endswith("_lr")) and value > 0:
            space[f.name] = trial.suggest_float(f.name, value / 10, value * 10, log=True)
        elif (f.name == "epochs" or f.name.endswith("_epochs")) and isinstance(value, int) and value > 0:
            space[f.name] = trial.suggest_int(f.name, 1, max(2, 2 * value))
        elif f.name == "steps" and isinstance(value, int) and value > 0:
            space[f.name] = trial.suggest_int(f.name, max(1, value // 4), max(2, 2 * value), log=True)
    return space


_METHODS: dict[str, type[Unlearner]] = {}
PLUGIN_GROUP = "oblivio.methods"
_plugins_loaded = False
_BROKEN_PLUGINS: dict[str, str] = {}  # entry-point name -> the one-line reason it failed to load
_LOADED_PLUGINS: set[str] = set()  # entry-point values already loaded


def register(cls: type[Unlearner]) -> type[Unlearner]:
    """Class decorator adding a method to the registry under ``cls.name``."""
    if cls.name in _METHODS:
        raise RuntimeError(f"unlearning method {cls.name!r} registered twice")
    _METHODS[cls.name] = cls
    return cls


def load_plugins() -> dict[str, str]:
    """Load the plug-in methods: every entry point in the ``oblivio.methods`` group not loaded yet.

    An entry point names a module that registers its methods with ``@register`` (``name = "pkg.module"``)
    or an ``Unlearner`` subclass (``name = "pkg.module:MyMethod"``, registered if it is not yet). The
    registry calls this once, on first use; a plug-in that fails to load is skipped with a one-line
    warning, and asking for it by name (``get_method``) raises that line as an ``OblivioError``.
    Returns the failures (entry-point name -> reason).
    """
    global _plugins_loaded
    _plugins_loaded = True
    from importlib.metadata import entry_points

    for ep in entry_points(group=PLUGIN_GROUP):
        key = f"{ep.name}={ep.value}"
        if key in _LOADED_PLUGINS:
            continue
        _LOADED_PLUGINS.add(key)
        try:
            obj = ep.load()
            if isinstance(obj, type) and issubclass(obj, Unlearner):
                if _METHODS.get(obj.name) is not obj:
                    register(obj)
            elif not isinstance(obj, types.ModuleType):
                raise TypeError(f"{ep.value} is neither a module nor an Unlearner subclass")
        except Exception as e:  # noqa: BLE001 - any failure of third-party code becomes one line
            detail = (str(e).strip().splitlines() or [""])[0]
            reason = (f"plug-in method {ep.name!r} ({ep.value}) failed to load: {type(e).__name__}"
                      + (f": {detail}" if detail else ""))
            _BROKEN_PLUGINS[ep.name] = reason
            warnings.warn(reason, RuntimeWarning, stacklevel=2)
    return dict(_BROKEN_PLUGINS)


def _registry() -> dict[str, type[Unlearner]]:
    if not _plugins_loaded:
        load_plugins()
    return _METHODS


def available_methods() -> list[str]:
    """The names of the registered methods, built-in and plug-in, sorted."""
    return sorted(_registry())


def get_method(name: str, config: Any = None, **overrides: Any) -> Unlearner:
    """An instance of the registered method ``name`` with its config (defaults + overrides)."""
    methods = _registry()
    if name not in methods:
        if name in _BROKEN_PLUGINS:
            raise OblivioError(_BROKEN_PLUGINS[name])
        raise OblivioError(f"unknown unlearning method {name!r}; choose one of: {', '.join(available_methods())}")
    return methods[name](config, **overrides)
