"""segment.py: garment masks on synthetic photos with a known mask, the routing rule, the look's form.

The photos are Fashion-MNIST garments from the repository's own slice (tests/data/fashion_mnist),
enlarged and composited with a soft edge onto textured, coloured and gradient grounds, each with a
cast shadow, and onto a white product backdrop with a tinted rectangle around the garment. The
true mask is the composite's alpha >= 0.5, so a segmentation is scored by IoU against it.
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from imaging import segment

DATA = Path(__file__).resolve().parent / "data" / "fashion_mnist"
SCALE = 6                       # 28 px -> 168 px garments, on a 224 x 208 canvas (<= 256, as served)
CANVAS = (224, 208)             # (height, width)
GROUNDS = ("textured", "coloured", "gradient", "product", "card")
# Product shots: white, with a tinted rectangle around the garment: a slight cast, or a grey card.
TINTS = {"product": (0.95, 0.93, 0.9), "card": (0.78, 0.8, 0.85)}
# The bar, from measuring these very cases: segment's mean IoU per ground was 0.82 (the rug) to
# 0.93 (the grey card), its worst single case 0.65 (trousers, whose narrow gap between the legs
# the cut closes). Masks that found the ground instead of the garment stay below the bar: the
# frame inside the border band (best case 0.48), the tinted rectangle (mean 0.65) and the old
# grey-level threshold (means 0.06 on the rug to 0.61 on the product shots).
MIN_MEAN_IOU, MIN_IOU = 0.75, 0.55


@pytest.fixture(scope="module")
def slice_images() -> tuple[np.ndarray, np.ndarray]:
    """Every image of the test slice (uint8 (N, 28, 28), light on black) and its labels."""
    from training.data import open_split
    ds = open_split(DATA, "test")
    return np.stack([np.asarray(im.convert("L"), dtype=np.uint8) for im in ds["image"]]), np.asarray(ds["label"])


@pytest.fixture(scope="module")
def garments(slice_images) -> list[np.ndarray]:
    """Two garments of each of the ten classes."""
    raws, labels = slice_images
    return [raws[i] for c in range(10) for i in np.flatnonzero(labels == c)[:2]]


def ground(kind: str, rng: np.random.Generator) -> np.ndarray:
    """(H, W, 3) float ground: carpet-like texture, a saturated sheet, lit-from-one-side floor, or white."""
    h, w = CANVAS
    if kind == "textured":
        # A two-colour patterned rug whose grey levels span the garment's: blobs of dark red and cream.
        blobs = cv2.GaussianBlur(rng.random((h, w)).astype(np.float32), (0, 0), 3)
        blobs = np.clip((blobs - blobs.mean()) / (4 * blobs.std()) + 0.5, 0, 1)[..., None]
        weave = 0.9 + 0.1 * np.sin(np.arange(w) / 1.5)[None, :, None]
        return weave * (blobs * np.array([0.9, 0.85, 0.7], np.float32) + (1 - blobs) * np.array([0.55, 0.1, 0.1], np.float32))
    if kind == "coloured":
        base = np.array([0.95, 0.55, 0.2], np.float32)       # an orange sheet as light as the garment
        return np.clip(base + rng.normal(0, 0.02, (h, w, 3)), 0, 1).astype(np.float32)
    if kind == "gradient":
        ramp = np.linspace(0.9, 0.45, w, dtype=np.float32)[None, :, None]         # light falling off
        return np.broadcast_to(ramp * np.array([0.95, 0.92, 0.85], np.float32), (h, w, 3)).copy()
    return np.ones((h, w, 3), np.float32)


def silhouette(raw: np.ndarray) -> np.ndarray:
    """The garment's outline filled: its largest nonzero component, holes closed.

    Fashion-MNIST negated its product photos, so a white part of a garment is near 0 but not 0;
    only the background is exactly 0.
    """
    n, labels, stats, _ = cv2.connectedComponentsWithStats((raw > 0).astype(np.uint8), connectivity=8)
    garment = (labels == 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))).astype(np.uint8)
    outside = np.pad(garment, 1)
    cv2.floodFill(outside, None, (0, 0), 2)
    return (outside != 2)[1:-1, 1:-1]


def composite(raw: np.ndarray, kind: str, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A garment on a ground: (RGB float (H, W, 3), true mask (H, W) bool)."""
    h, w = CANVAS
    side = 28 * SCALE
    alpha_small = cv2.resize(silhouette(raw).astype(np.float32), (side, side), interpolation=cv2.INTER_LINEAR)
    top, left = int(rng.integers(8, h - side - 8)), int(rng.integers(8, w - side - 8))
    alpha = np.zeros((h, w), np.float32)
    alpha[top:top + side, left:left + side] = alpha_small
    texture = cv2.resize(raw, (side, side), interpolation=cv2.INTER_LINEAR).astype(np.float32) / 255.0
    shade = np.zeros((h, w), np.float32)
    shade[top:top + side, left:left + side] = 0.7 + 0.3 * texture                 # the garment's own pattern
    bg = ground(kind, rng)
    if kind in TINTS:
        colour = np.array([0.2, 0.22, 0.3], np.float32)                            # a dark garment
        ys, xs = np.nonzero(alpha > 0)
        bg[ys.min() - 6:ys.max() + 7, xs.min() - 6:xs.max() + 7] *= np.array(TINTS[kind], np.float32)
    else:
        colour = {"textured": np.array([0.25, 0.35, 0.6], np.float32), "coloured": np.array([0.8, 0.8, 0.8], np.float32),
                  "gradient": np.array([0.15, 0.3, 0.6], np.float32)}[kind]
        shadow = cv2.GaussianBlur(np.roll(alpha, (6, 8), axis=(0, 1)), (0, 0), 4)
        bg = bg * (1 - 0.4 * shadow[..., None])                                    # cast down and to the right
    rgb = alpha[..., None] * shade[..., None] * colour + (1 - alpha[..., None]) * bg
    return np.clip(rgb, 0, 1).astype(np.float32), alpha >= 0.5


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max((a | b).sum(), 1))


@pytest.fixture(scope="module")
def cases(garments) -> list[tuple[str, np.ndarray, np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(0)
    return [(kind, raw, *composite(raw, kind, rng)) for kind in GROUNDS for raw in garments]


@pytest.fixture(scope="module")
def results(cases) -> list[tuple[np.ndarray, np.ndarray]]:
    return [segment.photo_look(rgb) for _, _, rgb, _ in cases]


@pytest.mark.parametrize("kind", GROUNDS)
def test_mask_matches_the_garment(kind, cases, results):
    scores = [iou(mask, truth) for (k, _, _, truth), (_, mask) in zip(cases, results) if k == kind]
    assert np.mean(scores) >= MIN_MEAN_IOU, f"{kind}: mean IoU {np.mean(scores):.3f}, all {np.round(scores, 2)}"
    assert min(scores) >= MIN_IOU, f"{kind}: worst IoU {min(scores):.3f}"


def grey_threshold_mask(rgb: np.ndarray) -> np.ndarray:
    """The pre-segmentation rule: invert a light ground, subtract the border's median grey, > 0.05."""
    gray = rgb @ np.array([0.299, 0.587, 0.114], np.float32)
    border = np.concatenate([gray[0], gray[-1], gray[:, 0], gray[:, -1]])
    if np.median(border) > 0.5:
        gray, border = 1 - gray, 1 - border
    background = np.median(border)
    return (gray - background) / max(1 - background, 1e-6) > 0.05


@pytest.mark.parametrize("kind", GROUNDS)
def test_the_bar_rejects_masks_that_keep_the_ground(kind, cases):
    # What a cut that found the ground's edge instead of the garment's would keep must fail the
    # bar that segment passes, or the IoU test above proves nothing.
    frames, thresholds, rects = [], [], []
    for k, _, rgb, truth in cases:
        if k != kind:
            continue
        frame = np.zeros_like(truth)
        frame[5:-5, 5:-5] = True
        ys, xs = np.nonzero(truth)
        rect = np.zeros_like(truth)
        rect[ys.min() - 6:ys.max() + 7, xs.min() - 6:xs.max() + 7] = True
        frames.append(iou(frame, truth))
        thresholds.append(iou(grey_threshold_mask(rgb), truth))
        rects.append(iou(rect, truth))
    assert max(frames) < MIN_IOU
    assert np.mean(thresholds) < MIN_MEAN_IOU
    if kind in TINTS:
        assert np.mean(rects) < MIN_MEAN_IOU


def test_fashion_mnist_images_keep_the_old_path(slice_images):
    for raw in slice_images[0]:
        assert not segment.needs_segmentation(raw)                                   # uint8 gray
        assert not segment.needs_segmentation(np.repeat(raw[..., None], 3, 2) / 255.0)  # float RGB
        big = cv2.resize(raw, (28 * SCALE,) * 2, interpolation=cv2.INTER_LINEAR)
        assert not segment.needs_segmentation(big)                                   # enlarged


def test_only_segmented_photos_are_marked_as_photos(slice_images, cases):
    """`look_and_mask(...).photo` decides which network answers (`FashionCNN.for_photos`): every
    photo-like composite and committed phone photo, never a Fashion-MNIST image or a drawing."""
    import sys

    from PIL import Image

    from imaging.preprocess import look_and_mask
    sys.path.insert(0, str(Path(__file__).parent))
    from drawings import drawings
    for raw in slice_images[0][:50]:
        seen = look_and_mask(raw)
        assert not seen.photo and seen.mask is None
    for kind, _, rgb, _ in cases:
        assert look_and_mask(rgb).photo, kind
    for path in sorted((Path(__file__).parents[1] / "examples" / "photos").glob("*.jpg")):
        with Image.open(path) as img:
            assert look_and_mask(img.convert("RGB")).photo, path.name
    for name, variant, image in drawings()[::12]:
        seen = look_and_mask(image)
        assert seen.mask is not None and not seen.photo, (name, variant)


def test_photos_and_product_shots_are_segmented(cases):
    for kind, raw, rgb, _ in cases:
        assert segment.needs_segmentation(rgb), kind
        assert segment.needs_segmentation(255 - raw), "dark garment on white"


def fitted(mask: np.ndarray, size: int = 28) -> np.ndarray:
    """A mask as the look should place it: box cropped, longest edge `size`, centred (area coverage)."""
    ys, xs = np.nonzero(mask)
    crop = mask[ys.min():ys.max() + 1, xs.min():xs.max() + 1].astype(np.float32)
    h, w = crop.shape
    nh, nw = max(1, round(h * size / max(h, w))), max(1, round(w * size / max(h, w)))
    out = np.zeros((size, size), np.float32)
    top, left = (size - nh) // 2, (size - nw) // 2
    out[top:top + nh, left:left + nw] = cv2.resize(crop, (nw, nh), interpolation=cv2.INTER_AREA)
    return out


def test_look_is_the_fashion_mnist_form(cases, results):
    # The garment the mask kept, fitted to 28 px and centred; exactly 0 wherever the mask is not.
    for (kind, _, _, truth), (look, mask) in zip(cases, results):
        assert look.shape == (28, 28) and look.dtype == np.float32
        assert look.min() >= 0.0 and look.max() <= 1.0
        assert mask.shape == truth.shape and mask.dtype == bool
        where = fitted(mask)
        assert np.all(look[where == 0] == 0.0), f"{kind}: background is not exactly 0"
        assert np.mean(look[where > 0.99] > 0.05) > 0.9, f"{kind}: garment missing from the look"
        ys, xs = np.nonzero(look)
        assert max(ys.max() - ys.min(), xs.max() - xs.min()) + 1 == 28, f"{kind}: longest edge not fitted"


def test_dark_garment_comes_out_light(cases, results):
    # The product shots' garment is dark: inverted luminance makes it light, as in Fashion-MNIST.
    looks = [look for (kind, *_), (look, _) in zip(cases, results) if kind in TINTS]
    assert np.median([look[look > 0].mean() for look in looks]) > 0.5


@pytest.mark.parametrize("image", [
    np.ones((120, 90, 3), np.float32),                       # blank white
    np.zeros((64, 64, 3), np.float32),                       # blank black
    np.full((5, 7, 3), 0.5, np.float32),                     # tiny
    np.random.default_rng(0).random((50, 40, 3)),            # noise
    (np.random.default_rng(1).random((60, 80)) * 255).astype(np.uint8),   # uint8 gray
])
def test_degenerate_inputs_give_a_valid_look(image):
    look, mask = segment.photo_look(image)
    assert look.shape == (28, 28) and look.dtype == np.float32
    assert np.isfinite(look).all() and look.min() >= 0.0 and look.max() <= 1.0
    assert mask.shape == image.shape[:2]
    if not mask.any():
        assert not look.any()


def test_wrong_shape_is_refused():
    with pytest.raises(ValueError, match="RGB"):
        segment.photo_look(np.zeros((10, 10, 4), np.float32))


def _pair_photo(second: float) -> np.ndarray:
    """Two dark shoes side by side on a light floor: the right one `second` times the left's width."""
    rgb = np.full((160, 200, 3), 0.85, np.float32)
    rgb[50:110, 30:90] = (0.2, 0.15, 0.1)
    rgb[50:110, 110:110 + round(60 * second)] = (0.2, 0.15, 0.1)
    return rgb


def test_a_pair_is_kept_whole_only_with_pair_share(monkeypatch):
    """Today's cut keeps the largest component (one shoe of a pair); with PAIR_SHARE it keeps every
    component at least that share of the largest, and still drops specks far smaller."""
    one = segment.garment_mask(_pair_photo(0.9))
    assert one[80, 60] and not one[80, 140]
    monkeypatch.setattr(segment, "PAIR_SHARE", 0.5)
    both = segment.garment_mask(_pair_photo(0.9))
    assert both[80, 60] and both[80, 140]
    speck = segment.garment_mask(_pair_photo(0.2))          # a second object a fifth the size: dropped
    assert speck[80, 60] and not speck[80, 115]
