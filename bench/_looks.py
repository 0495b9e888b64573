"""The two preprocessing paths the photo benches compare, frozen here so the comparison stays fixed.

Not a script. `threshold_look` is the path every image took before segmentation (model.fashion_look
at commit 9b1c385: grayscale, invert when the border is light, subtract the border's median,
threshold at 0.05, crop the box, fit the longest edge, centre). `segmented_look` is the path that
replaces it, the one the app serves: `preprocess.look_and_mask` (segmentation for photos and
product shots, the threshold path for images already light on black). `load_rgb` and `run_timed` serve both
benches.
"""
from __future__ import annotations

import time
from typing import Callable

import numpy as np
from PIL import Image

from imaging.preprocess import Seen, fit_to_frame, look_and_mask

SIZE = 28
WORK_SIDE = 256   # both paths work on at most this many pixels a side


def load_rgb(image: Image.Image, max_side: int = WORK_SIDE) -> np.ndarray:
    """PIL image -> (H, W, 3) float32 RGB in [0, 1], longest side at most `max_side`.

    A large JPEG is decoded at a reduced scale (`Image.draft`: the decoder skips the fine DCT
    coefficients), most of the cost of a 12-megapixel phone photo otherwise.
    """
    if image.format == "JPEG" and max(image.size) > 2 * max_side:
        image.draft("RGB", (max_side, max_side))
    image = image.convert("RGB")
    if max(image.size) > max_side:
        image = image.resize(_fit(image.size, max_side), Image.Resampling.BOX)
    return np.asarray(image, dtype=np.float32) / 255.0


def threshold_look(image: Image.Image, size: int = SIZE) -> np.ndarray:
    """The pre-segmentation path for an RGB or grayscale PIL image -> (size, size) float32 in [0, 1]."""
    img = image.convert("L")
    if max(img.size) > WORK_SIDE:
        img = img.resize(_fit(img.size, WORK_SIDE), Image.Resampling.BOX)
    gray = np.asarray(img, dtype=np.float64) / 255.0
    border = np.concatenate([gray[0], gray[-1], gray[:, 0], gray[:, -1]])
    if np.median(border) > 0.5:
        gray, border = 1.0 - gray, 1.0 - border
    background = float(np.median(border))
    gray = np.clip((gray - background) / max(1.0 - background, 1e-6), 0.0, 1.0)
    return fit_to_frame(gray, gray > 0.05, size)        # the crop and fit the app still uses


def segmented_look(image: Image.Image, size: int = SIZE) -> Seen:
    """What the served path, `preprocess.look_and_mask`, makes of the image (look, mask, photo)."""
    return look_and_mask(image, size)


def routed(predict: Callable, model, looks: list[np.ndarray], photos: list[bool]) -> list:
    """predict(network, looks) per look, each answered by the network the app gives it: a segmented
    photo by `model.for_photos()` (the photo BatchNorm), everything else by `model`."""
    out = [None] * len(looks)
    for photo, network in ((False, model), (True, model.for_photos())):
        idx = [i for i, p in enumerate(photos) if p == photo]
        if idx:
            for i, answer in zip(idx, predict(network, [looks[i] for i in idx])):
                out[i] = answer
    return out


def run_timed(fn: Callable, items: list) -> tuple[list, list[float], list[float]]:
    """fn over items -> (outputs, wall ms per call, CPU ms per call).

    CPU time (this process, all threads) is the figure to trust on a shared machine: a call that
    waits for a core shows in its wall time only.
    """
    out, wall, cpu = [], [], []
    for item in items:
        w0, c0 = time.perf_counter(), time.process_time()
        out.append(fn(item))
        cpu.append((time.process_time() - c0) * 1000)
        wall.append((time.perf_counter() - w0) * 1000)
    return out, wall, cpu


def _fit(wh: tuple[int, int], side: int) -> tuple[int, int]:
    scale = side / max(wh)
    return max(1, round(wh[0] * scale)), max(1, round(wh[1] * scale))
