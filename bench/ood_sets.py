"""The images the OOD benches score: the reported out-of-distribution sets (MNIST, noise, constant
images, gradients, visitor-style sketches, photos of garments outside the ten classes) and the
in-class validation photos, as images for the serving path (uint8 arrays or PIL images).

They draw from stream 1 of the seed; the proxy the detector's score is chosen on
(training/ood_proxy.py) draws from stream 0, so the images of one do not depend on the size of
the other.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageOps

from modelrepo import ood
from training.data import PHOTO_FOLDERS
from imaging.preprocess import look_and_mask
from training.config import OODConfig

# The photo folders with a class, and the predictions counted right for them; the mapping has one
# home, data.PHOTO_FOLDERS.
PHOTO_CLASSES = {f: m.strict for f, m in PHOTO_FOLDERS.items() if m.strict}
PHOTO_OUTSIDE = tuple(f for f, m in PHOTO_FOLDERS.items() if not m.strict)
PER_FAMILY = OODConfig.proxy_size   # images per synthetic set: as many as per proxy family


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
    from training.data import open_split
    rng = np.random.default_rng([seed, 1])
    sets = {"MNIST test digits": [np.asarray(im.convert("L")) for im in open_split(mnist, "test")["image"]],
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
