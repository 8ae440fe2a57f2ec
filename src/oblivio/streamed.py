"""Data read sample by sample, for datasets that do not fit in memory.

``StreamedImages`` stands in for an (N, C, H, W) float tensor whose samples are read on demand: an integer
index reads one sample, a slice or an index array gives a view (nothing read), ``materialize()`` stacks a view
(for small parts only). ``StreamedPart`` is the map-style torch ``Dataset`` over such a view and its labels, what
``Split`` hands to training, methods and metrics for streamed data; ``batching.DeviceData`` then reads it batch
by batch through a ``DataLoader`` with workers instead of stacking it.

``memory_budget()`` is how many bytes one stacked tensor may take: a quarter of the memory this process may
still use (the system's available memory, and the data-segment / address-space limit where one is set).
Loaders stream automatically when their decoded data would exceed it.
"""
from __future__ import annotations

import os
import resource
from typing import Callable

import numpy as np
import torch
from torch.utils.data import Dataset as TorchDataset

from .errors import OblivioError

BUDGET_SHARE = 4  # a stack may take a quarter of the memory left
SMALL_PART = 1024  # streamed parts up to this many samples (probes) are stacked when they fit


def _available_bytes() -> int:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 1 << 34


def _used_bytes(field: str) -> int:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def memory_budget() -> int:
    """Bytes one stacked tensor may take: a quarter of what this process may still allocate."""
    room = _available_bytes()
    for limit, used in ((resource.RLIMIT_DATA, "VmData"), (resource.RLIMIT_AS, "VmSize")):
        soft = resource.getrlimit(limit)[0]
        if soft != resource.RLIM_INFINITY:
            room = min(room, max(soft - _used_bytes(used), 0))
    return room // BUDGET_SHARE


class StreamedImages:
    """A tensor-like view of ``n`` samples read by ``read(i) -> (C, H, W) float tensor``; ``index`` picks a view.

    ``read`` must be picklable (a module-level class, not a closure) so DataLoader workers can use it.
    """

    ndim = 4
    dtype = torch.float32

    def __init__(self, read: Callable[[int], torch.Tensor], n: int, sample_shape: tuple[int, ...],
                 index: np.ndarray | None = None):
        self.read, self.n, self.sample_shape = read, n, tuple(sample_shape)
        self.index = np.arange(n, dtype=np.int64) if index is None else index

    @property
    def shape(self) -> torch.Size:
        return torch.Size((len(self.index), *self.sample_shape))

    def size(self, dim: int | None = None):
        return self.shape if dim is None else self.shape[dim]

    def __len__(self) -> int:
        return len(self.index)

    @property
    def nbytes(self) -> int:
        return len(self.index) * int(np.prod(self.sample_shape)) * 4

    def __getitem__(self, key):
        if isinstance(key, (int, np.integer)) or (torch.is_tensor(key) and key.ndim == 0):
            return self.read(int(self.index[int(key)]))
        if torch.is_tensor(key):
            key = key.cpu().numpy()
        return StreamedImages(self.read, self.n, self.sample_shape, self.index[key])

    def materialize(self) -> torch.Tensor:
        """The view stacked into one tensor; a one-line error when it would not fit the memory budget."""
        check_fits(self.nbytes, f"{len(self)} streamed samples of shape {self.sample_shape}")
        out = torch.empty(self.shape, dtype=self.dtype)
        for j, i in enumerate(self.index):
            out[j] = self.read(int(i))
        return out

    def chunks(self, size: int = 256):
        """The view's samples, stacked ``size`` at a time (for hashing or scanning without a full stack)."""
        for start in range(0, len(self), size):
            yield self[start:start + size].materialize()


def check_fits(nbytes: int, what: str) -> None:
    """A one-line error when a tensor of ``nbytes`` would exceed ``memory_budget()``."""
    budget = memory_budget()
    if nbytes > budget:
        raise OblivioError(f"{what} would take {_size(nbytes)} in memory, over the {_size(budget)} this process can "
                           "spare; this step needs them in memory (use a smaller part or a machine with more memory)")


def _size(nbytes: int) -> str:
    return f"{nbytes / 2**20:,.0f} MiB" if nbytes >= 2**20 else f"{nbytes / 2**10:,.1f} KiB"


class StreamedPart(TorchDataset):
    """A map-style dataset of streamed ``images`` (a ``StreamedImages`` view) and their ``labels``."""

    def __init__(self, images: StreamedImages, labels: torch.Tensor):
        if len(images) != len(labels):
            raise OblivioError(f"{len(images)} streamed images but {len(labels)} labels")
        self.images, self.labels = images, labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.images[i], self.labels[i]

    def select(self, idx) -> "StreamedPart":
        """The samples at ``idx`` (positions in this part), still streamed."""
        idx = torch.as_tensor(idx, dtype=torch.long)
        return StreamedPart(self.images[idx], self.labels[idx])
