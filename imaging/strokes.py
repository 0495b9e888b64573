"""Drawings: strokes of one ink on a plain ground -> the garment they draw, in the Fashion-MNIST look.

A visitor draws a garment's outline or fills it, with any pen, in any colour, on the Draw tab or
in a paint program. Fashion-MNIST has no outlines: every garment is a light silhouette on black.
So a drawing is read as the region its strokes enclose: a closed outline and the same shape filled
give the same silhouette, and so the same look. Photos are not drawings (their grounds are noisy,
their garments shaded and textured), and `drawing_look` leaves them to segment.photo_look.

    >>> drawn = drawing_look(work)     # work (H, W, 3) or (H, W) float in [0, 1]
    >>> look, mask = drawn             # (28, 28) float32, (H, W) bool: the garment drawn; None for a photo

Method:

1. Ground and ink: the ground is the border's median colour; a pixel's distance from a colour is
   its largest difference over the channels, so a pure hue on white counts as much as black does.
   The ink is the median colour of the pixels furthest from the ground.
2. Drawing or photo: a drawing is two flat colours, blended only in a pixel or two where they meet
   (anti-aliasing, resampling, JPEG ringing), and its ground away from the strokes is the ground
   colour almost exactly. A photo's garment has blurred edges, shading and texture; its ground has
   noise and light falling off.
3. Strokes: pixels more than halfway from the ground colour to the ink colour.
4. Garment: the strokes and the regions they enclose. An enclosed region much smaller than the
   drawing stays open if it is wide (a bag's handle); narrow ones are gaps left while filling the
   shape by scribbling, and are filled.
   An outline left open is closed by growing its strokes only as far as needed to enclose
   something, filling, and shrinking back, so a closed drawing keeps its gaps (between trouser
   legs, sleeve and body) open.
   A garment that is exactly its box, an axis-aligned rectangle, is a card or a swatch and keeps
   the photo path.
5. Look: the silhouette, brightest inside and falling off towards its edge, through
   segment.look_from_mask (cropped to the garment, longest edge fitted, centred, area-averaged).
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from imaging import segment

# A border pixel this close to the ground colour (largest channel difference, [0, 1]) is ground,
# and at least PLAIN_BORDER_SHARE of the border must be: strokes may run off the canvas here and there.
GROUND_TOLERANCE, PLAIN_BORDER_SHARE = 0.1, 0.9
MIN_INK_CONTRAST = 0.25        # an ink fainter than this from the ground is no drawing
MIN_STROKE_PIXELS = 20         # fewer stroke pixels: nothing drawn
# Two flat colours meeting in sharp edges: at most MAX_BLEND_PER_EDGE pixels further than
# BLEND_TOLERANCE from both colours per pixel of the strokes' edge.
BLEND_TOLERANCE, MAX_BLEND_PER_EDGE = 0.08, 3.0
# A quiet ground: at least QUIET_SHARE of the pixels more than QUIET_DISTANCE px from any stroke
# (past a JPEG block's ringing) are within QUIET_TOLERANCE of the ground colour.
QUIET_TOLERANCE, QUIET_SHARE, QUIET_DISTANCE = 0.03, 0.98, 8
# An enclosed region of at least this share of the strokes' area is an inside worth the name: the
# smallest growth of the strokes that makes one closes an open outline's gap.
MIN_INSIDE_SHARE = 0.25
# Growths tried on an outline that encloses nothing, in stroke widths, smallest first.
CLOSING_STEPS = (0.5, 1.0, 2.0, 3.0)
# Strokes at least this wide against the drawing's longest side are a filled garment: nothing to close.
FILLED_WIDTH_SHARE = 0.15
# A garment filling its box this exactly is an axis-aligned rectangle: a card, a swatch or a
# synthetic test image, not a hand drawing (whose edges wobble even when its strokes are thick).
SYNTHETIC_RECTANGLE_FILL = 0.999
# Enclosed regions under HANDLE_SHARE of the drawing (strokes and enclosed regions) stay open when
# they are at least OPEN_WIDTH_SHARE of the drawing's longest side across (a handle's inside).
HANDLE_SHARE, OPEN_WIDTH_SHARE = 0.3, 0.15
# The look: brightness rising from 0 at the garment's edge to FILL_LEVEL at a depth of RAMP_SHARE
# of its longest side, as a rounded garment lit from the front; a uniform silhouette is read less
# reliably. Both chosen for the shipped weights on tests/drawings.validation_drawings (other shapes,
# seeds and jitter than the reported set), the best cell of `python bench/drawings.py --grid`: drawings
# meet the network's own BatchNorm, which saw only Fashion-MNIST, and read best as a bright silhouette
# with a short ramp at its edge.
FILL_LEVEL, RAMP_SHARE = 1.0, 0.08


@dataclass
class Inks:
    """A picture read as ink on a ground: the picture as RGB (H, W, 3), the two colours (3,), each
    pixel's distance from the ground (H, W) and the strokes (H, W) bool."""
    rgb: np.ndarray
    ground: np.ndarray
    ink: np.ndarray
    dist: np.ndarray
    strokes: np.ndarray


def read_inks(work: np.ndarray) -> Inks | None:
    """The ground, the ink and the strokes of `work` ((H, W, 3) or (H, W) in [0, 1]); None when
    the border is not one plain colour or nothing stands out from it."""
    rgb = _as_rgb(work)
    border = np.concatenate([rgb[0], rgb[-1], rgb[:, 0], rgb[:, -1]])
    ground = np.median(border, axis=0)
    if np.mean(_distance(border, ground) < GROUND_TOLERANCE) < PLAIN_BORDER_SHARE:
        return None
    dist = _distance(rgb, ground)
    marked = dist > GROUND_TOLERANCE
    if np.count_nonzero(marked) < MIN_STROKE_PIXELS:
        return None
    # The strokes' cores, not their blended edges: the half of the marked pixels furthest out.
    ink = np.median(rgb[dist >= np.median(dist[marked])], axis=0)
    contrast = float(np.max(np.abs(ink - ground)))
    strokes = dist > contrast / 2
    if contrast < MIN_INK_CONTRAST or np.count_nonzero(strokes) < MIN_STROKE_PIXELS:
        return None
    return Inks(rgb, ground, ink, dist, strokes)


def blend_per_edge(inks: Inks) -> float:
    """Pixels that are neither the ground nor the ink colour (within BLEND_TOLERANCE), per pixel of
    the strokes' edge: about 1 where two flat colours meet in an anti-aliased edge, several where a
    photo's edge is blurred or its garment shaded and textured."""
    blended = (inks.dist >= BLEND_TOLERANCE) & (_distance(inks.rgb, inks.ink) >= BLEND_TOLERANCE)
    strokes = inks.strokes.astype(np.uint8)
    inner = cv2.erode(np.pad(strokes, 1), np.ones((3, 3), np.uint8))[1:-1, 1:-1].astype(bool)
    return float(blended.sum() / max(np.count_nonzero(inks.strokes & ~inner), 1))


def quiet_share(inks: Inks) -> float:
    """Share of the pixels more than QUIET_DISTANCE px from any stroke that are the ground colour."""
    far = cv2.distanceTransform((~inks.strokes).astype(np.uint8), cv2.DIST_L2, 3) > QUIET_DISTANCE
    return float(np.mean(inks.dist[far] < QUIET_TOLERANCE)) if far.any() else 0.0


def drawn_garment(work: np.ndarray) -> np.ndarray | None:
    """The garment a drawing shows, (H, W) bool; None for a photo, or for a flat rectangle (a card,
    a swatch), which keeps the photo path and its grey level.

    Args:
        work: (H, W, 3) or (H, W) float in [0, 1], the working image of preprocess.
    """
    inks = read_inks(work)
    # The cheaper test first: most product photos on white fail it.
    if inks is None or quiet_share(inks) < QUIET_SHARE or blend_per_edge(inks) > MAX_BLEND_PER_EDGE:
        return None
    mask = garment(inks.strokes)
    ys, xs = np.nonzero(mask)
    box = (np.ptp(ys) + 1) * (np.ptp(xs) + 1)
    return None if mask.sum() >= SYNTHETIC_RECTANGLE_FILL * box else mask


def drawing_look(work: np.ndarray, size: int = 28) -> tuple[np.ndarray, np.ndarray] | None:
    """A drawing -> (look (size, size) float32 in [0, 1], mask (H, W) bool of the garment drawn);
    None when `work` is not a drawing of a garment (see `drawn_garment`)."""
    mask = drawn_garment(work)
    if mask is None:
        return None
    return segment.look_from_mask(1.0 - levels(mask), mask, size), mask


def garment(strokes: np.ndarray) -> np.ndarray:
    """Strokes (H, W) bool -> the garment (H, W) bool: the strokes and what they enclose, an open
    outline closed first."""
    filled, inside = fill_enclosed(strokes)
    width = stroke_width(strokes)
    if inside >= MIN_INSIDE_SHARE * strokes.sum() or width >= FILLED_WIDTH_SHARE * _extent(strokes):
        return filled
    for step in CLOSING_STEPS:
        closed, inside = _close_and_fill(strokes, max(1, round(step * width)))
        if inside >= MIN_INSIDE_SHARE * strokes.sum():
            return closed
    return filled


def fill_enclosed(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """(mask with the regions it encloses filled, pixels added). A region that is small against the
    drawing (under HANDLE_SHARE of it) yet wide (at least OPEN_WIDTH_SHARE of its longest side
    across) is the inside of a loop, a bag's handle, and stays open; narrow gaps between strokes
    (a shape filled by scribbling) are filled."""
    n, labels, stats, _ = cv2.connectedComponentsWithStats((~mask).astype(np.uint8), connectivity=4)
    outside = set(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]).tolist())
    areas = {i: int(stats[i, cv2.CC_STAT_AREA]) for i in range(1, n) if i not in outside}
    total = int(mask.sum()) + sum(areas.values())
    # Twice the distance to the nearest stroke: how wide a region is at its widest.
    across = 2 * cv2.distanceTransform((~mask).astype(np.uint8), cv2.DIST_L2, 3)
    wide = OPEN_WIDTH_SHARE * _extent(mask)
    keep = [i for i, area in areas.items()
            if area >= HANDLE_SHARE * total or across[labels == i].max() < wide]
    filled = mask | np.isin(labels, keep)
    return filled, int(filled.sum() - mask.sum())


def stroke_width(strokes: np.ndarray) -> float:
    """Typical stroke width in px: twice the median distance to the ground along the strokes' ridges."""
    dt = cv2.distanceTransform(np.pad(strokes, 1).astype(np.uint8), cv2.DIST_L2, 3)[1:-1, 1:-1]
    ridge = strokes & (dt >= cv2.dilate(dt, np.ones((3, 3), np.uint8)))
    return 2.0 * float(np.median(dt[ridge])) if ridge.any() else 1.0


def levels(mask: np.ndarray, fill: float = FILL_LEVEL, ramp_share: float = RAMP_SHARE) -> np.ndarray:
    """The look's brightness over the mask, (H, W) float32: 0 at its edge, rising to `fill` at a
    depth of `ramp_share` of its longest side."""
    depth = cv2.distanceTransform(np.pad(mask, 1).astype(np.uint8), cv2.DIST_L2, 3)[1:-1, 1:-1]
    ramp = max(1.0, ramp_share * _extent(mask))
    return np.where(mask, fill * np.clip(depth / ramp, 0.0, 1.0), 0.0).astype(np.float32)


def _close_and_fill(mask: np.ndarray, radius: int) -> tuple[np.ndarray, int]:
    """Grow the strokes by `radius` (bridging gaps up to twice that), fill what they then enclose,
    shrink back by `radius` -> (garment, pixels the fill added). Filling before shrinking keeps a
    bridged gap closed, which a plain closing does not do for two stroke ends facing each other."""
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1,) * 2)
    grown = cv2.dilate(np.pad(mask, radius).astype(np.uint8), kernel).astype(bool)
    filled, inside = fill_enclosed(grown)
    shrunk = cv2.erode(filled.astype(np.uint8), kernel)[radius:-radius, radius:-radius].astype(bool)
    return shrunk | mask, inside


def _extent(mask: np.ndarray) -> int:
    """The longest side of the mask's bounding box in px (1 if empty)."""
    ys, xs = np.nonzero(mask)
    return int(max(ys.max() - ys.min(), xs.max() - xs.min()) + 1) if len(ys) else 1


def _as_rgb(work: np.ndarray) -> np.ndarray:
    a = np.asarray(work, dtype=np.float32)
    return np.repeat(a[..., None], 3, axis=-1) if a.ndim == 2 else a[..., :3]


def _distance(rgb: np.ndarray, colour: np.ndarray) -> np.ndarray:
    """Largest channel difference from `colour`, in [0, 1]: shape of `rgb` without its last axis."""
    return np.max(np.abs(rgb - colour), axis=-1)
