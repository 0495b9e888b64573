"""The out-of-distribution proxy the detector's score is chosen on: images of families that are none of
the reported OOD sets (smoothed noise blobs, gratings and checkerboards, smooth shading; validation
images turned into edge maps, patch-shuffled and rotated by 90 degrees). training/fit_ood.py
compares the candidate scores on it; bench/ood_sets.py holds the reported sets, drawn from another
random stream of the same seed (stream 1; the proxy is stream 0), so the images of one do not
depend on the size of the other.
"""
from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from imaging.preprocess import fashion_look


def looks_of(images) -> torch.Tensor:
    return torch.from_numpy(np.stack([fashion_look(img) for img in images]))



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
