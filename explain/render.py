"""Attribution maps drawn over the input, in the input's own 28x28 pixel space.

Captum's `visualize_image_attr` scales each map by its own outlier percentile, so maps shown side
by side cannot share one colour scale, and it blends at the input's resolution. Maps are drawn
here from the raw values on a scale the caller passes (`common_scale`): a grayscale copy of what
the model saw, with the attribution blended on top (opacity grows with |a| / scale, so zero
attribution leaves the image visible). Signed maps use a diverging scale
centred at 0 (red = raises the class score, blue = lowers it); unsigned maps a sequential one.
Upsampling is nearest-neighbour: one model pixel stays one visible square.

    >>> scale = common_scale([a1, a2])            # one scale for maps shown side by side
    >>> rgb = render_overlay(look, a1, scale, signed=True)   # (224, 224, 3) uint8
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np

SIGNED_CMAP = "RdBu_r"     # diverging: blue < 0 < red, white at 0
UNSIGNED_CMAP = "inferno"  # sequential: dark -> yellow
MAX_OPACITY = 0.85         # the input always shows through a little
IMAGE_DIM = 0.7            # the grayscale input is dimmed so colours read over white garments


def share(attribution: np.ndarray) -> np.ndarray:
    """a / sum|a|: each pixel's share of the total attribution (a zero map stays zero).

    Methods have different units (gradients, logit differences), so maps of *different* methods
    are comparable on one scale only after this: a peaked map then shows strong values and a
    diffuse one faint values, instead of every map being stretched to its own maximum.
    """
    a = np.asarray(attribution, dtype=np.float64)
    total = np.abs(a).sum()
    return (a / total).astype(np.float32) if total > 0 and np.isfinite(total) else np.zeros_like(a, np.float32)


def common_scale(maps: list[np.ndarray], percentile: float = 99.0) -> float:
    """One colour scale for maps shown together: the `percentile` of |a| over all of them (> 0).

    A robust maximum: a few extreme pixels saturate instead of washing out the rest. Pass maps in
    the same units (one method across targets or images), or `share(a)` of each across methods.
    """
    values = np.concatenate([np.abs(np.asarray(m, dtype=np.float64)).ravel() for m in maps]) if maps else np.zeros(1)
    values = values[np.isfinite(values)]
    if values.size == 0:
        return 1.0
    scale = float(np.percentile(values, percentile))
    if not scale > 0:
        scale = float(values.max())
    return scale if scale > 0 and np.isfinite(scale) else 1.0


@lru_cache(maxsize=4)
def _lut(name: str) -> np.ndarray:
    """(256, 3) float RGB lookup table of a matplotlib colormap (matplotlib imported lazily)."""
    from matplotlib import colormaps
    return colormaps[name](np.linspace(0.0, 1.0, 256))[:, :3]


def _upsample(a: np.ndarray, size: int) -> np.ndarray:
    """Nearest-neighbour (h, w[, c]) -> (size, size[, c]): crisp model pixels."""
    rows = (np.arange(size) * a.shape[0]) // size
    cols = (np.arange(size) * a.shape[1]) // size
    return a[rows][:, cols]


def _colours(attribution: np.ndarray, scale: float, signed: bool) -> tuple[np.ndarray, np.ndarray]:
    """Per-pixel RGB in [0, 1] (h, w, 3) and opacity (h, w) for an attribution map."""
    a = np.nan_to_num(np.asarray(attribution, dtype=np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    scale = float(scale) if np.isfinite(scale) and scale > 0 else 1.0
    if signed:
        t = np.clip(a / scale, -1.0, 1.0)              # [-1, 1], 0 -> the colormap's centre
        index = np.round((t + 1.0) * 127.5).astype(int)
    else:
        t = np.clip(np.abs(a) / scale, 0.0, 1.0)
        index = np.round(t * 255).astype(int)
    return _lut(SIGNED_CMAP if signed else UNSIGNED_CMAP)[index], np.abs(t) * MAX_OPACITY


def render_overlay(look: np.ndarray, attribution: np.ndarray, scale: float, signed: bool,
                   size: int = 224) -> np.ndarray:
    """The attribution as a heatmap over the grayscale input.

    Args:
        look: (28, 28) input pixels in [0, 1] (`model.fashion_look`), drawn in gray.
        attribution: (28, 28) raw map from `explain()`; unsigned methods are drawn as |a|.
        scale: |a| that gets full colour (e.g. `common_scale` of the maps shown together).
        signed: diverging colours centred at 0 if True, sequential otherwise.
        size: output side in pixels (nearest-neighbour upsampling).
    Returns:
        (size, size, 3) uint8 RGB.
    """
    look = np.clip(np.nan_to_num(np.asarray(look, dtype=np.float64)), 0.0, 1.0)
    if look.shape != np.shape(attribution):
        raise ValueError(f"input {look.shape} and attribution {np.shape(attribution)} differ in shape")
    base = np.repeat(look[..., None] * IMAGE_DIM, 3, axis=-1)          # (28, 28, 3)
    colour, alpha = _colours(attribution, scale, signed)
    rgb = base * (1 - alpha[..., None]) + colour * alpha[..., None]
    return (_upsample(rgb, size) * 255 + 0.5).astype(np.uint8)


def colorbar(scale: float, signed: bool, width: int = 224, height: int = 28) -> np.ndarray:
    """A legend: the colour ramp with its end values written under it, (height, width, 3) uint8."""
    from PIL import Image, ImageDraw
    lo = -float(scale) if signed else 0.0
    ramp = np.linspace(lo, float(scale), width)[None].repeat(height // 2, 0)   # (h/2, width)
    colour, alpha = _colours(ramp, scale, signed)
    bar = colour * alpha[..., None] + (1 - alpha[..., None])          # over white, like the legend reads
    img = Image.new("RGB", (width, height), "white")
    img.paste(Image.fromarray((bar * 255 + 0.5).astype(np.uint8)), (0, 0))
    draw = ImageDraw.Draw(img)
    y = height // 2 + 1
    draw.text((1, y), f"{lo:+.2g}" if signed else "0", fill="black")
    right = f"{float(scale):+.2g}" if signed else f"{float(scale):.2g}"
    draw.text((width - 6 * len(right) - 1, y), right, fill="black")
    if signed:
        draw.text((width // 2 - 3, y), "0", fill="black")
    return np.asarray(img)
