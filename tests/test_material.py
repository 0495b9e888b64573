"""What a segmented region is made of (imaging/material.py), and that a photo's Seen carries it.

Each number is checked on a region whose answer is known by construction: a flat grey patch has no
grain and only flat binary patterns, a white one is all highlight, a black one all dark, a
saturated red one has chroma and a positive a, and a noisy patch is grained.
"""
from __future__ import annotations

import numpy as np
from PIL import Image, ImageOps

from helpers import REPO
from imaging.material import GRAIN_FLOOR, MATERIAL, describe
from imaging.preprocess import look_and_mask

SIDE = 64
LIGHT_MEAN, LIGHT_SPREAD, CHROMA_MEAN, CHROMA_SPREAD, A_MEAN, B_MEAN = range(6)
GRADIENT_MEAN, GRADIENT_P90, LAPLACIAN, HALF_LAPLACIAN, HIGHLIGHTS, DARK_SHARE = range(6, 12)
PATTERNS = slice(12, MATERIAL)


def patch(rgb) -> np.ndarray:
    return np.broadcast_to(np.asarray(rgb, np.float32), (SIDE, SIDE, 3)).copy()


def whole() -> np.ndarray:
    return np.ones((SIDE, SIDE), bool)


def test_a_flat_region_has_no_grain_and_only_flat_patterns():
    d = describe(patch([0.5, 0.5, 0.5]), whole())
    assert d.shape == (MATERIAL,) and d.dtype == np.float32
    np.testing.assert_allclose(d[[GRADIENT_MEAN, GRADIENT_P90, LAPLACIAN, HALF_LAPLACIAN]], np.log(GRAIN_FLOOR), atol=1e-4)
    assert d[LIGHT_SPREAD] < 1e-3 and d[CHROMA_MEAN] < 0.01 and d[HIGHLIGHTS] == d[DARK_SHARE] == 0
    # Every neighbour within the tolerance: no brighter neighbour, the first pattern bin.
    assert d[PATTERNS][0] == 1.0


def test_white_is_highlight_black_is_dark_red_has_chroma():
    assert describe(patch([1, 1, 1]), whole())[HIGHLIGHTS] == 1.0
    assert describe(patch([0, 0, 0]), whole())[DARK_SHARE] == 1.0
    red = describe(patch([0.8, 0.1, 0.1]), whole())
    assert red[CHROMA_MEAN] > 0.5 and red[A_MEAN] > 0.4 and red[HIGHLIGHTS] == 0


def test_noise_is_grained_and_only_the_mask_counts():
    rng = np.random.default_rng(0)
    noisy = np.clip(0.5 + 0.2 * rng.standard_normal((SIDE, SIDE, 1)), 0, 1).repeat(3, axis=2).astype(np.float32)
    flat = describe(patch([0.5, 0.5, 0.5]), whole())
    grained = describe(noisy, whole())
    assert grained[GRADIENT_MEAN] > flat[GRADIENT_MEAN] + 2 and grained[LIGHT_SPREAD] > 0.1
    # Half noise, half flat: described by the flat half alone when the mask holds only that half.
    half = noisy.copy()
    half[:, SIDE // 2:] = 0.5
    mask = np.zeros((SIDE, SIDE), bool)
    mask[:, SIDE // 2 + 4:] = True
    np.testing.assert_allclose(describe(half, mask), flat, atol=1e-4)


def test_a_segmented_photo_carries_its_material_and_nothing_else_does():
    with Image.open(REPO / "examples" / "photos" / "009b3c31-dress.jpg") as img:
        seen = look_and_mask(ImageOps.exif_transpose(img).convert("RGB"))
    assert seen.photo and seen.material.shape == (MATERIAL,) and np.isfinite(seen.material).all()
    np.testing.assert_array_equal(seen.material, describe(seen.work, seen.mask))
    digit = np.zeros((28, 28), np.uint8)
    digit[6:22, 12:16] = 255
    assert look_and_mask(digit).material is None
