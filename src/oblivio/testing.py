"""Conformance checks for unlearning methods, as scikit-learn's ``check_estimator`` is for estimators.

    from oblivio.testing import check_unlearner
    check_unlearner("ft")           # a registered method
    check_unlearner(MyMethod)       # or an Unlearner subclass, registered or not

Every check runs on a tiny problem (forget one of four Gaussian blobs in 8 dimensions, 160 training samples, an MLP
with 16 hidden units, trained once per process), so checking one method takes well under a second
for the built-in ones.
"""
from __future__ import annotations

import contextlib
import copy
import dataclasses
import functools
import inspect
import json
import typing
from typing import Any, Callable, Iterator

import torch
from torch import nn
from torch.utils.data import TensorDataset

from .errors import OblivioError
from .methods import base as _base
from .methods.base import INFO_KEYS, UnlearnData, Unlearner, UnlearnResult
from .models import MLP
from .training import accuracy, train
from .unlearning import unlearn

__all__ = ["CHECKS", "check_unlearner"]

NUM_CLASSES, DIM, HIDDEN = 4, 8, 16
FORGET_CLASS = NUM_CLASSES - 1  # the request: forget this class (every method must change the model for it)
IMPOSSIBLE_DEVICES = ("cuda:99", "no-such-device")


@dataclasses.dataclass(frozen=True)
class _Problem:
    forget: TensorDataset
    retain: TensorDataset
    third_party: TensorDataset
    weights: dict  # the trained model's state_dict


@functools.lru_cache(maxsize=None)
def _problem(seed: int) -> _Problem:
    """Four well-separated blobs; forget = the 40 training samples of the last class, third party = 64 unseen ones."""
    g = torch.Generator().manual_seed(seed)
    centers = torch.randn(NUM_CLASSES, DIM, generator=g) * 3

    def blobs(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        y = torch.arange(n) % NUM_CLASSES
        return centers[y] + torch.randn(n, DIM, generator=g), y

    x, y = blobs(160)
    xt, yt = blobs(64)
    model, _ = train(_fresh(seed), TensorDataset(x, y), NUM_CLASSES, epochs=10, seed=seed, device="cpu")
    gone = y == FORGET_CLASS
    return _Problem(TensorDataset(x[gone], y[gone]), TensorDataset(x[~gone], y[~gone]), TensorDataset(xt, yt),
                    {k: v.detach().clone() for k, v in model.state_dict().items()})


def _fresh(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return MLP((DIM,), NUM_CLASSES, hidden=HIDDEN)


def _model(p: _Problem) -> nn.Module:
    model = _fresh(0)
    model.load_state_dict(p.weights)
    return model.eval()


class _Context:
    """What every check gets: the method, the problem and a runner of ``oblivio.unlearn``."""

    def __init__(self, cls: type[Unlearner], seed: int, options: dict[str, Any]):
        self.cls, self.seed, self.options = cls, seed, options
        self.problem = _problem(seed)

    def model(self) -> nn.Module:
        return _model(self.problem)

    def unlearn(self, model: nn.Module | None = None, forget: Any = None, **kw: Any) -> UnlearnResult:
        p = self.problem
        kw = {"verify": False, "device": "cpu", **self.options, **kw}
        return unlearn(self.model() if model is None else model, p.forget if forget is None else forget, p.retain,
                       p.third_party, self.cls.name, num_classes=NUM_CLASSES, forget_classes=(FORGET_CLASS,),
                       seed=self.seed, **kw)

    def data(self) -> UnlearnData:
        p = self.problem
        return UnlearnData(p.forget, NUM_CLASSES, p.retain, p.third_party, forget_classes=(FORGET_CLASS,), seed=self.seed)


def _fail(msg: str) -> None:
    raise AssertionError(msg)


def _state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _same_state(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> str | None:
    """None when ``a`` and ``b`` are bitwise equal, else the first differing entry."""
    if a.keys() != b.keys():
        return f"the state_dict keys differ ({sorted(a.keys() ^ b.keys())[:3]})"
    for k in a:
        if a[k].dtype != b[k].dtype or a[k].shape != b[k].shape or not torch.equal(a[k], b[k]):
            return f"{k} differs"
    return None


def _expects_error(what: str, run: Callable[[], Any], *must_name: str) -> None:
    """``run()`` must raise a one-line ``OblivioError`` naming each of ``must_name``."""
    try:
        run()
    except OblivioError as e:
        msg = str(e)
        if "\n" in msg:
            _fail(f"{what}: the OblivioError is not one line: {msg!r}")
        for name in must_name:
            if name not in msg:
                _fail(f"{what}: the OblivioError does not name {name!r}: {msg!r}")
        return
    except Exception as e:  # noqa: BLE001 - the point of the check
        _fail(f"{what}: raised {type(e).__name__} instead of OblivioError: {e}")
    _fail(f"{what}: no error was raised")


def check_options(ctx: _Context) -> None:
    """The defaults build; an unknown option and a wrongly typed one raise an OblivioError naming the option."""
    cls = ctx.cls
    if not dataclasses.is_dataclass(getattr(cls, "Config", None)):
        _fail(f"{cls.__name__}.Config is not a dataclass")
    cls()  # the paper defaults must pass validation
    _expects_error("an unknown option", lambda: ctx.unlearn(no_such_option=1), "no_such_option")
    try:
        hints = typing.get_type_hints(cls.Config)
    except Exception as e:  # noqa: BLE001 - then oblivio cannot check the options' types either
        _fail(f"the Config's annotations cannot be resolved ({type(e).__name__}: {e}), so option types go unchecked")
    wrong = {int: "not-a-number", float: "not-a-number", bool: "not-a-bool", str: 12345}
    taken = set(inspect.signature(unlearn).parameters)  # an option of that name could not reach the method
    for f in dataclasses.fields(cls.Config):
        if f.name not in taken and hints.get(f.name) in wrong:
            value = wrong[hints[f.name]]
            _expects_error(f"option {f.name}={value!r} (wrong type)", lambda: ctx.unlearn(**{f.name: value}), f.name)
            return


def check_input_untouched(ctx: _Context) -> None:
    """The input model's state_dict is bitwise equal after the call, and its train/eval mode unchanged."""
    model = ctx.model()
    before, mode = _state(model), model.training
    result = ctx.unlearn(model)
    diff = _same_state(before, _state(model))
    if diff:
        _fail(f"the input model was modified: {diff}")
    if model.training != mode:
        _fail("the input model's train/eval mode was changed")
    if result.model is model:
        _fail("the result is the input model itself; it must be a new object")


def check_deterministic(ctx: _Context) -> None:
    """Two runs with the same seed on the CPU give identical weights and the same info."""
    a, b = ctx.unlearn(verify="record"), ctx.unlearn(verify="record")
    diff = _same_state(_state(a.model), _state(b.model))
    if diff:
        _fail(f"two runs with seed {ctx.seed} gave different weights: {diff}")
    ja, jb = (json.dumps(r.info, sort_keys=True, default=repr) for r in (a, b))
    if ja != jb:
        _fail(f"two runs with seed {ctx.seed} gave different info: {ja} vs {jb}")


def check_device(ctx: _Context) -> None:
    """``device="cpu"`` runs and returns a model on the CPU; an impossible device raises an OblivioError."""
    result = ctx.unlearn(device="cpu")
    where = {p.device.type for p in result.model.parameters()}
    if where != {"cpu"}:
        _fail(f'device="cpu" returned a model on {sorted(where)}')
    for dev in IMPOSSIBLE_DEVICES:
        _expects_error(f"device={dev!r}", lambda: ctx.unlearn(device=dev), dev)


def check_forget_sizes(ctx: _Context) -> None:
    """An empty forget set raises a one-line OblivioError; a one-sample forget set works."""
    x, y = ctx.problem.forget.tensors
    _expects_error("an empty forget set", lambda: ctx.unlearn(forget=TensorDataset(x[:0], y[:0])))
    result = ctx.unlearn(forget=TensorDataset(x[:1], y[:1]))
    if not all(torch.isfinite(p).all() for p in result.model.parameters()):
        _fail("a one-sample forget set gave NaN/inf weights")


def check_info(ctx: _Context) -> None:
    """``info`` has string keys, JSON values, the types of ``methods.base.INFO_KEYS``, and ``verified`` (or
    ``forgot_nothing``) from ``oblivio.unlearn``'s verification."""
    info = ctx.unlearn(verify="record").info
    if not isinstance(info, dict) or not all(isinstance(k, str) for k in info):
        _fail(f"info must be a dict with string keys, got {info!r}")
    try:
        json.dumps(info)
    except (TypeError, ValueError) as e:
        _fail(f"info is not plain JSON ({e}); store plain int/float/str/bool, not tensors or numpy arrays")
    for key, (tp, meaning) in INFO_KEYS.items():
        if key in info:
            value = info[key]
            if not isinstance(value, tp) or (tp is int and isinstance(value, bool)):
                _fail(f"info[{key!r}] must be {tp.__name__} ({meaning}), got {value!r}")
            lines = value if isinstance(value, list) else [value] if isinstance(value, str) else []
            if any(not isinstance(v, str) or "\n" in v for v in lines):
                _fail(f"info[{key!r}] must be one-line text, got {value!r}")
    if info.get("nothing_to_forget") and not info.get("reason"):
        _fail("info['nothing_to_forget'] is set without info['reason']")
    if ("verified" in info) == ("forgot_nothing" in info):
        _fail("info must hold exactly one of 'verified' and 'forgot_nothing' after oblivio.unlearn(verify='record')")


def _destroy(model: nn.Module) -> None:
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()


def check_collapse_warned(ctx: _Context) -> None:
    """A result whose retain accuracy collapsed carries a warning in ``info["warnings"]``: the method's own
    ``run`` followed by zeroing every weight must come back warned through its ``unlearn``."""
    method = ctx.cls

    class Collapsing(method):  # type: ignore[misc, valid-type]
        def run(self, model: nn.Module, data: UnlearnData) -> dict[str, Any] | None:
            info = super().run(model, data)
            _destroy(model)
            return info

    model = ctx.model()
    before = _state(model)
    instance = Collapsing(ctx.options or None)
    result = instance.unlearn(model, ctx.data())
    if _same_state(before, _state(model)):
        _fail("the input model was modified by a collapsing run")
    if accuracy(result.model, ctx.problem.retain) > 0.5:  # the check's own premise
        _fail("zeroing the weights did not collapse the model (is Unlearner.unlearn overridden to repair it?)")
    warned = [w for w in result.info.get("warnings", []) if "collapsed" in w]
    if not warned:
        _fail(f"a collapsed result carried no warning in info['warnings'] (info: {result.info!r})")


CHECKS: dict[str, Callable[[_Context], None]] = {
    "options": check_options,
    "input_untouched": check_input_untouched,
    "deterministic": check_deterministic,
    "device": check_device,
    "forget_sizes": check_forget_sizes,
    "info": check_info,
    "collapse_warned": check_collapse_warned,
}


@contextlib.contextmanager
def _registered(cls: type[Unlearner]) -> Iterator[None]:
    """``cls`` in the registry for the duration (``oblivio.unlearn`` takes a method by name)."""
    methods = _base._registry()
    if methods.get(cls.name) is cls:
        yield
        return
    if cls.name in methods:
        _fail(f"{cls.__name__}: the name {cls.name!r} is registered by another class ({methods[cls.name].__name__})")
    methods[cls.name] = cls
    try:
        yield
    finally:
        methods.pop(cls.name, None)


def check_unlearner(method: str | type[Unlearner], *, seed: int = 0, options: dict[str, Any] | None = None,
                    checks: list[str] | None = None) -> None:
    """Run the checks every unlearning method must pass; raise ``AssertionError`` naming the first that fails.

    ``method`` is a registered name or an ``Unlearner`` subclass (registered or not). The checks
    (``CHECKS``), on a tiny problem (four blobs, a 16-unit MLP, one class of 40 samples to forget):

    - ``options``: the defaults build; an unknown option and a wrongly typed one raise an
      ``OblivioError`` naming the option.
    - ``input_untouched``: the input model's ``state_dict`` is bitwise equal after the call.
    - ``deterministic``: two CPU runs with the same seed give identical weights and the same ``info``.
    - ``device``: ``device="cpu"`` works; an impossible device raises an ``OblivioError``.
    - ``forget_sizes``: an empty forget set raises a one-line ``OblivioError``; one sample works.
    - ``info``: JSON values; the keys of ``oblivio.methods.base.INFO_KEYS`` have their types.
    - ``collapse_warned``: a run that destroys the model returns a warning in ``info["warnings"]``.

    Args:
        method: the method to check.
        seed: seed of the problem and the runs.
        options: method options for every run (e.g. to make a slow method quick).
        checks: names of the checks to run (default: all).
    """
    if isinstance(method, str):
        cls = type(_base.get_method(method))
    elif isinstance(method, type) and issubclass(method, Unlearner):
        cls = method
    else:
        raise TypeError(f"check_unlearner takes a method name or an Unlearner subclass, got {method!r}")
    unknown = sorted(set(checks or ()) - set(CHECKS))
    if unknown:
        raise ValueError(f"unknown checks {unknown}; choose from {list(CHECKS)}")
    ctx = _Context(cls, seed, dict(options or {}))
    with _registered(cls):
        for name in checks or CHECKS:
            try:
                CHECKS[name](ctx)
            except AssertionError as e:
                raise AssertionError(f"method {cls.name!r} failed check {name!r}: {e}") from None
            except Exception as e:  # noqa: BLE001 - a crash is a failed check too
                raise AssertionError(f"method {cls.name!r} failed check {name!r}: "
                                     f"{type(e).__name__}: {e}") from e
