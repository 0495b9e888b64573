"""What a segmented region is made of: colour, grain and highlights at the working resolution.

The photo detector (modelrepo/verdict.py) judges a photo by the network's features of its 28x28
look, where a coin, the moon or a page cut from its ground has a garment's silhouette and a flat
inside. What tells them from fabric is at the working resolution (at most preprocess.WORK_SIZE a
side): chroma, the grain of weave and folds, specular highlights. `describe` gives MATERIAL numbers
of the region under the mask, which the photo detector's Gaussians take beside the network's.

    >>> from imaging.material import describe
    >>> describe(seen.work, seen.mask)          # (MATERIAL,) float32, for a segmented photo's Seen
"""
from __future__ import annotations

import cv2
import numpy as np

# The mask is eroded by this many px each way first: the outline's edge against the ground is the
# silhouette's (the look has it), not the material's.
ERODE = 3
# Fewer inside pixels than this after erosion: a thin region, described by its whole mask.
MIN_INSIDE = 50
# CIELAB lightness above this with chroma below HIGHLIGHT_CHROMA is a highlight (metal, glass, gloss);
# below DARK it is near black (a night sky, a shadow). L in [0, 100].
HIGHLIGHT_L, HIGHLIGHT_CHROMA, DARK = 90.0, 8.0, 10.0
# A neighbour counts as brighter than the centre in the binary patterns only by this much lightness:
# below it is sensor noise, which would make a flat surface look grained.
LBP_TOLERANCE = 0.5
# Added to the gradient and Laplacian means before the log: a flat region's grain is 0.
GRAIN_FLOOR = 0.5
# Eight neighbours at radius 1, clockwise from the top left.
NEIGHBOURS = ((-1, -1), (-1, 0), (-1, 1), (0, 1), (1, 1), (1, 0), (1, -1), (0, -1))
LBP_BINS = 10            # uniform patterns by their number of brighter neighbours (0-8), then the rest
MATERIAL = 12 + LBP_BINS - 1   # colour 6, grain 4, highlights and dark 2, patterns less the bin the others fix


def describe(work: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """(MATERIAL,) float32 describing the region `mask` (H, W) bool of `work` ((H, W) or (H, W, 3) in [0, 1]).

    Colour: mean and spread of CIELAB lightness and chroma, mean a and b (all / 100). Grain: log mean
    and 90th percentile of the lightness gradient, log mean |Laplacian| at full and half scale.
    The shares of highlights and of near-black pixels. The histogram of uniform local binary
    patterns of lightness (Ojala, Pietikainen and Maenpaa 2002, IEEE TPAMI 24(7)), its last bin
    left out (the bins sum to one).
    """
    assert work.shape[:2] == mask.shape, f"mask {mask.shape} does not cover the image {work.shape}"
    rgb = work if work.ndim == 3 else np.repeat(work[..., None], 3, axis=2)
    lab = cv2.cvtColor(np.ascontiguousarray(rgb, dtype=np.float32), cv2.COLOR_RGB2LAB)
    light, a, b = lab[..., 0], lab[..., 1], lab[..., 2]
    inside = _inside(mask)
    chroma = np.hypot(a, b)
    li, ci = light[inside], chroma[inside]
    gradient = np.hypot(cv2.Sobel(light, cv2.CV_32F, 1, 0, ksize=3), cv2.Sobel(light, cv2.CV_32F, 0, 1, ksize=3))[inside]
    colour = [li.mean() / 100, li.std() / 100, ci.mean() / 100, ci.std() / 100, a[inside].mean() / 100, b[inside].mean() / 100]
    grain = [np.log(gradient.mean() + GRAIN_FLOOR), np.log(np.percentile(gradient, 90) + GRAIN_FLOOR),
             np.log(_laplacian(light, inside) + GRAIN_FLOOR), np.log(_half_scale_laplacian(light, inside) + GRAIN_FLOOR)]
    shares = [((li > HIGHLIGHT_L) & (ci < HIGHLIGHT_CHROMA)).mean(), (li < DARK).mean()]
    return np.concatenate([colour, grain, shares, _patterns(light, inside)[:-1]]).astype(np.float32)


def _inside(mask: np.ndarray) -> np.ndarray:
    """The eroded mask; the mask itself when erosion leaves too little; everything for an empty mask."""
    inside = cv2.erode(mask.astype(np.uint8), np.ones((2 * ERODE + 1,) * 2, np.uint8)) > 0
    if inside.sum() >= MIN_INSIDE:
        return inside
    return mask.astype(bool) if mask.sum() >= 10 else np.ones(mask.shape, bool)


def _laplacian(light: np.ndarray, inside: np.ndarray) -> float:
    return float(np.abs(cv2.Laplacian(light, cv2.CV_32F, ksize=1))[inside].mean())


def _half_scale_laplacian(light: np.ndarray, inside: np.ndarray) -> float:
    """The Laplacian at half scale: a weave's grain is finer than a stone's or a print's."""
    small = cv2.resize(light, None, fx=0.5, fy=0.5, interpolation=cv2.INTER_AREA)
    small_inside = cv2.resize(inside.astype(np.uint8), small.shape[::-1], interpolation=cv2.INTER_NEAREST) > 0
    return _laplacian(small, small_inside) if small_inside.sum() > 10 else _laplacian(light, inside)


def _patterns(light: np.ndarray, inside: np.ndarray) -> np.ndarray:
    """(LBP_BINS,) shares of the uniform binary patterns (at most two changes around the circle, by
    their number of brighter neighbours) and of the rest, over the inside pixels off the image edge."""
    h, w = light.shape
    centre = light[1:-1, 1:-1]
    bits = np.stack([light[1 + dy:h - 1 + dy, 1 + dx:w - 1 + dx] >= centre + LBP_TOLERANCE for dy, dx in NEIGHBOURS])
    changes = (bits != np.roll(bits, 1, axis=0)).sum(0)
    code = np.where(changes <= 2, bits.sum(0), LBP_BINS - 1)                  # (H-2, W-2)
    counts = np.bincount(code[inside[1:-1, 1:-1]], minlength=LBP_BINS).astype(np.float64)
    return counts / max(counts.sum(), 1.0)
