"""Write a seeded subset of Fashion-MNIST or scikit-learn's digits as PNG files in the ImageFolder layout.

    python benchmarks/make_image_folder.py shirts                         # Fashion-MNIST, 100 + 20 per class
    python benchmarks/make_image_folder.py digits-png --source digits     # always available (8x8 images)
    python benchmarks/make_image_folder.py flat --no-split --per-class 30

Gives data that oblivio did not make, to try ``oblivio train --dataset imagefolder --data-dir OUT``:
OUT/train/<class>/<index>.png and OUT/test/<class>/<index>.png (the source's own train/test parts), or with
``--no-split`` OUT/<class>/<index>.png (oblivio then cuts a seeded test part). Class folders are named
``<label>-<name>`` (e.g. ``0-t-shirt-top``; digits: ``0`` to ``9``) so that their sorted order, which is the class id oblivio gives
them, is the source's label order; a file's name is its index in the source part.

Fashion-MNIST is read with oblivio's loader from --data-dir, $OBLIVIO_FASHION_MNIST_DIR or
/usr/share/datasets/fashion-mnist (``apt-get install dataset-fashion-mnist``). OUT must not exist or be empty.
Bad input ends in one ``error: ...`` line and exit status 2.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

FASHION_NAMES = ["t-shirt-top", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag",
                 "ankle-boot"]


def source_arrays(source: str, data_dir: str | None) -> tuple[dict, list[str]]:
    """{"train": (uint8 images (N, H, W), labels), "test": ...} and the class names of ``source``."""
    from oblivio import OblivioError, load_dataset

    if source == "fashion-mnist":
        data, names = load_dataset("fashion-mnist", root=data_dir), FASHION_NAMES
    elif source == "digits":
        if data_dir:
            raise OblivioError("--data-dir does not apply to --source digits (bundled with scikit-learn)")
        data, names = load_dataset("digits"), [str(i) for i in range(10)]
    else:
        raise OblivioError(f"--source must be fashion-mnist or digits, got {source!r}")

    def to_uint8(x) -> np.ndarray:
        return np.clip(np.rint(x[:, 0].numpy() * 255.0), 0, 255).astype(np.uint8)

    return ({"train": (to_uint8(data.x_train), data.y_train.numpy()), "test": (to_uint8(data.x_test), data.y_test.numpy())},
            names)


def pick(y: np.ndarray, per_class: int, rng: np.random.Generator) -> np.ndarray:
    """Up to ``per_class`` indices of each class, drawn without replacement, sorted."""
    chosen = [rng.choice(np.flatnonzero(y == c), size=min(per_class, int((y == c).sum())), replace=False)
              for c in np.unique(y)]
    return np.sort(np.concatenate(chosen))


def write(out: Path, parts: dict, names: list[str], per_class: int, test_per_class: int, split: bool,
          seed: int) -> dict[str, int]:
    """Write the PNG files; returns the number written per part."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    width = len(str(len(names) - 1))
    folders = [name if name == str(i) else f"{i:0{width}d}-{name}" for i, name in enumerate(names)]
    counts = {}
    for part, n in (("train", per_class), ("test", test_per_class)):
        x, y = parts[part]
        chosen = pick(y, n, rng)
        for i in chosen:
            folder = (out / part if split else out) / folders[int(y[i])]
            folder.mkdir(parents=True, exist_ok=True)
            stem = f"{i:05d}" if split else f"{part}-{i:05d}"
            Image.fromarray(x[i]).save(folder / f"{stem}.png")
        counts[part] = len(chosen)
    return counts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="folder to write (must not exist, or be empty)")
    parser.add_argument("--source", default="fashion-mnist", help="fashion-mnist (default) or digits")
    parser.add_argument("--data-dir", default=None, help="Fashion-MNIST's IDX files (default: oblivio's lookup)")
    parser.add_argument("--per-class", type=int, default=100, help="training images per class (default 100)")
    parser.add_argument("--test-per-class", type=int, default=20, help="test images per class (default 20)")
    parser.add_argument("--no-split", dest="split", action="store_false",
                        help="one folder per class, no train/ and test/ folders")
    parser.add_argument("--seed", type=int, default=0, help="seed of the subset (default 0)")
    args = parser.parse_args(argv)
    from oblivio import OblivioError

    try:
        for flag, n in (("--per-class", args.per_class), ("--test-per-class", args.test_per_class)):
            if n < 1:
                raise OblivioError(f"{flag} must be at least 1, got {n}")
        if args.out.exists() and (not args.out.is_dir() or any(args.out.iterdir())):
            raise OblivioError(f"{args.out} already exists and is not an empty folder; name a new one")
        parts, names = source_arrays(args.source, args.data_dir)
        counts = write(args.out, parts, names, args.per_class, args.test_per_class, args.split, args.seed)
    except (OblivioError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    layout = "train/ and test/ folders" if args.split else "one folder per class"
    print(f"wrote {counts['train']} training and {counts['test']} test images of {args.source} "
          f"({len(names)} classes, {layout}) to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
