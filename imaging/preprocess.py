"""The one path from any image to the model's input: the Fashion-MNIST look, then normalisation.

Fashion-MNIST was made by trimming the background of product photos, resizing the longest edge to
28 px, centring and negating (Xiao et al. 2017, section 2). `fashion_look` follows those steps so
that a photo of a garment looks to the network like the images it was trained on; training images
take the same path (`train.load_images`), so training and serving cannot drift.

    >>> from preprocess import preprocess
    >>> x = preprocess(pil_image)            # (1, 28, 28) float32, normalised with the config's mean/std

Images whose border is already dark (every Fashion-MNIST image) are only centred. Of the images
with a light or textured ground, drawings (strokes of one ink on a plain ground) go through
`strokes.drawing_look`, which reads the garment the strokes draw, filled or only outlined; photos
go through `segment.photo_look`, which separates the garment from its background. Both then take
the same steps.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch
from PIL import Image

from imaging import material, segment
from imaging import strokes
from model import INPUT_SIZE, MEAN, STD

# Images with more pixels than this are refused before any float work (a decompression bomb guard).
MAX_IMAGE_PIXELS = 40_000_000
# Preprocessing works on at most this many pixels a side: enough to find and segment the garment.
WORK_SIZE = 256
# Below this many pixels a side an image is a thumbnail or a dataset image, not a photo: there is no
# ground texture to model, and the threshold path keeps such images exactly (only inverted if light).
MIN_SEGMENT_SIDE = 64


class InvalidImageError(ValueError):
    """The input cannot be turned into a model input; the message says why, for a person."""


# ---------------------------------------------------------------------------------------------
# Any image -> float array (H, W) or (H, W, 3) in [0, 1], at most WORK_SIZE a side
# ---------------------------------------------------------------------------------------------

def to_array(image) -> np.ndarray:
    """PIL image, numpy array or tensor -> float array (H, W) or (H, W, 3) in [0, 1], shrunk to WORK_SIZE.

    Raises:
        InvalidImageError: not an image (type, shape, dtype, NaN) or more than MAX_IMAGE_PIXELS.
    """
    if isinstance(image, Image.Image):
        return _pil_to_array(image)
    if isinstance(image, torch.Tensor):
        image = image.detach().cpu()
        if image.ndim == 4 and image.shape[0] == 1:
            image = image[0]
        if image.ndim == 3 and image.shape[0] in (1, 3, 4):   # CHW -> HWC
            image = image.permute(1, 2, 0)
        image = image.numpy()
    if not isinstance(image, np.ndarray):
        raise InvalidImageError(f"expected an image (PIL, numpy array or tensor), got {type(image).__name__}")
    return _shrink(_array_to_unit(image), WORK_SIZE)


def _check_size(width: int, height: int) -> None:
    if width * height > MAX_IMAGE_PIXELS:
        raise InvalidImageError(f"image of {width}x{height} pixels is larger than the "
                                f"{MAX_IMAGE_PIXELS:,}-pixel limit")
    if width == 0 or height == 0:
        raise InvalidImageError("image has no pixels")


def _pil_to_array(img: Image.Image) -> np.ndarray:
    _check_size(img.width, img.height)
    if getattr(img, "n_frames", 1) > 1:
        img.seek(0)                                   # animated: the first frame
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        # 16/32-bit and float grayscale: block-average to the working size in float32 first, so
        # a large high-bit-depth image never becomes a full-size float64 copy.
        return _array_to_unit(_block_mean(np.asarray(img), WORK_SIZE))
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        img = _on_white(img)                           # transparent pixels: a product photo's white
    elif img.mode == "LAB":
        img = img.getchannel("L")                      # CIE lightness is already a grayscale
    elif img.mode not in ("L", "RGB"):
        img = img.convert("RGB")                       # CMYK, YCbCr, palette, 1-bit
    if max(img.size) > WORK_SIZE:
        # Shrink in 8 bits before the float conversion: area averaging keeps thin strokes.
        scale = WORK_SIZE / max(img.size)
        img = img.resize((max(1, round(img.width * scale)), max(1, round(img.height * scale))),
                         Image.Resampling.BOX)
    return np.asarray(img, dtype=np.float32) / 255.0


def _on_white(img: Image.Image) -> Image.Image:
    rgba = img.convert("RGBA")
    return Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba).convert("RGB")


def _block_mean(a: np.ndarray, size: int) -> np.ndarray:
    """Average k x k blocks (k = ceil(longest side / size)) in float32: a cheap exact-area shrink."""
    k = -(-max(a.shape[:2]) // size)
    if k <= 1:
        return a
    h, w = a.shape[0] // k * k, a.shape[1] // k * k
    if h == 0 or w == 0:
        return a[:1, :1]
    return a[:h, :w].reshape(h // k, k, w // k, k).mean(axis=(1, 3), dtype=np.float32)


def _array_to_unit(a: np.ndarray) -> np.ndarray:
    """(H, W), (H, W, 1/3/4) array of any numeric dtype -> (H, W) or (H, W, 3) float in [0, 1]."""
    if a.dtype == object or not (np.issubdtype(a.dtype, np.number) or a.dtype == bool):
        raise InvalidImageError(f"array of dtype {a.dtype} is not an image")
    if a.ndim == 3 and a.shape[-1] == 1:
        a = a[..., 0]
    if a.ndim == 3 and a.shape[-1] == 4:              # RGBA: composite on white
        alpha = _unit_range(a[..., 3])
        a = _unit_range(a[..., :3]) * alpha[..., None] + (1 - alpha[..., None])
    if a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[-1] != 3):
        raise InvalidImageError(f"array of shape {a.shape} is not an image (expected HxW, HxWx1/3/4)")
    if a.size == 0:
        raise InvalidImageError(f"image of shape {a.shape} has no pixels")
    _check_size(a.shape[1], a.shape[0])
    return _unit_range(a)


def _unit_range(a: np.ndarray) -> np.ndarray:
    """Scale to [0, 1] by the values' range: 8-bit and 16-bit conventions kept, others min-max."""
    if a.dtype == bool:
        return a.astype(np.float32)
    if np.issubdtype(a.dtype, np.integer):
        lo, hi = int(a.min(initial=0)), int(a.max(initial=0))
        if lo >= 0:
            # 8-bit and 16-bit files keep their convention; wider integers (PIL's mode "I") are
            # judged by their values, so a 16-bit scan stored as int32 is not divided by 2**31.
            wide = a.dtype.itemsize > 2
            top = (255 if a.dtype.itemsize == 1 or (wide and hi <= 255)
                   else 65535 if a.dtype.itemsize == 2 or hi <= 65535 else None)
            if top:
                return np.clip(a.astype(np.float32) / top, 0.0, 1.0)
    a = a.astype(np.float64, copy=False)
    if not np.isfinite(a).all():
        raise InvalidImageError("image contains NaN or infinite values")
    lo, hi = a.min(initial=0.0), a.max(initial=0.0)
    if lo >= 0.0 and hi <= 1.0:
        return a.astype(np.float32)
    if lo >= 0.0 and hi <= 255.0:
        return (a / 255.0).astype(np.float32)          # float image in the 0..255 convention
    if hi <= lo:
        return np.zeros(a.shape, np.float32)
    # Divide by the magnitude first: hi - lo overflows to inf for values near the float64 limits.
    m = max(abs(lo), abs(hi))
    return np.clip((a / m - lo / m) / (hi / m - lo / m), 0.0, 1.0).astype(np.float32)


def _shrink(a: np.ndarray, size: int) -> np.ndarray:
    """Downsample so the longest side is at most `size` (area averaging keeps thin strokes)."""
    h, w = a.shape[:2]
    if max(h, w) <= size:
        return a
    scale = size / max(h, w)
    new = (max(1, round(w * scale)), max(1, round(h * scale)))
    channels = [a] if a.ndim == 2 else [a[..., c] for c in range(a.shape[-1])]
    out = [np.asarray(Image.fromarray(c.astype(np.float32), mode="F").resize(new, Image.Resampling.BOX))
           for c in channels]
    return out[0] if a.ndim == 2 else np.stack(out, -1)


def luma(a: np.ndarray) -> np.ndarray:
    """(H, W) or (H, W, 3) in [0, 1] -> (H, W) float: ITU-R 601 luma, as PIL's "L"."""
    return a if a.ndim == 2 else a @ segment.LUMA.astype(a.dtype)


# ---------------------------------------------------------------------------------------------
# The Fashion-MNIST look
# ---------------------------------------------------------------------------------------------

def dark_ground_look(gray: np.ndarray, size: int = INPUT_SIZE) -> np.ndarray:
    """(H, W) in [0, 1], a light subject on a dark border -> the look: background level removed,
    cropped to the subject, longest edge fitted to `size`, centred. Fashion-MNIST images are
    already in this form and come out only re-centred."""
    border = np.concatenate([gray[0], gray[-1], gray[:, 0], gray[:, -1]])
    background = float(np.median(border))
    gray = np.clip((gray - background) / max(1.0 - background, 1e-6), 0.0, 1.0)
    return fit_to_frame(gray, gray > 0.05, size)


def fit_to_frame(gray: np.ndarray, keep: np.ndarray, size: int = INPUT_SIZE) -> np.ndarray:
    """Crop `gray` to the bounding box of `keep`, fit its longest edge to `size`, centre on black."""
    ys, xs = np.nonzero(keep)
    out = np.zeros((size, size), dtype=np.float32)
    if len(ys) == 0:
        return out                                     # blank image: nothing to centre
    crop = gray[ys.min():ys.max() + 1, xs.min():xs.max() + 1]
    h, w = crop.shape
    # A crop that already nearly fills the frame (every Fashion-MNIST image) is only centred:
    # resampling it by a few percent would blur the very images the network was trained on.
    scale = 1.0 if 0.8 * size <= max(h, w) <= size else size / max(h, w)
    nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
    if (nh, nw) != (h, w):
        resample = Image.Resampling.BOX if scale < 1 else Image.Resampling.BILINEAR
        crop = np.asarray(Image.fromarray(crop.astype(np.float32), mode="F").resize((nw, nh), resample))
    top, left = (size - nh) // 2, (size - nw) // 2
    out[top:top + nh, left:left + nw] = np.clip(crop, 0.0, 1.0)
    return out


class Seen(NamedTuple):
    """What preprocessing made of an image."""
    look: np.ndarray            # (size, size) float32 in [0, 1]: the network's input before normalisation
    mask: np.ndarray | None     # (H, W) bool over `work`: what was kept, when segmented or read from strokes
    work: np.ndarray            # the input at most WORK_SIZE a side, (H, W) or (H, W, 3) in [0, 1]
    photo: bool                 # segmented from a photo: answered by `FashionCNN.for_photos`
    # (material.MATERIAL,) float32 for a segmented photo: what its region is made of, which the
    # photo verdict weighs beside the network's features; None otherwise.
    material: np.ndarray | None = None

    @property
    def drawing(self) -> bool:
        """Read from a drawing's strokes (strokes.drawing_look): judged against garment drawings."""
        return read_from_strokes(self.mask, self.photo)

    @property
    def material_row(self) -> np.ndarray:
        """`material`, or zeros when there is none: a row of a batch that mixes photos with other
        inputs, which every detector takes (only a photo detector that weighs material reads it)."""
        return self.material if self.material is not None else np.zeros(material.MATERIAL, np.float32)


def read_from_strokes(mask: np.ndarray | None, photo: bool) -> bool:
    """A mask without a photo is a drawing's: what was read from its strokes."""
    return mask is not None and not photo


def look_and_mask(image, size: int = INPUT_SIZE) -> Seen:
    """Any image -> its look, the mask of what was kept, the working image, whether it is a photo,
    and for a photo what its region is made of.

    The mask is given when the garment was segmented from a light or textured ground or read from a
    drawing's strokes; `photo` and `material` only for the former.

    Raises:
        InvalidImageError: the input is not an image (wrong type, shape, NaN, too large).
    """
    work = to_array(image)
    if min(work.shape[:2]) >= MIN_SEGMENT_SIDE and segment.needs_segmentation(work):
        drawn = strokes.drawing_look(work, size)
        if drawn is not None:
            return Seen(*drawn, work, False)
        look, mask = segment.photo_look(work, size)
        return Seen(look, mask, work, True, material.describe(work, mask))
    gray = luma(work)
    border = np.concatenate([gray[0], gray[-1], gray[:, 0], gray[:, -1]])
    if np.median(border) > 0.5:
        gray = 1.0 - gray                              # a small image on a light ground: inverted only
    return Seen(dark_ground_look(gray, size), None, work, False)


def fashion_look(image, size: int = INPUT_SIZE) -> np.ndarray:
    """Any image -> float32 (size, size) in [0, 1]: light garment on black, centred, aspect kept.

    Raises:
        InvalidImageError: the input is not an image (wrong type, shape, NaN, too large).
    """
    return look_and_mask(image, size)[0]


def normalize(look: np.ndarray | torch.Tensor, mean: float = MEAN, std: float = STD) -> torch.Tensor:
    """[0, 1] pixels (..., 28, 28) -> the network's input scale (pass the model config's mean/std)."""
    return (torch.as_tensor(look, dtype=torch.float32) - mean) / std


def preprocess(image, mean: float = MEAN, std: float = STD) -> torch.Tensor:
    """The one path from any image to the model input: (1, 28, 28) float32, normalised.

    Args:
        image: PIL image (any mode and size), numpy array (HxW, HxWx1/3/4) or tensor (HxW, CxHxW).
        mean, std: the model config's normalisation (`model.config.mean`, `.std`).
    Raises:
        InvalidImageError: with a message that says what is wrong with the input.
    """
    return normalize(fashion_look(image), mean, std)[None]      # (1, 28, 28)
