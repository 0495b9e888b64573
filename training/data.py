"""Datasets as the project reads them: Fashion-MNIST through the serving preprocessing, the seeded
validation split, and the real phone photos with their mapping to the ten classes.

    >>> from data import load_images
    >>> looks, labels, raw = load_images("../shared/data/fashion_mnist", "test")   # or the Hub id
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from modelrepo.hub import HUB_DATASET
from model import CLASS_NAMES
from imaging.preprocess import fashion_look

__all__ = ["HUB_DATASET", "load_images", "split_train_val", "local_cache_dir", "PHOTO_FOLDERS", "load_photos",
           "load_photo_looks"]


def local_cache_dir(dataset: str) -> str | None:
    """A cache folder of its own for a local dataset folder; None (the default cache) for a Hub id.

    datasets keys its cache of a local folder by the folder's name and layout, not its path or
    contents, so two folders named fashion_mnist (the test slice and the full set) would share one
    cache. Keying by the resolved path and the files' sizes and times keeps them apart.
    """
    from datasets import config
    folder = Path(dataset)
    if not folder.is_dir():
        return None
    stamp = [str(folder.resolve())] + [f"{p.relative_to(folder)}:{p.stat().st_size}:{p.stat().st_mtime_ns}"
                                       for p in sorted(folder.rglob("*")) if p.is_file()]
    key = hashlib.sha256("\n".join(stamp).encode()).hexdigest()[:16]
    return str(Path(config.HF_DATASETS_CACHE) / "local" / f"{folder.resolve().name}-{key}")


def load_images(dataset: str | Path, split: str) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
    """One split through the serving preprocessing -> looks (N, 28, 28) in [0, 1], labels (N,), raw uint8.

    `dataset`: a Hub dataset id or a local folder in the same layout (hub.resolve_dataset_dir's)."""
    from datasets import load_dataset
    dataset = str(dataset)                          # datasets takes a string, not a Path
    ds = load_dataset(dataset, split=split, cache_dir=local_cache_dir(dataset))
    names = ds.features["label"].names
    assert len(names) == len(CLASS_NAMES), f"{dataset} has {len(names)} classes, expected {len(CLASS_NAMES)}"
    raw = np.stack([np.asarray(img.convert("L"), dtype=np.uint8) for img in ds["image"]])  # (N, 28, 28)
    looks = torch.from_numpy(np.stack([fashion_look(img) for img in raw]))                  # same path as serving
    return looks, torch.tensor(ds["label"], dtype=torch.long), raw


def split_train_val(n: int, val_size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A seeded permutation: the first `val_size` indices are validation, never trained on."""
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return perm[val_size:], perm[:val_size]


# ---------------------------------------------------------------------------------------------
# Real phone photos (../shared/data/clothing_photos: <split>/<folder>/<id>.jpg)
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class PhotoFolder:
    """How one folder of the photo set maps to the ten classes (its README's table)."""
    strict: tuple[str, ...]     # predictions counted right under strict accuracy
    coarse: str | None          # the coarse group (None: outside the ten classes)


UPPER = ("T-shirt/top", "Pullover", "Coat", "Shirt")
FOOTWEAR = ("Sandal", "Sneaker", "Ankle boot")
COARSE_GROUPS = {"Dress": ("Dress",), "Trouser": ("Trouser",), "upper body": UPPER, "footwear": FOOTWEAR}
PHOTO_FOLDERS = {
    "dress": PhotoFolder(("Dress",), "Dress"),
    "pants": PhotoFolder(("Trouser",), "Trouser"),
    "t-shirt": PhotoFolder(("T-shirt/top",), "upper body"),
    "shirt": PhotoFolder(("Shirt",), "upper body"),
    "outwear": PhotoFolder(("Coat",), "upper body"),
    "longsleeve": PhotoFolder(("Pullover", "Shirt", "T-shirt/top"), "upper body"),
    "shoes": PhotoFolder(FOOTWEAR, "footwear"),
    "hat": PhotoFolder((), None),
    "shorts": PhotoFolder((), None),
    "skirt": PhotoFolder((), None),
}


def load_photos(folder: str | Path, split: str, folders: tuple[str, ...] | None = None) -> list[tuple[Path, str]]:
    """(path, folder name) of every photo of `split`, sorted, optionally only `folders`."""
    root = Path(folder) / split
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no such photo split")
    keep = folders or tuple(PHOTO_FOLDERS)
    return [(p, p.parent.name) for p in sorted(root.glob("*/*")) if p.parent.name in keep and p.is_file()]


def load_photo_looks(folder: str | Path, split: str) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """The mapped photos of `split` through the serving preprocessing -> looks (P, 28, 28), their
    right classes (P, C) bool (a folder such as shoes allows several) and their folder names.
    Unreadable files are skipped."""
    from PIL import Image, ImageOps
    looks, allowed, names = [], [], []
    for path, name in load_photos(folder, split, tuple(f for f, m in PHOTO_FOLDERS.items() if m.strict)):
        try:
            with Image.open(path) as img:   # upright as the app shows an upload: its EXIF rotation applied
                looks.append(fashion_look(ImageOps.exif_transpose(img).convert("RGB")))
        except (OSError, ValueError):
            continue
        allowed.append([c in PHOTO_FOLDERS[name].strict for c in CLASS_NAMES])
        names.append(name)
    return torch.from_numpy(np.stack(looks)), torch.tensor(allowed, dtype=torch.bool), names
