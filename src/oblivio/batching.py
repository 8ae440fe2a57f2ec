"""Mini-batches sliced from whole tensors, kept on the compute device when they fit.

A ``DataLoader`` over a ``TensorDataset`` builds every batch on the CPU sample by sample; here the
inputs and labels are moved to the device once (when they take at most a quarter of its free memory,
else kept in pinned host memory and copied batch by batch) and each batch is one indexing operation.

The order is the one a ``DataLoader(shuffle=True, generator=g)`` gives (PyTorch 2.x): per epoch it
draws one 64-bit base seed from ``g``, then ``randperm(n, generator=g)``, and once the epoch is
exhausted one more (unused) ``randperm``, so the same seed gives the same numbers as a
DataLoader-based loop on the CPU.

Data that is not a ``TensorDataset`` (a ``streamed.StreamedPart``, any map-style ``Dataset``) is stacked like one
when it fits ``streamed.memory_budget()``; otherwise it is streamed: each batch read through a ``DataLoader``
with workers, in the same order, so only batches are ever in memory and the numbers are the same.
"""
from __future__ import annotations

import os
from typing import Iterator

import torch
from torch.utils.data import DataLoader
from torch.utils.data import Dataset as TorchDataset

from .device import fits_on
from .parts import collate, fits_in_memory, labels_of, select, tensors_of  # noqa: F401 - select re-exported


def data_workers() -> int:
    """DataLoader worker processes for streamed data: one core left to the training process, at most 4."""
    return max(0, min(4, (os.cpu_count() or 1) - 1))


def epoch_order(n: int, generator: torch.Generator) -> torch.Tensor:
    """The sample order of one shuffled epoch, exactly as ``DataLoader(shuffle=True, generator=generator)`` draws it."""
    torch.empty((), dtype=torch.int64).random_(generator=generator)  # the loader iterator's base seed
    return torch.randperm(n, generator=generator)


def batch_bounds(n: int, batch_size: int, merge_small_last: bool = False) -> list[tuple[int, int]]:
    """(start, stop) of each mini-batch of one pass over ``n`` samples.

    With ``merge_small_last``, a last batch of fewer than half ``batch_size`` samples joins the one
    before it, so no step sees a tiny batch (noisy gradient at the full learning rate, BatchNorm
    statistics of a handful of samples) and every sample is still seen once.
    """
    starts = list(range(0, n, batch_size))
    if merge_small_last and len(starts) > 1 and 2 * (n - starts[-1]) < batch_size:
        starts.pop()
    return list(zip(starts, starts[1:] + [n]))


class DeviceData:
    """A dataset's tensors ready for batching on ``device``: resident there when they fit, else pinned on the host."""

    def __init__(self, data: TorchDataset, device: torch.device | str):
        self.device = torch.device(device)
        self.streamed = None if fits_in_memory(data) else data  # read batch by batch (see the module docstring)
        if self.streamed is not None:
            self.resident, self.x, self.y = False, None, labels_of(data)
            return
        x, y = tensors_of(data)
        self.resident = fits_on(self.device, x.numel() * x.element_size() + y.numel() * y.element_size())
        if self.resident:
            x, y = x.to(self.device), y.to(self.device)
        elif self.device.type == "cuda":
            x, y = x.pin_memory(), y.pin_memory()
        self.x, self.y = x, y

    def __len__(self) -> int:
        return len(self.y)

    def take(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The samples at ``idx`` (CPU indices), on the device."""
        if self.streamed is not None:
            return self._moved(collate([self.streamed[int(i)] for i in idx]))
        if self.resident:
            idx = idx.to(self.device, non_blocking=True)
            return self.x[idx], self.y[idx]
        x, y = self.x[idx], self.y[idx]
        if self.device.type == "cuda":
            x, y = x.pin_memory(), y.pin_memory()
        return x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)

    def epoch(self, batch_size: int, generator: torch.Generator | None = None,
              merge_small_last: bool = False) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """One pass in mini-batches: shuffled with ``generator`` (DataLoader order), in order without one
        (``merge_small_last``: see ``batch_bounds``)."""
        n = len(self)
        bounds = batch_bounds(n, batch_size, merge_small_last)
        if self.streamed is not None:
            order = torch.arange(n) if generator is None else epoch_order(n, generator)
            yield from self._stream([order[i:j].tolist() for i, j in bounds])
            if generator is not None:
                torch.randperm(n, generator=generator)
            return
        if generator is None:
            if self.resident:
                for i, j in bounds:
                    yield self.x[i:j], self.y[i:j]
                return
            order = torch.arange(n)
        else:
            order = epoch_order(n, generator)
        if self.resident:  # one copy of the order per epoch; each batch is then one gather on the device
            order = order.to(self.device, non_blocking=True)
            for i, j in bounds:
                idx = order[i:j]
                yield self.x[idx], self.y[idx]
        else:
            for i, j in bounds:
                yield self.take(order[i:j])
        if generator is not None:
            torch.randperm(n, generator=generator)  # RandomSampler's trailing draw for the partial pass

    def _moved(self, batch) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = batch
        if self.device.type == "cuda":
            x, y = x.pin_memory(), y.pin_memory()
        return x.to(self.device, non_blocking=True), torch.as_tensor(y).to(self.device, non_blocking=True)

    def _stream(self, batches: list[list[int]]) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """The given batches of the streamed dataset, read by DataLoader workers (in order) and moved to the device."""
        workers = data_workers() if len(batches) > 1 else 0
        loader = DataLoader(self.streamed, batch_sampler=batches, num_workers=workers, collate_fn=collate,
                            prefetch_factor=2 if workers else None, persistent_workers=False)
        for batch in loader:
            yield self._moved(batch)
