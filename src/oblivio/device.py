"""Where oblivio computes: device choice, mixed precision, deterministic mode and a record of the hardware.

    dev = resolve_device("auto")            # CUDA when present, else the CPU
    with autocast(dev, "bf16"): ...         # bf16 autocast on that device (None = full precision)
    set_deterministic(True)                 # deterministic CUDA kernels where PyTorch has them
    device_info(dev)                        # {"device": "cuda:0", "gpu": "NVIDIA H100 ...", "torch": ..., "cuda": ...}

On the CPU every run is deterministic for a seed. On CUDA, cuDNN autotuning and atomic-add kernels
(e.g. convolution and adaptive-pooling backward passes) make runs differ in the last bits; with
``set_deterministic(True)`` PyTorch picks deterministic kernels where it has them and warns (does not
fail) where it has none, so results are reproducible on the same GPU model, driver and PyTorch build
for every operation oblivio's models use except those warned about.
"""
from __future__ import annotations

import contextlib
import os
import re
from typing import Iterator

import torch

from .errors import OblivioError

AMP_MODES = ("bf16",)
_DEVICE = re.compile(r"^(auto|cpu|cuda|cuda:\d+)$")


def resolve_device(spec: str | torch.device | None = "auto") -> torch.device:
    """``auto`` (CUDA when present, else CPU), ``cpu``, ``cuda`` or ``cuda:N`` -> a ``torch.device``.

    Raises a one-line ``OblivioError`` for an unknown string or a CUDA device that is not there.
    """
    if isinstance(spec, torch.device):
        spec = str(spec)
    spec = (spec or "auto").strip().lower()
    if not _DEVICE.match(spec):
        raise OblivioError(f"--device {spec}: unknown device; choose auto, cpu, cuda or cuda:N")
    if spec == "auto":
        spec = "cuda" if torch.cuda.is_available() else "cpu"
    if spec == "cpu":
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise OblivioError(f"--device {spec}: no CUDA device is available")
    dev = torch.device(spec)
    if dev.index is None:  # name the device as tensors on it report theirs ("cuda:0"), so devices compare equal
        return torch.device("cuda", torch.cuda.current_device())
    if dev.index >= torch.cuda.device_count():
        raise OblivioError(f"--device {spec}: only {torch.cuda.device_count()} CUDA device(s) are available")
    return dev


def check_amp(amp: str | None) -> str | None:
    """Validate an ``amp`` setting: None (full precision) or ``"bf16"``."""
    if amp in (None, "", "none", "off"):
        return None
    if amp not in AMP_MODES:
        raise OblivioError(f"--amp {amp}: unknown mixed-precision mode; choose bf16 or leave it off")
    return amp


def autocast(device: torch.device | str, amp: str | None):
    """Autocast context for ``amp`` on ``device`` (a no-op context when ``amp`` is None)."""
    amp = check_amp(amp)
    dev = torch.device(device)
    if amp is None:
        return contextlib.nullcontext()
    # no weight-cast cache: a method runs many optimiser steps inside one context, and cached bf16 copies
    # of the weights would make every forward pass after the first ignore the updates
    return torch.autocast(device_type=dev.type, dtype=torch.bfloat16, cache_enabled=False)


def set_deterministic(enabled: bool = True) -> None:
    """Ask PyTorch for deterministic algorithms (warn-only where none exist), fixed cuBLAS workspace, no cuDNN autotuning."""
    if enabled:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(enabled, warn_only=True)
    torch.backends.cudnn.deterministic = enabled
    torch.backends.cudnn.benchmark = not enabled and torch.cuda.is_available()


@contextlib.contextmanager
def deterministic(enabled: bool) -> Iterator[None]:
    """``set_deterministic(enabled)`` for the block, restoring the previous settings afterwards."""
    before = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),
              torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark)
    if enabled:
        set_deterministic(True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before[0], warn_only=before[1])
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = before[2], before[3]


def device_info(device: torch.device | str | None = None) -> dict:
    """The device that computes, its name (GPU model or CPU), and the torch / CUDA / cuDNN versions."""
    dev = resolve_device(device)
    info = {"device": str(dev), "gpu": None, "torch": torch.__version__, "cuda": torch.version.cuda,
            "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None}
    if dev.type == "cuda":
        index = dev.index if dev.index is not None else torch.cuda.current_device()
        info["device"] = f"cuda:{index}"
        info["gpu"] = torch.cuda.get_device_name(index)
        info["gpu_memory_gib"] = round(torch.cuda.get_device_properties(index).total_memory / 2**30, 1)
    return info


def free_memory(device: torch.device) -> int:
    """Bytes that may still be allocated on ``device`` (for the CPU: unlimited, the data already lives there)."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    return 1 << 62


def fits_on(device: torch.device, nbytes: int, share: float = 0.25) -> bool:
    """Whether ``nbytes`` of data may be kept on ``device``: at most ``share`` of its free memory."""
    return device.type != "cuda" or nbytes <= share * free_memory(device)


def gpu_recipe_warning(model: str, samples: int, epochs: int, device) -> str | None:
    """A one-line warning when a recipe meant for a GPU (ResNet-18, or a CNN on tens of thousands of images) is
    about to train on the CPU, where it takes hours; None otherwise."""
    if torch.device(device).type != "cpu":
        return None
    work = samples * epochs
    if not ((model == "resnet18" and work >= 50_000) or (model == "cnn" and work >= 1_000_000)):
        return None
    return (f"warning: {model} on {samples:,} samples x {epochs} epochs is a GPU recipe and runs on the CPU here: "
            "expect hours (--device cuda on a machine with a GPU)")
