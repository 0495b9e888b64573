"""The images the OOD benches score: the validation proxy for choosing a score, and the reported
out-of-distribution sets (MNIST, noise, constant images, gradients, visitor-style sketches, photos
of garments outside the ten classes) and the in-class validation photos.

The proxy and the reported sets draw from two numpy Generators of one seed (streams 0 and 1), so
the images of one do not depend on the size of the other. The proxy is returned as looks, the
reported sets as images for the serving path (uint8 arrays or PIL images).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageOps

from modelrepo import ood
from training.data import PHOTO_FOLDERS
from imaging.preprocess import fashion_look, look_and_mask

# The photo folders with a class, and the predictions counted right for them; the mapping has one
# home, data.PHOTO_FOLDERS.
PHOTO_CLASSES = {f: m.strict for f, m in PHOTO_FOLDERS.items() if m.strict}
PHOTO_OUTSIDE = tuple(f for f, m in PHOTO_FOLDERS.items() if not m.strict)
PER_FAMILY = 1000   # images per proxy family and per synthetic set, unless a script is told otherwise


def looks_of(images) -> torch.Tensor:
    return torch.from_numpy(np.stack([fashion_look(img) for img in images]))


def served_scores(model, detectors: dict, images) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
    """Each image as the app serves it: its look (`preprocess.look_and_mask`), then the views of the
    network the app gives it (a segmented photo: `model.for_photos()`, the photo BatchNorm).
    Returns (normalised input (N, 1, 28, 28), served probabilities (N, C), {score name: scores (N,)})."""
    seen = [look_and_mask(img) for img in images]
    x = ood.as_input(model, torch.from_numpy(np.stack([s.look for s in seen])))
    photo = torch.tensor([s.photo for s in seen])
    probs = torch.empty(len(x), model.config.num_classes)
    scores = {n: torch.empty(len(x)) for n in detectors}
    for flag, network in ((False, model), (True, model.for_photos())):
        idx = (photo == flag).nonzero()[:, 0]
        if len(idx):
            views = ood.views_in_batches(network, x[idx])
            probs[idx] = network.served_proba(views)
            for n, d in detectors.items():
                scores[n][idx] = d.score_views(network, views, x[idx])
    return x, probs, scores


def proxy_families(raw_val: np.ndarray, n: int, seed: int) -> dict[str, torch.Tensor]:
    """The validation OOD proxy: looks (n, 28, 28) per family, none of them an evaluation set."""
    rng = np.random.default_rng([seed, 0])
    picks = raw_val[rng.permutation(len(raw_val))[:n]]
    return {"smoothed noise blobs": looks_of(smooth_noise(n, rng)),
            "gratings / checkerboards": looks_of(gratings(n, rng)),
            "FMNIST val edge maps": looks_of(edge_maps(picks)),
            "FMNIST val patch-shuffled": looks_of(patch_shuffled(picks, rng)),
            "FMNIST val rotated 90": looks_of([np.rot90(a).copy() for a in picks]),
            "smooth shading": looks_of(smooth_shading(n, rng))}


def smooth_noise(n: int, rng: np.random.Generator) -> list[np.ndarray]:
    from PIL import ImageFilter
    out = []
    for _ in range(n):
        img = Image.fromarray((rng.random((56, 56)) * 255).astype(np.uint8))
        a = np.asarray(img.filter(ImageFilter.GaussianBlur(rng.uniform(1.5, 5))), dtype=np.float64)
        out.append((a - a.min()) / max(a.max() - a.min(), 1e-6))
    return out


def gratings(n: int, rng: np.random.Generator) -> list[np.ndarray]:
    yy, xx = np.mgrid[0:28, 0:28]
    out = []
    for i in range(n):
        if i % 2:
            s = rng.integers(2, 8)
            out.append(((yy // s + xx // s) % 2).astype(np.float64))
        else:
            f, th = rng.uniform(0.05, 0.35), rng.uniform(0, np.pi)
            out.append(0.5 + 0.5 * np.sin(2 * np.pi * f * (xx * np.cos(th) + yy * np.sin(th)) + rng.uniform(0, 2 * np.pi)))
    return out


def smooth_shading(n: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Blank surfaces under uneven light: a bicubic surface through a random 2x2 to 4x4 grid of grey
    levels, random contrast, 8-bit, 28 to 160 px a side (both preprocessing paths: the small ones
    are thresholded, the large ones segmented).

    Smooth like the gradients evaluation set, but not made like it (no linear or radial ramps, other
    sizes, another random stream), so that choosing a score on it is not choosing on that set.
    """
    out = []
    for _ in range(n):
        k = int(rng.integers(2, 5))
        w, h = (int(v) for v in rng.integers(28, 161, 2))
        grid = rng.uniform(0, 1, (k, k)).astype(np.float32)
        a = np.asarray(Image.fromarray(grid, mode="F").resize((w, h), Image.Resampling.BICUBIC), dtype=np.float64)
        a = (a - a.min()) / max(a.max() - a.min(), 1e-6)
        lo, hi = np.sort(rng.uniform(0, 1, 2))
        out.append(((lo + (hi - lo) * a) * 255).round().astype(np.uint8))
    return out


def edge_maps(raw: np.ndarray) -> list[np.ndarray]:
    """Gradient magnitude of each garment: its outline, a line drawing made from in-distribution images."""
    out = []
    for a in raw.astype(np.float64) / 255:
        e = np.hypot(*np.gradient(a))
        out.append(e / max(e.max(), 1e-6))
    return out


def patch_shuffled(raw: np.ndarray, rng: np.random.Generator) -> list[np.ndarray]:
    """The 16 7x7 patches of each image in a random order: garment texture, no garment shape."""
    out = []
    for a in raw:
        patches = a.reshape(4, 7, 4, 7).transpose(0, 2, 1, 3).reshape(16, 7, 7)[rng.permutation(16)]
        out.append(patches.reshape(4, 4, 7, 7).transpose(0, 2, 1, 3).reshape(28, 28))
    return out


def uniform_noise(n: int, rng: np.random.Generator) -> list[np.ndarray]:
    return [rng.integers(0, 256, (28, 28), dtype=np.uint8) for _ in range(n)]


def constants(n: int) -> list[np.ndarray]:
    """Every grey level from black to white, n of them, each a 28x28 image of one value."""
    return [np.full((28, 28), v, dtype=np.uint8) for v in np.linspace(0, 255, n).round().astype(np.uint8)]


def gradients(n: int, rng: np.random.Generator, size: int = 28) -> list[np.ndarray]:
    """Linear ramps (random direction and range) and radial ones (random centre), half each, size x size."""
    yy, xx = np.mgrid[0:size, 0:size] / (size - 1)
    out = []
    for i in range(n):
        if i % 2:
            th = rng.uniform(0, 2 * np.pi)
            t = xx * np.cos(th) + yy * np.sin(th)
        else:
            cy, cx = rng.uniform(0, 1, 2)
            t = np.hypot(yy - cy, xx - cx)
        t = (t - t.min()) / max(t.max() - t.min(), 1e-6)
        lo, hi = np.sort(rng.uniform(0, 1, 2))
        out.append(((lo + (hi - lo) * t) * 255).round().astype(np.uint8))
    return out


# Hand-drawn digits as polylines in a unit box (x right, y down): the strokes a visitor draws.
DIGIT_STROKES = {
    0: [[(0.5, 0.05), (0.2, 0.2), (0.15, 0.5), (0.2, 0.8), (0.5, 0.95), (0.8, 0.8), (0.85, 0.5), (0.8, 0.2), (0.5, 0.05)]],
    1: [[(0.35, 0.2), (0.55, 0.05), (0.55, 0.95)]],
    2: [[(0.2, 0.25), (0.4, 0.07), (0.7, 0.08), (0.8, 0.3), (0.2, 0.92), (0.85, 0.92)]],
    3: [[(0.2, 0.12), (0.7, 0.08), (0.75, 0.35), (0.4, 0.48), (0.8, 0.65), (0.7, 0.92), (0.2, 0.88)]],
    4: [[(0.65, 0.95), (0.65, 0.05), (0.15, 0.65), (0.85, 0.65)]],
    5: [[(0.8, 0.07), (0.25, 0.07), (0.2, 0.45), (0.65, 0.42), (0.8, 0.7), (0.6, 0.93), (0.2, 0.88)]],
    6: [[(0.7, 0.07), (0.3, 0.35), (0.2, 0.75), (0.45, 0.95), (0.75, 0.8), (0.7, 0.55), (0.3, 0.55)]],
    7: [[(0.15, 0.08), (0.85, 0.08), (0.4, 0.95)]],
    8: [[(0.5, 0.5), (0.25, 0.3), (0.5, 0.05), (0.75, 0.3), (0.5, 0.5), (0.2, 0.75), (0.5, 0.95), (0.8, 0.75), (0.5, 0.5)]],
    9: [[(0.75, 0.45), (0.45, 0.55), (0.25, 0.3), (0.5, 0.07), (0.75, 0.3), (0.7, 0.95)]],
}


def sketches(n_each: int, rng: np.random.Generator) -> dict[str, list[Image.Image]]:
    """Visitor-style drawings: dark strokes on a white 280x280 canvas (as the app's sketch pad)."""
    return {"digits": [draw(_digit(i % 10, rng), rng) for i in range(n_each)],
            "circles": [draw([_circle(rng)], rng) for _ in range(n_each)],
            "scribbles": [draw([_scribble(rng)], rng) for _ in range(n_each)]}


def draw(strokes: list[list[tuple[float, float]]], rng: np.random.Generator) -> Image.Image:
    img = Image.new("L", (280, 280), 255)
    pen = ImageDraw.Draw(img)
    width = int(rng.integers(8, 25))
    for stroke in strokes:
        pen.line([(float(x), float(y)) for x, y in stroke], fill=0, width=width, joint="curve")
    return img


def _place(points: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Unit-box points -> canvas pixels: random size and position, a small random tilt and wobble."""
    size, th = rng.uniform(120, 240), rng.uniform(-0.25, 0.25)
    rot = np.array([[np.cos(th), -np.sin(th)], [np.sin(th), np.cos(th)]])
    p = (points - 0.5) @ rot.T * size + rng.normal(0, 0.02 * size, points.shape)
    return p + rng.uniform(140 - (280 - size) / 2 * 0.8, 140 + (280 - size) / 2 * 0.8, 2)


def _digit(d: int, rng: np.random.Generator) -> list[np.ndarray]:
    aspect = np.array([rng.uniform(0.5, 0.8), 1.0])       # digits are taller than wide
    return [_place((np.array(s) - 0.5) * aspect + 0.5, rng) for s in DIGIT_STROKES[d]]


def _circle(rng: np.random.Generator) -> np.ndarray:
    t = np.linspace(0, 2 * np.pi, 40) + rng.uniform(0, 2 * np.pi)
    rx, ry = rng.uniform(0.3, 0.5, 2)
    return _place(np.stack([0.5 + rx * np.cos(t), 0.5 + ry * np.sin(t)], 1), rng)


def _scribble(rng: np.random.Generator) -> np.ndarray:
    walk = np.cumsum(rng.normal(0, 1, (int(rng.integers(5, 16)), 2)), 0)
    return _place((walk - walk.min(0)) / np.maximum(walk.max(0) - walk.min(0), 1e-6), rng)   # fills the box


# ---------------------------------------------------------------------------------------------
# The reported sets
# ---------------------------------------------------------------------------------------------

def evaluation_sets(mnist: str | Path, photos_root: str | Path, per_family: int, seed: int) -> dict[str, list]:
    """The reported OOD sets by name, as images for the serving path (uint8 arrays or PIL images).

    Args:
        mnist: the MNIST dataset folder (its test split is read).
        photos_root: the clothing photo set (<split>/<folder>/*.jpg); its train split's folders
            outside the ten classes (hats, shorts, skirts) are one set.
        per_family: images per synthetic set (constant images: at most 256, one per grey level;
            sketches: a tenth of it per kind).
        seed: the generator is stream 1 of this seed (the proxy is stream 0).
    """
    from datasets import load_dataset
    rng = np.random.default_rng([seed, 1])
    sets = {"MNIST test digits": [np.asarray(im.convert("L")) for im in load_dataset(str(mnist), split="test")["image"]],
            "uniform noise": uniform_noise(per_family, rng),
            "constant images": constants(min(per_family, 256)),
            "gradients": gradients(per_family, rng),
            # Large enough for the segmentation path, which small images skip.
            "gradients, 256 px": gradients(per_family, rng, size=256)}
    sets |= {f"sketches: {k}": v for k, v in sketches(per_family // 10, rng).items()}
    sets["photos: hat/shorts/skirt (train split)"] = [img for img, _ in photos(photos_root, "train", PHOTO_OUTSIDE)]
    return sets


def photos(root: str | Path, split: str, folders) -> list[tuple[Image.Image, str]]:
    """(RGB image with its EXIF rotation applied, folder name) for every JPEG of `folders` in `split`."""
    out = []
    for folder in folders:
        for path in sorted((Path(root) / split / folder).glob("*.jpg")):
            with Image.open(path) as img:
                out.append((ImageOps.exif_transpose(img).convert("RGB"), folder))
    return out
