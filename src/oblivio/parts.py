"""Parts of a dataset without stacking them: labels, selections, concatenations, new targets, and the stack itself.

Every helper keeps a ``TensorDataset`` a ``TensorDataset`` (the fast path) and works on any map-style ``Dataset``
otherwise, reading only what it must; ``tensors_of`` stacks, within ``streamed.memory_budget()``.
"""
from __future__ import annotations

import torch
from torch.utils.data import ConcatDataset, Subset, TensorDataset
from torch.utils.data import Dataset as TorchDataset

from .streamed import SMALL_PART, StreamedPart, check_fits, memory_budget


def labels_of(data: TorchDataset) -> torch.Tensor:
    """The labels of a dataset as one tensor, without stacking its inputs (read one sample at a time at worst)."""
    if isinstance(data, (TensorDataset, StreamedPart)) or hasattr(data, "tensors"):
        return data.tensors[1] if hasattr(data, "tensors") else data.labels
    if isinstance(data, Subset):
        return labels_of(data.dataset)[torch.as_tensor(data.indices, dtype=torch.long)]
    if isinstance(data, ConcatDataset):
        return torch.cat([labels_of(d) for d in data.datasets])
    if hasattr(data, "targets"):
        return torch.as_tensor(data.targets)
    return torch.as_tensor([int(data[i][1]) for i in range(len(data))])


def stacked_bytes(data: TorchDataset) -> int:
    """Bytes the dataset's inputs take (or would take, stacked)."""
    if hasattr(data, "tensors"):
        return data.tensors[0].numel() * data.tensors[0].element_size()
    if isinstance(data, StreamedPart):
        return data.images.nbytes
    if len(data) == 0:
        return 0
    x = torch.as_tensor(data[0][0])
    return len(data) * x.numel() * x.element_size()


def fits_in_memory(data: TorchDataset) -> bool:
    """Whether to stack ``data``: a TensorDataset, or small enough (see ``streamed.memory_budget``); a streamed
    part only when it is a small one (a probe of at most ``SMALL_PART`` samples)."""
    if hasattr(data, "tensors"):
        return True
    if isinstance(data, StreamedPart) and len(data) > SMALL_PART:
        return False
    return stacked_bytes(data) <= memory_budget()


def select(data: TorchDataset, idx) -> TorchDataset:
    """The samples at ``idx`` (positions in ``data``), of the same kind where it has one (else a ``Subset``)."""
    idx = torch.as_tensor(idx, dtype=torch.long)
    if hasattr(data, "tensors"):
        return TensorDataset(*(t[idx] for t in data.tensors))
    if isinstance(data, StreamedPart):
        return data.select(idx)
    return Subset(data, idx.tolist())


def tensors_of(data: TorchDataset) -> tuple[torch.Tensor, torch.Tensor]:
    """(inputs, labels) of a dataset as two tensors (a TensorDataset's own tensors, else stacked); a one-line
    error when stacking would exceed the memory budget (use ``DeviceData``, which streams)."""
    if hasattr(data, "tensors"):
        return data.tensors[0], data.tensors[1]
    if isinstance(data, StreamedPart):
        return data.images.materialize(), data.labels
    check_fits(stacked_bytes(data), f"stacking {len(data)} samples")
    return collate([data[i] for i in range(len(data))])


def collate(samples: list) -> tuple[torch.Tensor, torch.Tensor]:
    """(inputs, targets) of a list of samples stacked; targets may be ints, 0-d tensors or vectors."""
    xs, ys = zip(*samples)
    return torch.stack([torch.as_tensor(x) for x in xs]), torch.stack([torch.as_tensor(y) for y in ys])


def concat(parts: list[TorchDataset]) -> TorchDataset:
    """The parts one after another: one ``TensorDataset`` when every part is one, else a ``ConcatDataset``."""
    if all(hasattr(p, "tensors") for p in parts):
        return TensorDataset(*(torch.cat(ts) for ts in zip(*(p.tensors for p in parts))))
    return ConcatDataset(parts)


def with_targets(data: TorchDataset, targets: torch.Tensor) -> TorchDataset:
    """The inputs of ``data`` paired with other ``targets`` (a ``TensorDataset`` where ``data`` is one)."""
    return TensorDataset(data.tensors[0], targets) if hasattr(data, "tensors") else WithTargets(data, targets)


class WithTargets(TorchDataset):
    """The inputs of ``data`` paired with other ``targets`` (e.g. a teacher's soft labels), without reading them."""

    def __init__(self, data: TorchDataset, targets: torch.Tensor):
        self.data, self.targets = data, targets

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, i: int):
        return self.data[i][0], self.targets[i]
