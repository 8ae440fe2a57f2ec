"""The ``--ray`` options shared by ``bench``, ``tune`` and ``audit`` (no command of its own).

    oblivio bench -c grid.yaml --ray                       # a local Ray instance on this machine's cores
    oblivio bench -c grid.yaml --ray-address auto          # the cluster started with `ray start` on this node
    oblivio bench -c grid.yaml --ray-address ray://head:10001 --gpus-per-task 0.25
"""
from __future__ import annotations

from typing import Optional

import typer

from ..parallel import Executor, make_executor


def ray_flag() -> bool:
    return typer.Option(False, "--ray", help="run the work as Ray tasks on a local Ray instance (needs the 'ray' extra: pip install ray)")


def ray_address() -> Optional[str]:
    return typer.Option(None, "--ray-address", metavar="ADDRESS",
                        help="join an existing Ray cluster instead (implies --ray): 'auto' for the one started with "
                             "`ray start` on this node, or ray://HOST:10001")


def gpus_per_task() -> Optional[float]:
    return typer.Option(None, "--gpus-per-task", min=0.0,
                        help="GPUs one Ray task claims, fractions allowed (default: a bench config's ray.gpus_per_task, else 1 where the cluster has GPUs, else 0)")


def executor_from_options(ray: bool, address: Optional[str], gpus: Optional[float]) -> Executor:
    """Serial, or a Ray executor for ``--ray`` / ``--ray-address`` (use it as a context manager)."""
    return make_executor(address or ray, gpus_per_task=gpus)
