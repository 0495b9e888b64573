"""Fashion-MNIST garments as a shop shows them: enlarged, dark on a white ground, off-centre.

A visitor uploads garments that are not phone photos too: a shop's product shot, a clip-art. The
app routes such an image as a photo (it is large and has a ground to cut away), but no photo of the
photo set looks like it. training/fit_verdict.py --product-style can give the photo detector such
garments, made from *train* images, as a Gaussian of their own; bench/product_uploads.py and
bench/verdict.py measure the same kind of image made from *test* images.

    >>> from training.product_style import product_upload
    >>> product_upload(raw_28x28_uint8, np.random.default_rng(0))      # -> PIL RGB image
"""
from __future__ import annotations

import numpy as np
from PIL import Image

from training.data import open_split


def product_upload(raw: np.ndarray, rng: np.random.Generator) -> Image.Image:
    """(28, 28) uint8 light-on-black -> an RGB product photo: dark garment on white, tinted box, off-centre."""
    img = (255 - raw.astype(np.float32))[..., None].repeat(3, axis=2)          # (28, 28, 3), white ground
    ys, xs = np.nonzero(raw > 0)
    if len(ys):
        m = rng.integers(1, 5, size=4)                                         # margin on each side, px
        top, bottom = max(0, ys.min() - m[0]), min(28, ys.max() + 1 + m[1])
        left, right = max(0, xs.min() - m[2]), min(28, xs.max() + 1 + m[3])
        img[top:bottom, left:right] *= 1.0 - rng.uniform(0.03, 0.10, size=3)  # a slight colour cast
    k = rng.uniform(6, 14)
    side = round(28 * k)
    garment = Image.fromarray(np.round(img).astype(np.uint8)).resize((side, side), Image.Resampling.BICUBIC)
    cw, ch = (round(side * rng.uniform(1.2, 2.0)) for _ in range(2))
    canvas = Image.new("RGB", (cw, ch), (255, 255, 255))
    canvas.paste(garment, (int(rng.integers(0, cw - side + 1)), int(rng.integers(0, ch - side + 1))))
    return canvas


def train_uploads(dataset: str, n: int, seed: int = 0) -> list[Image.Image]:
    """Product uploads of the first `n` images of a seeded permutation of the *train* split: never a
    test image, which the benches dress the same way to measure."""
    ds = open_split(dataset, "train")
    rng = np.random.default_rng(seed)
    idx = rng.permutation(len(ds))[:n]
    return [product_upload(np.asarray(img.convert("L"), dtype=np.uint8), rng) for img in ds.select(idx.tolist())["image"]]
