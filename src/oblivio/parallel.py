"""Run independent tasks in this process or as Ray tasks, with a callback per finished task.

    from oblivio.parallel import Task, make_executor
    with make_executor(ray=True) as ex:                    # or ray=False: serial, here
        shared = ex.share(big_dataset)                     # sent once, resolved in each task
        out = ex.map(fn, [Task((shared, 1)), Task((shared, 2), after=(0,))],
                     on_done=lambda i, result: print(i, result))

``map`` returns one result per task, in task order; a task that raised (or whose Ray worker died)
gives a ``TaskFailed`` instead, and the others go on. ``after`` names earlier tasks that must finish
first (their results are not passed on: tasks share work through files, e.g. a model cache).

Ray is imported only when a Ray executor is used (``pip install 'oblivio[ray]'``). ``address``:
``None``/``"local"`` starts a local Ray instance on this machine's cores; ``"auto"`` joins the cluster
started with ``ray start`` on this node (or ``RAY_ADDRESS``); ``"ray://host:10001"`` joins a remote one.
Every node must have the same oblivio installed (workers import it).
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from .errors import OblivioError


@dataclass(frozen=True)
class Task:
    """Positional ``args`` for the mapped function; ``after``: indices of earlier tasks to wait for."""

    args: tuple
    after: tuple[int, ...] = ()


@dataclass
class TaskFailed:
    """The result of a task that raised or whose worker died: a one-line ``error`` and the exception."""

    error: str
    exception: BaseException | None = None


def _one_line(e: BaseException) -> str:
    message = str(e) if isinstance(e, OblivioError) else f"{type(e).__name__}: {e}"
    return (message.strip().splitlines() or [type(e).__name__])[0]


OnDone = Callable[[int, Any], None]


class Executor(ABC):
    """Maps a function over tasks; use as a context manager so a Ray instance it started is shut down."""

    gpus_per_task: float | None = None

    def __enter__(self) -> "Executor":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        """Release what the executor started."""

    def share(self, obj: Any) -> Any:
        """A handle for ``obj`` to pass as a task argument (sent to workers once, not once per task)."""
        return obj

    def gpus(self) -> float:
        """GPUs per task: the configured share, else 1 where the executor has GPUs and 0 where not."""
        return 0.0

    @abstractmethod
    def map(self, fn: Callable[..., Any], tasks: Sequence[Task], on_done: OnDone | None = None, *,
            num_cpus: float = 1, num_gpus: float = 0) -> list[Any]:
        """``fn(*task.args)`` for every task: results in task order, ``TaskFailed`` for a failed one.

        ``on_done(index, result)`` runs in this process as each task finishes. ``num_cpus`` and
        ``num_gpus`` are the resources one task claims (fractions allowed; ignored when serial).
        """

    def describe(self) -> str:
        return type(self).__name__


def _blocked_by(task: Task, results: dict[int, Any]) -> TaskFailed | None:
    failed = [i for i in task.after if isinstance(results.get(i), TaskFailed)]
    if failed:
        return TaskFailed(f"task {failed[0]} it needs failed: {results[failed[0]].error}")
    return None


class SerialExecutor(Executor):
    """Runs tasks one after another in this process, in the order given."""

    def map(self, fn, tasks, on_done=None, *, num_cpus=1, num_gpus=0):
        results: dict[int, Any] = {}
        for i, task in enumerate(tasks):
            if any(j >= i for j in task.after):
                raise ValueError(f"task {i} waits for a later task {task.after}")
            result = _blocked_by(task, results)
            if result is None:
                try:
                    result = fn(*task.args)
                except Exception as e:  # noqa: BLE001 - one failed task must not end the others
                    result = TaskFailed(_one_line(e), e)
            results[i] = result
            if on_done is not None:
                on_done(i, result)
        return [results[i] for i in range(len(tasks))]

    def describe(self) -> str:
        return "serial"


def _call(fn: Callable[..., Any], n_args: int, *args_and_deps: Any) -> Any:
    """Ray task body: ``fn`` on the first ``n_args`` arguments; the rest are dependencies Ray waited for."""
    return fn(*args_and_deps[:n_args])


def _import_ray():
    try:
        import ray
    except ImportError:
        raise OblivioError("--ray needs Ray: pip install 'oblivio[ray]'") from None
    return ray


class RayExecutor(Executor):
    """Runs each task as a Ray task (on a local instance or an existing cluster, see the module docstring).

    ``gpus_per_task`` (fractions allowed, e.g. 0.25 = four tasks share a GPU) overrides what callers
    ask for; ``max_retries`` re-runs a task whose worker died (not one that raised).
    """

    def __init__(self, address: str | None = None, *, gpus_per_task: float | None = None, max_retries: int = 1,
                 init_options: dict | None = None):
        if gpus_per_task is not None and gpus_per_task < 0:
            raise OblivioError(f"gpus per task must be at least 0, got {gpus_per_task}")
        self.address = address or "local"
        self.gpus_per_task = gpus_per_task
        self.max_retries = max_retries
        self.init_options = dict(init_options or {})
        self._started = False
        self._remote = None

    def _ray(self):
        ray = _import_ray()
        if not ray.is_initialized():
            options = {"include_dashboard": False, "log_to_driver": False} | self.init_options
            try:
                ray.init(address=self.address, **options)
            except (ConnectionError, ValueError, RuntimeError) as e:
                raise OblivioError(f"cannot start or reach Ray at {self.address!r}: {_one_line(e)}") from None
            self._started = True
        if self._remote is None:
            self._remote = ray.remote(_call)
        return ray

    def close(self) -> None:
        if self._started:
            _import_ray().shutdown()
            self._started = False
            self._remote = None

    def share(self, obj: Any) -> Any:
        return self._ray().put(obj)

    def gpus(self) -> float:
        if self.gpus_per_task is not None:
            return self.gpus_per_task
        return 1.0 if self._ray().cluster_resources().get("GPU", 0) > 0 else 0.0

    def describe(self) -> str:
        ray = self._ray()
        res = ray.cluster_resources()
        gpus = f", {res['GPU']:g} GPUs" if res.get("GPU") else ""
        return f"ray {ray.__version__} ({self.address}: {len(ray.nodes())} nodes, {res.get('CPU', 0):g} CPUs{gpus})"

    def map(self, fn, tasks, on_done=None, *, num_cpus=1, num_gpus=0):
        ray = self._ray()
        remote = self._remote.options(num_cpus=num_cpus, num_gpus=num_gpus, max_retries=self.max_retries)
        fn_ref = ray.put(fn)
        refs: list = []
        for i, task in enumerate(tasks):
            if any(j >= i for j in task.after):
                raise ValueError(f"task {i} waits for a later task {task.after}")
            refs.append(remote.remote(fn_ref, len(task.args), *task.args, *(refs[j] for j in task.after)))
        index = {ref: i for i, ref in enumerate(refs)}
        results: dict[int, Any] = {}
        pending = list(refs)
        while pending:
            ready, pending = ray.wait(pending, num_returns=1)
            i = index[ready[0]]
            try:
                result = ray.get(ready[0])
            except ray.exceptions.RayError as e:
                result = _blocked_by(tasks[i], results) or self._failed(e)
            results[i] = result
            if on_done is not None:
                on_done(i, result)
        return [results[i] for i in range(len(tasks))]

    @staticmethod
    def _failed(e: BaseException) -> TaskFailed:
        cause = getattr(e, "cause", None)
        if isinstance(cause, BaseException):
            return TaskFailed(_one_line(cause), cause)
        return TaskFailed(_one_line(e), e)


def make_executor(ray: bool | str | None = None, *, gpus_per_task: float | None = None) -> Executor:
    """Serial when ``ray`` is falsy; else a ``RayExecutor`` (``True``/``"local"``: a local instance; or an address)."""
    if not ray:
        if gpus_per_task is not None:
            raise OblivioError("gpus per task applies to Ray runs only (add --ray)")
        return SerialExecutor()
    return RayExecutor(None if ray is True else str(ray), gpus_per_task=gpus_per_task)


__all__ = ["Executor", "RayExecutor", "SerialExecutor", "Task", "TaskFailed", "make_executor"]
