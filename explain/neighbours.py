"""Nearest training images: which Fashion-MNIST training images the network thinks an input is like.

The space is the one the OOD detector reads (`modelrepo.ood.features`: the penultimate vector, the
pooled last stage the classifier's Linear reads, averaged over the served views), with cosine
distance: the Linear reads directions, and normalising removes the brightness-driven length of the
vector (bench/neighbours.py compares it with Euclidean distance on a selection split). The index
(a class-balanced, seeded subset of the training split: its features in float16, labels, the 28x28
looks as uint8 so the app can show them without the dataset) is built once per weights and shipped
beside them as `neighbours.safetensors` + `neighbours.json`; the json records the sha256 of the
weights, and an index of other weights is refused on load. Search is exact (one matrix product:
bench/results/neighbours.md measures it).

    python -m explain.neighbours build --model weights --dataset ../shared/data/fashion_mnist

    >>> index = NeighbourIndex.load("weights", model)
    >>> found = index.search(index.embed(model, x), k=6)      # x (B, 1, 28, 28) normalised
    >>> found.labels, found.distances, found.looks            # (B, k), (B, k), (B, k, 28, 28) uint8
"""
from __future__ import annotations

import argparse
import json
import math
import stat
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from model import WEIGHTS_FILE, FashionCNN, load_model
from modelrepo.artefacts import NEIGHBOUR_FILES
from modelrepo.ood import as_input, features, file_sha256

INDEX_FILE, META_FILE = NEIGHBOUR_FILES
FORMAT_VERSION = 1
DEFAULT_K = 6
PER_CLASS = 1500          # training images kept per class: 15,000 images, about 17.6 MB with their looks
MAX_INDEX_BYTES = 20 * 2**20   # the weights folder's budget for the index (issue 28)
MAX_META_BYTES = 64 * 1024
MAX_K = 100
TENSORS = {"features": torch.float16, "labels": torch.uint8, "looks": torch.uint8, "source_index": torch.int32}


class NeighbourIndexError(ValueError):
    """The index files are missing, damaged, too large or belong to other weights; the message says which."""


@dataclass
class Found:
    """The k nearest index entries of each query, nearest first."""
    distances: torch.Tensor     # (B, k) cosine distances in [0, 2]
    positions: torch.Tensor     # (B, k) rows of the index
    labels: torch.Tensor        # (B, k) class ids
    looks: torch.Tensor         # (B, k, 28, 28) uint8
    source_index: torch.Tensor  # (B, k) indices into the training split the index was built from


def embed(model: FashionCNN, x: torch.Tensor) -> torch.Tensor:
    """Unit-length features (B, D) of a normalised batch (B, 1, 28, 28): the space the index searches."""
    return F.normalize(features(model, x).float(), dim=1)


@dataclass
class NeighbourIndex:
    features: torch.Tensor       # (N, D) float32, unit length (stored as float16)
    labels: torch.Tensor         # (N,) long
    looks: torch.Tensor          # (N, 28, 28) uint8
    source_index: torch.Tensor   # (N,) long
    label_names: tuple[str, ...]

    embed = staticmethod(embed)

    def __len__(self) -> int:
        return len(self.labels)

    @torch.no_grad()
    def search(self, queries: torch.Tensor, k: int = DEFAULT_K) -> Found:
        """The k nearest entries to unit-length queries (B, D), by cosine distance 1 - cos."""
        return self.lookup(queries, k)[0]

    @torch.no_grad()
    def class_distances(self, queries: torch.Tensor) -> torch.Tensor:
        """The distance (B, C) from each query to its nearest index entry of each class."""
        return self._per_class(1 - queries.float() @ self.features.T)

    @torch.no_grad()
    def lookup(self, queries: torch.Tensor, k: int = DEFAULT_K) -> tuple[Found, torch.Tensor]:
        """`search` and `class_distances` together, from one product of the queries with the index."""
        if not isinstance(k, int) or isinstance(k, bool) or not 1 <= k <= min(MAX_K, len(self)):
            raise ValueError(f"k must be an integer in 1..{min(MAX_K, len(self))}, got {str(k)[:20]}")
        distance = 1 - queries.float() @ self.features.T                   # (B, N)
        nearest, positions = distance.topk(k, dim=1, largest=False)        # sorted, nearest first
        found = Found(nearest.clamp(0, 2), positions, self.labels[positions], self.looks[positions],
                      self.source_index[positions])
        return found, self._per_class(distance)

    def _per_class(self, distance: torch.Tensor) -> torch.Tensor:
        out = torch.full((len(distance), len(self.label_names)), math.inf)    # (B, C)
        return out.scatter_reduce(1, self.labels.expand(len(distance), -1), distance, "amin")

    def save(self, folder: str | Path, weights: str | Path | None = None) -> None:
        """Write neighbours.safetensors and neighbours.json (shapes, label names, the weights' sha256)."""
        from safetensors.torch import save_file
        folder = Path(folder)
        weights = Path(weights) if weights else folder / WEIGHTS_FILE
        folder.mkdir(parents=True, exist_ok=True)
        tensors = {"features": self.features.half(), "labels": self.labels.to(torch.uint8),
                   "looks": self.looks.to(torch.uint8), "source_index": self.source_index.to(torch.int32)}
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(folder / INDEX_FILE))
        meta = {"format_version": FORMAT_VERSION, "metric": "cosine", "space": "penultimate, view-averaged",
                "label_names": list(self.label_names), "per_class": torch.bincount(self.labels).tolist(),
                "shapes": {k: list(v.shape) for k, v in tensors.items()},
                "weights_sha256": file_sha256(weights) if weights.is_file() else None}
        (folder / META_FILE).write_text(json.dumps(meta, indent=1) + "\n")

    @classmethod
    def load(cls, folder: str | Path, model: FashionCNN | None = None) -> "NeighbourIndex":
        """Read an index written by `save`: bounded, no pickle, shapes and values checked; with `model`,
        also that it fits that model's features and classes.

        Raises:
            NeighbourIndexError: missing, oversized or damaged files, or an index of other weights.
        """
        folder = Path(folder)
        meta = _read_meta(folder / META_FILE)
        tensors = _read_tensors(folder / INDEX_FILE, meta)
        recorded, weights = meta.get("weights_sha256"), folder / WEIGHTS_FILE
        if recorded and weights.is_file() and file_sha256(weights) != recorded:
            raise NeighbourIndexError(f"{folder / META_FILE}: built for other weights than {weights} (sha256 differs): "
                              "rebuild it with python -m explain.neighbours build")
        index = cls(F.normalize(tensors["features"].float(), dim=1), tensors["labels"].long(),
                    tensors["looks"].clone(), tensors["source_index"].long(), tuple(meta["label_names"]))
        if model is not None:
            d, names = model.head[-1].in_features, tuple(model.label_names)
            if index.features.shape[1] != d or index.label_names != names:
                raise NeighbourIndexError(f"{folder / INDEX_FILE}: {index.features.shape[1]} features and classes "
                                  f"{list(index.label_names)[:3]}... do not fit this model ({d} features)")
        return index


def _bounded_file(path: Path, limit: int) -> None:
    try:
        info = path.stat()
    except FileNotFoundError:
        raise NeighbourIndexError(f"{path}: missing (python -m explain.neighbours build writes it)") from None
    if not stat.S_ISREG(info.st_mode):
        raise NeighbourIndexError(f"{path}: not a regular file")
    if info.st_size > limit:
        raise NeighbourIndexError(f"{path}: {info.st_size:,} bytes, more than the {limit:,} allowed")


def _read_meta(path: Path) -> dict:
    _bounded_file(path, MAX_META_BYTES)
    try:
        meta = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise NeighbourIndexError(f"{path}: not readable JSON ({e})") from None
    if not isinstance(meta, dict) or meta.get("format_version") != FORMAT_VERSION:
        raise NeighbourIndexError(f"{path}: not a format_version {FORMAT_VERSION} index description")
    names, shapes = meta.get("label_names"), meta.get("shapes")
    if not (isinstance(names, list) and 2 <= len(names) <= 255 and all(isinstance(s, str) for s in names)):
        raise NeighbourIndexError(f"{path}: label_names must be 2..255 strings")
    if not isinstance(shapes, dict) or set(shapes) != set(TENSORS):
        raise NeighbourIndexError(f"{path}: shapes must list {sorted(TENSORS)}")
    return meta


def _read_tensors(path: Path, meta: dict) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file
    _bounded_file(path, MAX_INDEX_BYTES)
    try:
        tensors = load_file(str(path))
    except Exception as e:  # safetensors raises several types for truncated or garbled files
        raise NeighbourIndexError(f"{path}: not a readable safetensors file ({e})"[:400]) from None
    if set(tensors) != set(TENSORS):
        raise NeighbourIndexError(f"{path}: expected tensors {sorted(TENSORS)}, found {sorted(tensors)[:6]}")
    for name, dtype in TENSORS.items():
        if tensors[name].dtype != dtype or list(tensors[name].shape) != meta["shapes"][name]:
            raise NeighbourIndexError(f"{path}: {name} is {tensors[name].dtype} {list(tensors[name].shape)}, "
                              f"expected {dtype} {meta['shapes'][name]}")
    n = len(tensors["labels"])
    f, looks = tensors["features"], tensors["looks"]
    if n < 1 or f.ndim != 2 or len(f) != n or list(looks.shape[1:]) != [28, 28] or len(looks) != n:
        raise NeighbourIndexError(f"{path}: features {list(f.shape)}, looks {list(looks.shape)} for {n} labels")
    if not torch.isfinite(f.float()).all() or (f.float().norm(dim=1) < 0.5).any():
        raise NeighbourIndexError(f"{path}: features are not finite unit vectors")
    if int(tensors["labels"].max()) >= len(meta["label_names"]):
        raise NeighbourIndexError(f"{path}: a label beyond the {len(meta['label_names'])} classes")
    return tensors


# ---------------------------------------------------------------------------------------------
# Building
# ---------------------------------------------------------------------------------------------

def balanced_subset(labels: torch.Tensor, per_class: int, seed: int = 0) -> torch.Tensor:
    """Sorted positions of a seeded random `per_class` images of each class (all of a smaller class)."""
    g = torch.Generator().manual_seed(seed)
    chosen = []
    for c in labels.unique().tolist():
        rows = torch.nonzero(labels == c).flatten()
        chosen.append(rows[torch.randperm(len(rows), generator=g)[:per_class]])
    return torch.cat(chosen).sort().values


@torch.no_grad()
def embed_looks(model: FashionCNN, looks: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
    """`embed` of looks (N, 28, 28) in [0, 1], in batches: (N, D)."""
    x = as_input(model, looks)
    return torch.cat([embed(model, x[i:i + batch_size]) for i in range(0, len(x), batch_size)])


def build_index(model: FashionCNN, looks: torch.Tensor, labels: torch.Tensor, per_class: int = PER_CLASS,
                seed: int = 0) -> NeighbourIndex:
    """The index of a class-balanced subset of training looks (N, 28, 28) in [0, 1] with labels (N,).

    train.py calls this after training with the looks it trained on, then `index.save(out_dir)`.
    """
    rows = balanced_subset(labels, per_class, seed)
    model = model.eval()
    feats = embed_looks(model, looks[rows])
    looks_u8 = (looks[rows].float().clamp(0, 1) * 255).round().to(torch.uint8)
    return NeighbourIndex(feats.half().float(), labels[rows].long(), looks_u8, rows.long(), tuple(model.label_names))


def load_split(dataset: str | Path, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Looks (N, 28, 28) in [0, 1] and labels (N,) of a Fashion-MNIST split (a local folder in the Hub
    layout or a Hub id), through imaging's `fashion_look` as served."""
    from imaging.preprocess import fashion_look
    from modelrepo.hub import open_split
    ds = open_split(dataset, split)
    looks = np.stack([fashion_look(np.asarray(img.convert("L"), dtype=np.uint8)) for img in ds["image"]])
    return torch.from_numpy(looks), torch.tensor(ds["label"], dtype=torch.long)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    build = sub.add_parser("build", help="build the index of a model folder from the training split",
                           formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    build.add_argument("--model", default="weights", help="model folder; the index is written into it")
    build.add_argument("--dataset", default="../shared/data/fashion_mnist", help="Fashion-MNIST folder or Hub id")
    build.add_argument("--per-class", type=int, default=PER_CLASS, help="training images kept per class")
    build.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    model = load_model(args.model)
    looks, labels = load_split(args.dataset, "train")
    index = build_index(model, looks, labels, args.per_class, args.seed)
    index.save(args.model)
    size = (Path(args.model) / INDEX_FILE).stat().st_size
    print(f"wrote {Path(args.model) / INDEX_FILE}: {len(index):,} images, {size / 2**20:.1f} MiB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
