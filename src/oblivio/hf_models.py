"""A local Hugging Face image-classification model folder as an oblivio model: ``oblivio train --model hf:PATH``.

The folder (``config.json`` + weights, as ``save_pretrained`` writes them) is read with ``transformers``'
``AutoModelForImageClassification`` and ``local_files_only=True``: nothing is downloaded. The model is wrapped in
``HFImageClassifier``, which takes oblivio's (N, C, H, W) inputs in [0, 1] and returns logits.

The checkpoint sidecar records the model as ``oblivio.hf_models:image_classifier`` with the folder's config (and
its image processor's mean and std) as arguments, so ``load_checkpoint``, ``forget`` (``retrain``: a fresh model
from that config), ``audit`` and the ledger rebuild it without the folder.
"""
from __future__ import annotations

import json
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .errors import OblivioError
from .models import build_model, model_arch

PREFIX = "hf:"
FACTORY = "oblivio.hf_models:image_classifier"
# config keys a rebuild does without: the saving run's, and the label names (the count is kept as num_labels; the
# data's class names are in the sidecar's training record)
_LEFT_OUT = ("transformers_version", "dtype", "torch_dtype", "_name_or_path", "_commit_hash", "architectures",
             "id2label", "label2id")


class HFImageClassifier(nn.Module):
    """A ``transformers`` image classifier on oblivio's inputs: gray images repeated to the model's 3 channels,
    resized (bilinear) to its ``image_size`` where they differ, normalised with its processor's mean and std."""

    def __init__(self, model: nn.Module, channels: int, size: tuple[int, int] | None,
                 mean: Sequence[float] | None = None, std: Sequence[float] | None = None):
        super().__init__()
        self.model, self.channels, self.size = model, channels, size
        norm = mean is not None and std is not None
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1) if norm else None, persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1) if norm else None, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] != self.channels:
            x = x.expand(-1, self.channels, -1, -1)
        if self.size is not None and tuple(x.shape[-2:]) != self.size:
            x = F.interpolate(x, size=self.size, mode="bilinear", align_corners=False)
        if self.mean is not None:
            x = (x - self.mean) / self.std
        return self.model(pixel_values=x).logits


@contextmanager
def _transformers() -> Iterator[Any]:
    """The ``transformers`` module with its progress bars and load reports off (restored afterwards)."""
    try:
        import transformers
        from transformers.utils import logging
    except ImportError:
        raise OblivioError("hf: models need the transformers package: pip install 'oblivio[hf]'") from None
    bars, level = logging.is_progress_bar_enabled(), logging.get_verbosity()
    logging.disable_progress_bar()
    logging.set_verbosity_error()
    try:
        yield transformers
    finally:
        logging.set_verbosity(level)
        if bars:
            logging.enable_progress_bar()


def _first_line(e: Exception) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0][:200]


def _size(config) -> tuple[int, int] | None:
    size = getattr(config, "image_size", None)
    if isinstance(size, int):
        return size, size
    if isinstance(size, (list, tuple)) and len(size) == 2:
        return int(size[0]), int(size[1])
    return None


def image_classifier(input_shape: Sequence[int], num_classes: int, config: dict,
                     mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
                     pretrained: str | None = None) -> HFImageClassifier:
    """``HFImageClassifier`` of ``config`` (a ``to_diff_dict`` with ``model_type``), freshly initialised, or
    with the weights of the folder ``pretrained``; the label count must be ``num_classes``."""
    where = pretrained or "the recorded Hugging Face config"
    with _transformers() as transformers:
        settings = dict(config)
        try:
            cfg = transformers.AutoConfig.for_model(settings.pop("model_type"), **settings)
        except (KeyError, ValueError, TypeError) as e:
            raise OblivioError(f"{where}: not a usable transformers config ({_first_line(e)})") from None
        if cfg.num_labels != num_classes:
            raise OblivioError(f"{where} has {cfg.num_labels} labels (config num_labels) but the data has "
                               f"{num_classes} classes")
        c, h, w = input_shape
        channels = int(getattr(cfg, "num_channels", c))
        if h == 1 and w > 1:
            raise OblivioError(f"{where}: an image-classification model needs images; the data is a table of "
                               f"shape {tuple(input_shape)}")
        if c != channels and c != 1:
            raise OblivioError(f"{where} takes {channels}-channel images but the data has {c} channels")
        if pretrained is None:
            model = transformers.AutoModelForImageClassification.from_config(cfg)
        else:
            try:
                model, info = transformers.AutoModelForImageClassification.from_pretrained(
                    pretrained, local_files_only=True, output_loading_info=True)
            except (OSError, ValueError, RuntimeError) as e:
                raise OblivioError(f"{pretrained}: cannot load the model ({_first_line(e)})") from None
            if info["missing_keys"]:
                missing = sorted(info["missing_keys"])
                raise OblivioError(f"{pretrained}: its weights lack {len(missing)} of the model's tensors "
                                   f"({missing[0]}, ...): not a complete image-classification model")
    return HFImageClassifier(model.float(), channels, _size(cfg), mean, std)


def hf_arch(spec: str, model_args: dict | None = None) -> tuple[Path, str]:
    """The folder of ``hf:PATH`` and the architecture string a sidecar records for it (config and normalisation
    read from the folder); one-line errors for a folder that is not an image-classification model."""
    folder = Path(spec[len(PREFIX):] if spec.startswith(PREFIX) else spec).expanduser()
    if not str(spec[len(PREFIX):]).strip():
        raise OblivioError("--model hf:PATH needs the model folder's path after hf:")
    if model_args:
        raise OblivioError("--model-arg does not apply to hf: models; their settings come from config.json")
    if not folder.exists():
        raise OblivioError(f"--model {spec}: {folder} not found")
    if not (folder / "config.json").is_file():
        raise OblivioError(f"--model {spec}: {folder} has no config.json (a folder written by save_pretrained)")
    if not any(folder.glob("*.safetensors")) and not any(folder.glob("pytorch_model*.bin")):
        raise OblivioError(f"--model {spec}: {folder} has no weights (model.safetensors or pytorch_model.bin)")
    with _transformers() as transformers:
        try:
            cfg = transformers.AutoConfig.from_pretrained(folder, local_files_only=True)
        except (OSError, ValueError, KeyError, json.JSONDecodeError) as e:
            raise OblivioError(f"--model {spec}: unreadable config.json ({_first_line(e)})") from None
        if type(cfg) not in transformers.MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING:
            raise OblivioError(f"--model {spec}: {cfg.model_type} models have no image-classification head")
    config = {k: v for k, v in cfg.to_diff_dict().items() if k not in _LEFT_OUT}
    config |= {"model_type": cfg.model_type, "num_labels": cfg.num_labels}
    return folder.resolve(), model_arch(FACTORY, {"config": config} | _normalisation(folder, spec))


def _normalisation(folder: Path, spec: str) -> dict:
    """``{"mean", "std"}`` of the folder's ``preprocessor_config.json`` when it normalises, else {}."""
    path = folder / "preprocessor_config.json"
    if not path.is_file():
        return {}
    try:
        proc = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise OblivioError(f"--model {spec}: unreadable preprocessor_config.json ({_first_line(e)})") from None
    mean, std = proc.get("image_mean"), proc.get("image_std")
    if not proc.get("do_normalize", True) or mean is None or std is None:
        return {}
    as_list = [mean] if isinstance(mean, (int, float)) else mean, [std] if isinstance(std, (int, float)) else std
    if not all(isinstance(v, list) and v and all(isinstance(a, (int, float)) for a in v) for v in as_list):
        raise OblivioError(f"--model {spec}: preprocessor_config.json: image_mean and image_std must be numbers")
    return {"mean": as_list[0], "std": as_list[1]}


def pretrained(folder: Path, arch: str, input_shape: Sequence[int], num_classes: int,
               class_names: Sequence[str] | None) -> nn.Module:
    """The folder's model with its weights, after checking its labels' names against the data's class names
    (names other than transformers' defaults ``LABEL_0``, ``LABEL_1``, ...)."""
    model = build_model(arch, input_shape, num_classes, pretrained=str(folder))
    labels = model.model.config.id2label or {}
    names = [str(labels.get(i, f"LABEL_{i}")) for i in range(num_classes)]
    if class_names and names != [f"LABEL_{i}" for i in range(num_classes)]:
        i = next((i for i, (a, b) in enumerate(zip(names, class_names)) if a != str(b)), None)
        if i is not None:
            raise OblivioError(f"{folder}: class {i} is {class_names[i]!r} in the data but {names[i]!r} in the "
                               f"model's config id2label")
    return model
