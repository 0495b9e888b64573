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

from modelrepo.hub import HUB_DATASET, open_split
from model import CLASS_NAMES, INPUT_SIZE
from imaging.preprocess import fashion_look

__all__ = ["HUB_DATASET", "open_split", "load_images", "split_train_val", "PHOTO_FOLDERS", "load_photos",
           "load_photo_looks", "photo_selection_split", "PHOTO_FIT", "PHOTO_SELECTION", "PHOTO_REPORT"]


def load_images(dataset: str | Path, split: str) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
    """One split through the serving preprocessing -> looks (N, 28, 28) in [0, 1], labels (N,), raw uint8.

    `dataset`: a Hub dataset id or a local folder in the same layout (hub.resolve_dataset_dir's)."""
    ds = open_split(dataset, split)
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


# The photo protocol (docs/decision_log.md): every choice is made on SELECTION, a part of the photo
# train split; FIT is the rest of train, what photo training learns from; REPORT (the collection's
# validation split) is read once per shipped model and never chooses anything.
PHOTO_FIT, PHOTO_SELECTION, PHOTO_REPORT = "fit", "selection", "validation"
SELECTION_FRACTION = 0.2
SELECTION_SEED = 30


def _selection_rank(path: Path, seed: int) -> str:
    # A hash of the seed and the file's own name, not its position: the split does not move when
    # files are added, removed or listed in another order.
    return hashlib.sha256(f"{seed}:{path.parent.name}/{path.name}".encode()).hexdigest()


def photo_selection_split(folder: str | Path, fraction: float = SELECTION_FRACTION, seed: int = SELECTION_SEED,
                          folders: tuple[str, ...] | None = None) -> tuple[list[tuple[Path, str]], list[tuple[Path, str]]]:
    """The photo *train* split cut in two -> (fit, selection), each [(path, folder name)], sorted.

    Stratified: in each folder the round(fraction * n) photos with the smallest hash of (seed,
    folder/name) are selection, so each folder keeps its share. Only `<folder>/train` is read: no
    validation photo can land in either part.

    Args:
        folder: the photo set's root (`<root>/train/<folder>/<id>.jpg`).
        fraction: the share of each folder held out for selection, in (0, 1).
        seed: mixed into the hash; another seed is another split.
        folders: only these folders (default: every folder of PHOTO_FOLDERS).
    """
    assert 0 < fraction < 1, f"selection fraction {fraction} is not in (0, 1)"
    by_folder: dict[str, list[Path]] = {}
    for path, name in _list_photos(folder, "train", folders):
        by_folder.setdefault(name, []).append(path)
    fit, selection = [], []
    for name, paths in by_folder.items():
        ranked = sorted(paths, key=lambda p: _selection_rank(p, seed))
        k = round(fraction * len(ranked))
        selection += [(p, name) for p in ranked[:k]]
        fit += [(p, name) for p in ranked[k:]]
    return sorted(fit), sorted(selection)


def _list_photos(folder: str | Path, split: str, folders: tuple[str, ...] | None) -> list[tuple[Path, str]]:
    root = Path(folder) / split
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no such photo split")
    keep = folders or tuple(PHOTO_FOLDERS)
    return [(p, p.parent.name) for p in sorted(root.glob("*/*")) if p.parent.name in keep and p.is_file()]


def load_photos(folder: str | Path, split: str, folders: tuple[str, ...] | None = None) -> list[tuple[Path, str]]:
    """(path, folder name) of every photo of `split`, sorted, optionally only `folders`.

    `split`: a folder of the photo set ("train", "validation") or a part of train carved by
    photo_selection_split (PHOTO_FIT, PHOTO_SELECTION)."""
    if split in (PHOTO_FIT, PHOTO_SELECTION):
        fit, selection = photo_selection_split(folder, folders=folders)
        return fit if split == PHOTO_FIT else selection
    return _list_photos(folder, split, folders)


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
    if not looks:   # a small set's selection part can be empty
        return torch.zeros(0, INPUT_SIZE, INPUT_SIZE), torch.zeros(0, len(CLASS_NAMES), dtype=torch.bool), names
    return torch.from_numpy(np.stack(looks)), torch.tensor(allowed, dtype=torch.bool), names
