"""Training-time augmentation of image batches, on the batch's device: random crop with padding, horizontal flip.

A recipe is a spec string, parts joined by ``+`` (or ``,``):

- ``crop:P``: pad each image with P pixels of zeros on every side, then cut an H x W window at a random
  offset per sample (the CIFAR ResNet recipe uses ``crop:4``);
- ``flip``: mirror each image left-right with probability 1/2.

``crop:4+flip`` is the canonical form (``canonical``), as recorded in checkpoints and bench headers.
The draws come from a ``torch.Generator`` of their own, seeded from the training seed, so the shuffling
order is the same with and without augmentation and a seed gives the same numbers on CPU.
There is no normalisation step: a training-only transform would leave evaluation inputs unnormalised;
oblivio's inputs are already in [0, 1] and its convolutional models start with BatchNorm'd layers.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .errors import OblivioError

SEED_OFFSET = 0x5EED_A06  # the augmentation stream differs from the data-order stream of the same seed


@dataclass(frozen=True)
class Recipe:
    """A parsed spec: ``crop`` padding in pixels (0 = no crop) and ``flip``."""

    crop: int = 0
    flip: bool = False

    def __str__(self) -> str:
        return "+".join(([f"crop:{self.crop}"] if self.crop else []) + (["flip"] if self.flip else []))


def parse(spec: str | None) -> Recipe | None:
    """``"crop:4+flip"`` -> ``Recipe(4, True)``; None, ``""`` or ``"none"`` -> None; a bad spec -> one-line error."""
    if spec is None or str(spec).strip().lower() in ("", "none"):
        return None
    if not isinstance(spec, str):
        raise OblivioError(f"augment: give a spec string such as 'crop:4+flip', got {spec!r}")
    crop, flip = 0, False
    for part in (p.strip() for p in spec.replace(",", "+").split("+")):
        name, _, arg = part.partition(":")
        if name == "flip" and not arg and not flip:
            flip = True
        elif name == "crop" and not crop:
            if not arg.isdigit() or int(arg) < 1:
                raise OblivioError(f"augment: crop needs a padding of at least 1 pixel, e.g. crop:4, got {part!r}")
            crop = int(arg)
        else:
            raise OblivioError(f"augment: bad part {part!r} in {spec!r}; use crop:P and/or flip, each once, "
                               "joined by + (e.g. crop:4+flip)")
    return Recipe(crop, flip)


def canonical(spec: str | None) -> str | None:
    """The spec in its canonical form (checked), or None for no augmentation."""
    recipe = parse(spec)
    return str(recipe) if recipe else None


def check_images(recipe: Recipe, shape: tuple[int, ...]) -> None:
    """Refuse a recipe for inputs that are not images (C, H, W) with H, W > 1, or a crop wider than the image."""
    if len(shape) != 3 or min(shape[1:]) < 2:
        raise OblivioError(f"augment {recipe}: crop and flip need image inputs (C, H, W), got inputs of shape "
                           f"{tuple(shape)}")
    if recipe.crop > min(shape[1:]):
        raise OblivioError(f"augment {recipe}: padding {recipe.crop} exceeds the {shape[1]}x{shape[2]} image")


def random_crop(x: torch.Tensor, pad: int, gen: torch.Generator) -> torch.Tensor:
    """Each image of ``x`` (B, C, H, W) padded by ``pad`` zeros, then cut back to H x W at a random offset."""
    b, _, h, w = x.shape
    offsets = torch.randint(0, 2 * pad + 1, (2, b), generator=gen).to(x.device)
    padded = F.pad(x, (pad, pad, pad, pad))
    rows = (torch.arange(h, device=x.device)[None, :] + offsets[0][:, None])[:, :, None]  # (B, H, 1)
    cols = (torch.arange(w, device=x.device)[None, :] + offsets[1][:, None])[:, None, :]  # (B, 1, W)
    out = padded.permute(0, 2, 3, 1)[torch.arange(b, device=x.device)[:, None, None], rows, cols]  # (B, H, W, C)
    return out.permute(0, 3, 1, 2).contiguous()


def random_flip(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Each image of ``x`` (B, C, H, W) mirrored left-right with probability 1/2."""
    mask = (torch.rand(x.shape[0], generator=gen) < 0.5).to(x.device)
    return torch.where(mask[:, None, None, None], x.flip(-1), x)


def batch_transform(spec: str | None, shape: tuple[int, ...], seed: int
                    ) -> Callable[[torch.Tensor], torch.Tensor] | None:
    """A function augmenting one input batch per call (None without a recipe), checked against ``shape``.

    The random draws are made on the CPU (a few numbers per sample) so a seed gives the same crops and flips
    on every device; the images themselves stay on theirs.
    """
    recipe = parse(spec)
    if recipe is None:
        return None
    check_images(recipe, shape)
    gen = torch.Generator().manual_seed((seed + SEED_OFFSET) % 2**63)

    def apply(x: torch.Tensor) -> torch.Tensor:
        if recipe.crop:
            x = random_crop(x, recipe.crop, gen)
        if recipe.flip:
            x = random_flip(x, gen)
        return x

    return apply
