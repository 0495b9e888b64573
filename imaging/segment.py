"""Garment segmentation: a real photo of one garment -> the Fashion-MNIST look, and the mask kept.

This module owns the path from an RGB photo of a garment on any ground (carpet, bed, floor, a
hanger on a door, a white or tinted product backdrop) to the 28x28 light-garment-on-black image
the network was trained on, plus the mask of the pixels it kept (the dashboard draws its outline).
It does not own images that are already light on black (every Fashion-MNIST image): for those
`needs_segmentation` is False and the caller keeps its grey-level threshold path.

    >>> look, mask = photo_look(rgb)     # rgb (H, W, 3) float in [0, 1], longest side <= 256
    >>> look.shape, mask.shape           # ((28, 28), (H, W))

Method (each choice measured on the clothing-photo train split and on synthetic product uploads;
bench/photos.py, bench/product_uploads.py, figures in bench/results/):

1. Cut: GrabCut (Rother, Kolmogorov & Blake 2004, "GrabCut: interactive foreground extraction
   using iterated graph cuts", ACM SIGGRAPH; OpenCV's `cv2.grabCut`) on the photo shrunk to
   `WORK_SIDE` px. A photo frames its garment, so a thin band along the border is sure
   background; inside it, pixels near the border's median colour start as probable background
   and the rest as probable foreground. GrabCut fits a Gaussian mixture of colours to each and
   cuts with the contrast-sensitive smoothness term of Boykov & Jolly 2001 ("Interactive graph
   cuts for optimal boundary & region segmentation", ICCV), which separates textured, coloured
   and unevenly lit grounds that a threshold on grey levels cannot.
2. Clean-up: a morphological opening (hanger hooks, threads, speckle), the largest connected
   component (a second object at the edge, a shadow cut off from the garment), holes filled (a
   print or a light patch inside the garment is garment).
3. Backdrop peel: a kept region that fills its box like a rectangle and lies inside the frame is
   a backdrop (a product shot's tinted card, a rug), not a garment; the garment is cut again
   from inside it, with the rectangle's own edge as the background.
4. Look, made as Fashion-MNIST was made from product photos (Xiao, Rasul & Vollgraf 2017,
   "Fashion-MNIST", arXiv:1708.07747, section 2: trim, resize the longest edge to 28, centre,
   negate): 1 - luminance (ITU-R BT.601 luma, as PIL's "L") inside the mask, exactly 0 outside;
   cropped to the mask's box, area-resized, centred. Contrast stretches, gamma and a plain
   silhouette scored lower (bench/photos.py --mappings).
"""
from __future__ import annotations

import cv2
import numpy as np

# GrabCut works on an image this many pixels a side: enough for a garment's outline, small
# enough to cut well inside the serving budget on one core (bench/results/photos.md).
WORK_SIDE = 128
# The sure-background band, as a fraction of the longest side: thin, because garments in phone
# photos often run off the frame and whatever lies in the band is lost to the mask.
BORDER_BAND = 0.02
# GrabCut's rounds of re-fitting the colour models and re-cutting; more did not change accuracy.
GRABCUT_ITERATIONS = 2
# Pixels this close to the border's median colour (CIELAB, uint8 units) start as probable
# background rather than probable foreground: the colour models then begin nearer the answer,
# which matters most on plain product backdrops where the garment is a small part of the frame.
SEED_BG_DISTANCE = 20.0
MIN_SEED_PIXELS = 16           # fewer probable-foreground pixels than this: nothing to cut
OPEN_RADIUS = 1                # px at WORK_SIDE: removes strokes up to ~2 px wide (hanger wire)
# A second component at least this share of the largest one's area is kept too (a pair of shoes
# seen from above, two halves of a garment split by a shadow); None: the largest component only.
PAIR_SHARE: float | None = None
MIN_MASK_SHARE = 0.01          # a cut smaller than this is no garment: fall back to colour distance
FALLBACK_DISTANCE = 12.0       # the fallback's CIELAB distance from the border's median colour
RECTANGLE_FILL = 0.9           # a kept region filling its box this much is a backdrop, not a garment
PEEL_MAX_SHARE = 0.9           # the garment cut from inside a backdrop must leave some of it out
# Light-on-black test: a Fashion-MNIST garment touches at most the four edges of its box and never
# covers the whole border, so a good share of its border is black; phone photos' grounds, and
# product photos' white, are not.
DARK_LEVEL, DARK_BORDER_SHARE = 0.05, 0.2
LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)   # ITU-R BT.601, as PIL's "L"


def needs_segmentation(rgb: np.ndarray) -> bool:
    """False for an image that is already light on black (it keeps the threshold path), else True.

    `rgb` is (H, W, 3) or (H, W) in [0, 1] (uint8 is scaled). True for photos on any ground and
    for product photos on white or tinted backdrops.
    """
    border = _border_pixels(_luminance(_as_float(rgb)))
    return float(np.mean(border < DARK_LEVEL)) < DARK_BORDER_SHARE


def photo_look(rgb: np.ndarray, size: int = 28) -> tuple[np.ndarray, np.ndarray]:
    """A photo of one garment -> (look, mask).

    Args:
        rgb: (H, W, 3) float array in [0, 1] (uint8 is scaled; (H, W) gray is accepted), longest
            side at most ~256 px.
        size: side of the square look.
    Returns:
        look: (size, size) float32 in [0, 1], the garment light on an exactly-0 background,
            centred, its longest edge `size` px, aspect kept.
        mask: (H, W) bool, the pixels kept as garment.
    """
    rgb = _as_float(rgb)
    if rgb.ndim == 2:
        rgb = np.repeat(rgb[..., None], 3, axis=2)             # grayscale: GrabCut takes three channels
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"expected an (H, W, 3) RGB or (H, W) gray array, got shape {rgb.shape}")
    mask = garment_mask(rgb)
    return look_from_mask(_luminance(rgb), mask, size), mask


def garment_mask(rgb: np.ndarray) -> np.ndarray:
    """(H, W, 3) float RGB in [0, 1] -> (H, W) bool mask of the garment (may be empty).

    A product photo's tinted backdrop or a rug under the garment differs from the frame's border
    as much as the garment does, so the first cut keeps it whole: a near-rectangle inside the
    frame. Then the garment is cut again from inside that rectangle, whose own edge is the
    background there.
    """
    mask = _cut(rgb)
    box = _backdrop_box(mask)
    if box is not None:
        # A one-pixel band: a product shot's garment may come within a few pixels of its card's edge.
        inner = _cut(rgb[box], band_share=0.0)
        if MIN_MASK_SHARE <= inner.mean() <= PEEL_MAX_SHARE:
            mask = np.zeros_like(mask)
            mask[box] = inner
    return mask


def _cut(rgb: np.ndarray, band_share: float = BORDER_BAND) -> np.ndarray:
    """GrabCut at WORK_SIDE, cleaned, back at the input's size (colour distance if the cut is empty)."""
    h, w = rgb.shape[:2]
    small = _shrink_uint8(rgb, WORK_SIDE)
    cut = _clean(_grabcut(small, band_share)) if min(small.shape[:2]) >= 8 else np.zeros(small.shape[:2], bool)
    if cut.mean() < MIN_MASK_SHARE:
        cut = _clean(_colour_distance_mask(small))
    if (h, w) == cut.shape:
        return cut
    # Linear interpolation then a 0.5 threshold: a smooth outline at full size, not blocks.
    return cv2.resize(cut.astype(np.float32), (w, h), interpolation=cv2.INTER_LINEAR) > 0.5


def _backdrop_box(mask: np.ndarray) -> tuple[slice, slice] | None:
    """The box of a mask that fills it like a rectangle and lies inside the frame, else None.

    A garment fills its box by well under RECTANGLE_FILL (sleeves, legs, a neckline); one that
    runs off the frame touches the border, so neither is taken for a backdrop.
    """
    if not mask.any():
        return None
    ys, xs = np.nonzero(mask)
    top, bottom, left, right = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    h, w = mask.shape
    margin = max(2, round(BORDER_BAND * max(h, w))) + 1
    inside = top >= margin and left >= margin and bottom <= h - margin and right <= w - margin
    fill = len(ys) / ((bottom - top) * (right - left))
    if not inside or fill < RECTANGLE_FILL or min(bottom - top, right - left) < 16:
        return None
    # One pixel in from the rectangle's edge: its blurred outline is neither backdrop nor garment.
    return slice(top + 1, bottom - 1), slice(left + 1, right - 1)


def look_from_mask(luminance: np.ndarray, mask: np.ndarray, size: int = 28) -> np.ndarray:
    """1 - luminance inside the mask, 0 outside; cropped to the mask's box, fitted, centred."""
    out = np.zeros((size, size), dtype=np.float32)
    if not mask.any():
        return out
    ys, xs = np.nonzero(mask)
    box = (slice(ys.min(), ys.max() + 1), slice(xs.min(), xs.max() + 1))
    crop = np.where(mask[box], 1.0 - luminance[box], 0.0).astype(np.float32)
    h, w = crop.shape
    scale = size / max(h, w)
    nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
    # Area averaging when shrinking: the mask's edge becomes the soft edge Fashion-MNIST has.
    crop = cv2.resize(crop, (nw, nh), interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
    top, left = (size - nh) // 2, (size - nw) // 2
    out[top:top + nh, left:left + nw] = np.clip(crop, 0.0, 1.0)
    return out


def _grabcut(small: np.ndarray, band_share: float) -> np.ndarray:
    """uint8 RGB (h, w, 3) -> bool foreground: border band sure background, the rest probable foreground."""
    h, w = small.shape[:2]
    band = max(1, round(band_share * max(h, w)))
    labels = np.full((h, w), cv2.GC_PR_FGD, dtype=np.uint8)
    labels[_colour_distance(small) < SEED_BG_DISTANCE] = cv2.GC_PR_BGD
    labels[:band], labels[-band:], labels[:, :band], labels[:, -band:] = (cv2.GC_BGD,) * 4
    if np.count_nonzero(labels == cv2.GC_PR_FGD) < MIN_SEED_PIXELS:
        return np.zeros((h, w), bool)                          # nothing unlike the ground to grow from
    bgd_model, fgd_model = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
    # GrabCut seeds its colour models by k-means from OpenCV's thread RNG: a fixed seed makes the
    # same photo give the same mask on every call.
    cv2.setRNGSeed(0)
    cv2.grabCut(cv2.cvtColor(small, cv2.COLOR_RGB2BGR), labels, None, bgd_model, fgd_model,
                GRABCUT_ITERATIONS, cv2.GC_INIT_WITH_MASK)
    return (labels == cv2.GC_FGD) | (labels == cv2.GC_PR_FGD)


def _colour_distance(small: np.ndarray) -> np.ndarray:
    """Each pixel's CIELAB distance from the border's median colour (uint8 Lab units)."""
    lab = cv2.cvtColor(small, cv2.COLOR_RGB2LAB).astype(np.float32)
    border = np.concatenate([lab[0], lab[-1], lab[:, 0], lab[:, -1]])
    return np.linalg.norm(lab - np.median(border, axis=0), axis=-1)


def _colour_distance_mask(small: np.ndarray) -> np.ndarray:
    """The fallback when GrabCut keeps (almost) nothing, as on a garment nearly the ground's colour."""
    return _colour_distance(small) > FALLBACK_DISTANCE


def _clean(mask: np.ndarray) -> np.ndarray:
    """Opening, the largest 8-connected component (and those near its size, with PAIR_SHARE), holes filled."""
    if OPEN_RADIUS:
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * OPEN_RADIUS + 1,) * 2)
        mask = cv2.morphologyEx(mask.astype(np.uint8), cv2.MORPH_OPEN, kernel)
    n, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    if n <= 1:
        return np.zeros(mask.shape, bool)
    areas = stats[1:, cv2.CC_STAT_AREA]
    if PAIR_SHARE is not None:
        kept = 1 + np.flatnonzero(areas >= PAIR_SHARE * areas.max())
        return _fill_holes(np.isin(labels, kept))
    return _fill_holes(labels == 1 + int(np.argmax(areas)))


def _fill_holes(mask: np.ndarray) -> np.ndarray:
    """Background not reachable from outside the image (4-connected) becomes foreground."""
    outside = np.pad(mask.astype(np.uint8), 1)
    cv2.floodFill(outside, None, (0, 0), 2)
    return (outside != 2)[1:-1, 1:-1]


def _as_float(rgb: np.ndarray) -> np.ndarray:
    a = np.asarray(rgb)
    if a.dtype == np.uint8:
        return a.astype(np.float32) / 255.0
    return np.clip(a.astype(np.float32), 0.0, 1.0)


def _luminance(rgb: np.ndarray) -> np.ndarray:
    return rgb if rgb.ndim == 2 else rgb[..., :3] @ LUMA


def _border_pixels(gray: np.ndarray) -> np.ndarray:
    return np.concatenate([gray[0], gray[-1], gray[:, 0], gray[:, -1]])


def _shrink_uint8(rgb: np.ndarray, side: int) -> np.ndarray:
    """Float RGB -> uint8 RGB with the longest side at most `side` (area averaging)."""
    img = np.round(rgb * 255.0).astype(np.uint8)
    h, w = img.shape[:2]
    if max(h, w) <= side:
        return img
    scale = side / max(h, w)
    return cv2.resize(img, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
