"""The Fashion-MNIST network, its config, the class names and the one preprocessing path.

This file owns everything needed to *use* the model outside training: `FashionCNN`, the
`preprocess` function that both `train.py` and `app.py` call (so train and serve cannot drift),
and `load_model`, which reads weights from safetensors only. It imports nothing from training or
UI code.

    >>> from model import load_model, preprocess
    >>> model = load_model("weights")            # a local folder or a Hub repo id
    >>> x = preprocess(pil_image)                # (1, 28, 28), normalised
    >>> probs = model(x[None]).softmax(-1)       # (1, 10)
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from huggingface_hub import PyTorchModelHubMixin
from PIL import Image, ImageOps

# The dataset's label order (zalando-datasets/fashion_mnist, label ids 0..9).
CLASS_NAMES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
               "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
# Pixel statistics of the 60,000 training images scaled to [0, 1] (measured: see README).
MEAN, STD = 0.2860, 0.3530
INPUT_SIZE = 28
ARCH = "fashion-cnn"

# Images with more pixels than this are refused before decoding (a decompression bomb guard).
MAX_IMAGE_PIXELS = 40_000_000
# Preprocessing works on at most this many pixels a side: enough to find the garment's box.
_WORK_SIZE = 256


class InvalidImageError(ValueError):
    """The input cannot be turned into a model input; the message says why, for a person."""


@dataclass
class ModelConfig:
    """Everything needed to rebuild the network from its config.json alone."""
    widths: tuple[int, ...] = (32, 64, 128)   # channels of the three stages (28, 14, 7 px)
    dropout: float = 0.1                      # before the classifier
    num_classes: int = 10
    label_names: tuple[str, ...] = CLASS_NAMES
    mean: float = MEAN
    std: float = STD
    input_size: int = INPUT_SIZE
    flip_tta: bool = True                     # average with the mirror image at inference
    temperature: float = 1.0                  # logits / T before softmax, fitted on validation (Guo et al. 2017)
    arch: str = ARCH


def conv_bn(c_in: int, c_out: int) -> nn.Sequential:
    # bias=False: BatchNorm's shift makes a conv bias redundant.
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
                         nn.BatchNorm2d(c_out), nn.ReLU(inplace=True))


class Residual(nn.Module):
    """x + f(x): two 3x3 conv-BN-ReLU layers at constant width (ResNet, He et al. 2016)."""

    def __init__(self, width: int):
        super().__init__()
        self.body = nn.Sequential(conv_bn(width, width), conv_bn(width, width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class FashionCNN(nn.Module, PyTorchModelHubMixin,
                 library_name="pytorch", license="mit", pipeline_tag="image-classification",
                 tags=["fashion-mnist", "image-classification", "captum"]):
    """A small residual CNN in the style of the ResNet-9 used for fast CIFAR-10 training.

    Three stages at 28, 14 and 7 pixels, each a conv-BN-ReLU that changes width followed by a
    residual block; global average pooling and one linear layer. `last_conv` is the final
    conv stage (7x7), the layer Grad-CAM reads.

    Takes a normalised batch (B, 1, 28, 28); returns logits (B, num_classes).
    """

    def __init__(self, widths=(32, 64, 128), dropout=0.1, num_classes=10,
                 label_names=CLASS_NAMES, mean=MEAN, std=STD, input_size=INPUT_SIZE, flip_tta=True,
                 temperature=1.0, arch=ARCH):
        super().__init__()
        if arch != ARCH:
            raise ValueError(f"unknown architecture {arch!r}: this code builds {ARCH!r}")
        if len(label_names) != num_classes:
            raise ValueError(f"{len(label_names)} label names for {num_classes} classes")
        self.config = ModelConfig(tuple(widths), float(dropout), int(num_classes),
                                  tuple(label_names), float(mean), float(std), int(input_size),
                                  bool(flip_tta), float(temperature), arch)
        w1, w2, w3 = widths
        self.stage1 = nn.Sequential(conv_bn(1, w1), Residual(w1))                       # (B, w1, 28, 28)
        self.stage2 = nn.Sequential(nn.MaxPool2d(2), conv_bn(w1, w2), Residual(w2))     # (B, w2, 14, 14)
        self.stage3 = nn.Sequential(nn.MaxPool2d(2), conv_bn(w2, w3), Residual(w3))     # (B, w3, 7, 7)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                                  nn.Dropout(dropout), nn.Linear(w3, num_classes))

    fused = False   # True after optimize_for_inference_: predictions only, never saved

    def optimize_for_inference_(self) -> "FashionCNN":
        """Fold each BatchNorm into the conv before it and switch to channels-last; in place, returns self.

        In eval mode BatchNorm is a per-channel affine map, so conv -> BN is one conv with a bias:
        one pass over the activations fewer per layer. Channels-last is the layout oneDNN's
        convolutions run fastest in. Together they take a batch-1 forward pass of the shipped network
        from 2.0 to 1.45 ms here (bench/results/latency.md). The outputs match the network as trained to float
        rounding; its state dict does not, so an optimised model refuses to be saved.
        """
        from torch.nn.utils.fusion import fuse_conv_bn_eval
        self.eval()
        for block in self.modules():
            if isinstance(block, nn.Sequential) and len(block) == 3 and isinstance(block[1], nn.BatchNorm2d):
                block[0], block[1] = fuse_conv_bn_eval(block[0], block[1]), nn.Identity()
        self.fused = True
        return self.to(memory_format=torch.channels_last)

    def _save_pretrained(self, save_directory) -> None:
        if self.fused:
            raise RuntimeError("this model's BatchNorm is folded for inference; save the unfused model")
        super()._save_pretrained(save_directory)

    @property
    def last_conv(self) -> nn.Module:
        """The last convolutional block (output (B, w3, 7, 7)): Grad-CAM's layer."""
        return self.stage3

    @property
    def label_names(self) -> tuple[str, ...]:
        return self.config.label_names

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.stage3(self.stage2(self.stage1(x))))

    def view_logits(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (V, B, C) of the views `predict_proba` averages: the image and, with `flip_tta`,
        its mirror (V = 2), for a normalised batch (B, 1, 28, 28)."""
        if not self.config.flip_tta:
            return self(x).float()[None]
        # Both views in one batch: one forward call costs less than two on a CPU.
        return self(torch.cat([x, x.flip(-1)])).float().unflatten(0, (2, len(x)))

    @torch.no_grad()
    def predict_proba(self, x: torch.Tensor) -> torch.Tensor:
        """Class probabilities (B, C) for a normalised batch (B, 1, 28, 28), as served.

        With `flip_tta`, the average over the image and its mirror: garments are left-right
        symmetric, so this is free accuracy (measured in the README). Logits are divided by the
        config's temperature (fitted on validation by train.py). Explanations attribute the
        single-view logits of `forward`, for the class this returns.
        """
        return (self.view_logits(x) / self.config.temperature).softmax(-1).mean(0)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# ---------------------------------------------------------------------------------------------
# Preprocessing: any image -> the Fashion-MNIST look -> normalised (1, 28, 28) tensor.
# Fashion-MNIST was made by trimming the background, resizing the longest edge to 28 px, centring
# and negating (Xiao et al. 2017, section 2). `fashion_look` follows those steps so that a photo of
# a garment on a white background looks to the network like the images it was trained on.
# ---------------------------------------------------------------------------------------------

def _to_gray_array(image) -> np.ndarray:
    """PIL image, numpy array or tensor -> float64 array (H, W) in [0, 1]."""
    if isinstance(image, Image.Image):
        return _pil_to_gray(image)
    if isinstance(image, torch.Tensor):
        image = image.detach().cpu()
        if image.ndim == 4 and image.shape[0] == 1:
            image = image[0]
        if image.ndim == 3 and image.shape[0] in (1, 3, 4):   # CHW -> HWC
            image = image.permute(1, 2, 0)
        image = image.numpy()
    if not isinstance(image, np.ndarray):
        raise InvalidImageError(f"expected an image (PIL, numpy array or tensor), got {type(image).__name__}")
    return _array_to_gray(image)


def _pil_to_gray(img: Image.Image) -> np.ndarray:
    if img.width * img.height > MAX_IMAGE_PIXELS:
        raise InvalidImageError(f"image of {img.width}x{img.height} pixels is larger than the "
                                f"{MAX_IMAGE_PIXELS:,}-pixel limit")
    if img.width == 0 or img.height == 0:
        raise InvalidImageError("image has no pixels")
    if getattr(img, "n_frames", 1) > 1:
        img.seek(0)                           # animated: classify the first frame
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        return _array_to_gray(np.asarray(img))  # 16/32-bit grayscale: keep the full range
    if img.mode in ("L", "RGB", "RGBA", "LA") and max(img.size) > _WORK_SIZE:
        # A phone photo: shrink in 8 bits before the float conversion, the area averaging that
        # `_shrink` would otherwise do in float64; grayscale first when no alpha needs compositing.
        if img.mode == "RGB":
            img = img.convert("L")
        scale = _WORK_SIZE / max(img.size)
        img = img.resize((max(1, round(img.width * scale)), max(1, round(img.height * scale))),
                         Image.Resampling.BOX)
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        # Transparent pixels become white, as a product photo's background would be.
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(white, rgba)
    return np.asarray(img.convert("L"), dtype=np.float64) / 255.0


def _array_to_gray(a: np.ndarray) -> np.ndarray:
    if a.dtype == object or not (np.issubdtype(a.dtype, np.number) or a.dtype == bool):
        raise InvalidImageError(f"array of dtype {a.dtype} is not an image")
    if a.ndim == 3 and a.shape[-1] == 1:
        a = a[..., 0]
    if a.ndim == 3 and a.shape[-1] == 4:      # RGBA: composite on white
        alpha = _unit_range(a[..., 3])
        a = _unit_range(a[..., :3]) * alpha[..., None] + (1 - alpha[..., None])
    if a.ndim == 3 and a.shape[-1] == 3:
        a = _unit_range(a) @ np.array([0.299, 0.587, 0.114])   # ITU-R 601 luma, as PIL's "L"
    if a.ndim != 2:
        raise InvalidImageError(f"array of shape {a.shape} is not an image (expected HxW, HxWx1/3/4)")
    if a.size == 0:
        raise InvalidImageError(f"image of shape {a.shape} has no pixels")
    if a.size > MAX_IMAGE_PIXELS:
        raise InvalidImageError(f"image of {a.shape[1]}x{a.shape[0]} pixels is larger than the "
                                f"{MAX_IMAGE_PIXELS:,}-pixel limit")
    return _unit_range(a)


def _unit_range(a: np.ndarray) -> np.ndarray:
    """Scale by dtype: integers by their maximum, floats already in [0, 1] kept, others min-max."""
    if a.dtype == bool:
        return a.astype(np.float64)
    if np.issubdtype(a.dtype, np.integer):
        info = np.iinfo(a.dtype)
        top = 255 if info.max >= 255 and a.max(initial=0) <= 255 and a.dtype.itemsize == 1 else info.max
        return np.clip(a.astype(np.float64) / top, 0.0, 1.0)
    a = a.astype(np.float64)
    if not np.isfinite(a).all():
        raise InvalidImageError("image contains NaN or infinite values")
    lo, hi = a.min(initial=0.0), a.max(initial=0.0)
    if lo >= 0.0 and hi <= 1.0:
        return a
    if lo >= 0.0 and hi <= 255.0:
        return a / 255.0                      # float image in the 0..255 convention
    if hi <= lo:
        return np.zeros_like(a)
    # Divide by the magnitude first: hi - lo overflows to inf for values near the float64 limits.
    m = max(abs(lo), abs(hi))
    return np.clip((a / m - lo / m) / (hi / m - lo / m), 0.0, 1.0)


def _shrink(gray: np.ndarray, size: int) -> np.ndarray:
    """Downsample so the longest side is at most `size` (area averaging keeps thin strokes)."""
    h, w = gray.shape
    if max(h, w) <= size:
        return gray
    scale = size / max(h, w)
    img = Image.fromarray(gray.astype(np.float32), mode="F")
    return np.asarray(img.resize((max(1, round(w * scale)), max(1, round(h * scale))),
                                 Image.Resampling.BOX), dtype=np.float64)


def fashion_look(image, size: int = INPUT_SIZE) -> np.ndarray:
    """Any image -> float32 (size, size) in [0, 1]: light garment on black, centred, aspect kept.

    Steps: grayscale; make the background dark (invert when the border is light); subtract the
    background level; crop to the garment's bounding box; resize the longest edge to `size`;
    paste in the centre. A Fashion-MNIST image comes out unchanged up to a shift of a pixel or two
    (its box is centred), so training images take this same path at no cost.

    Raises:
        InvalidImageError: the input is not an image (wrong type, shape, NaN, too large).
    """
    gray = _shrink(_to_gray_array(image), _WORK_SIZE)           # (H, W) in [0, 1]
    border = np.concatenate([gray[0], gray[-1], gray[:, 0], gray[:, -1]])
    if np.median(border) > 0.5:
        gray, border = 1.0 - gray, 1.0 - border                    # dark garment on light ground
    background = float(np.median(border))
    gray = np.clip((gray - background) / max(1.0 - background, 1e-6), 0.0, 1.0)
    ys, xs = np.nonzero(gray > 0.05)
    out = np.zeros((size, size), dtype=np.float32)
    if len(ys) == 0:
        return out                                                 # blank image: nothing to centre
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


def normalize(look: np.ndarray | torch.Tensor, mean: float = MEAN, std: float = STD) -> torch.Tensor:
    """[0, 1] pixels (..., 28, 28) -> the network's input scale."""
    return (torch.as_tensor(look, dtype=torch.float32) - mean) / std


def preprocess(image, mean: float = MEAN, std: float = STD) -> torch.Tensor:
    """The one path from any image to the model input: (1, 28, 28) float32, normalised.

    Args:
        image: PIL image (any mode and size), numpy array (HxW, HxWx1/3/4) or tensor (HxW, CxHxW).
    Raises:
        InvalidImageError: with a message that says what is wrong with the input.
    """
    return normalize(fashion_look(image), mean, std)[None]      # (1, 28, 28)


# ---------------------------------------------------------------------------------------------
# Loading: config.json + model.safetensors, from a folder or a Hub repo id. Never a pickle.
# ---------------------------------------------------------------------------------------------

class WeightsError(RuntimeError):
    """The weights cannot be loaded; the message names the file and the reason."""


HUB_FILES = ("config.json", "model.safetensors")


def resolve_model_dir(source: str | os.PathLike, timeout: float = 20.0, extra_patterns: tuple[str, ...] = ()) -> Path:
    """A local folder as is; otherwise a Hub repo id, downloaded (config + safetensors, plus `extra_patterns`).

    huggingface_hub reads its timeouts once, at import, and retries; a Hub that hangs or answers
    5xx could stall a caller for minutes. A daemon thread bounds the wait to `timeout` seconds.

    Raises:
        WeightsError: the Hub did not answer in time, or refused (network, auth, unknown repo).
    """
    path = Path(source)
    if path.is_dir():
        return path
    import threading
    from huggingface_hub import snapshot_download
    result: dict = {}

    def fetch():
        try:
            result["folder"] = Path(snapshot_download(str(source), allow_patterns=[*HUB_FILES, *extra_patterns]))
        except Exception as e:  # network, auth, missing repo: all end in one WeightsError below
            result["error"] = e

    worker = threading.Thread(target=fetch, name="hub-download", daemon=True)
    worker.start()
    worker.join(timeout)
    if worker.is_alive():
        raise WeightsError(f"the Hub did not answer within {timeout:.0f} s for {str(source)!r}")
    if "error" in result:
        e = result["error"]
        first = str(e).splitlines()[0] if str(e) else ""
        raise WeightsError(f"could not download {str(source)!r} from the Hub: {type(e).__name__}: {first}")
    return result["folder"]


def load_model(source: str | os.PathLike, device: str | torch.device = "cpu", fuse: bool = False) -> FashionCNN:
    """Rebuild the network from `config.json` and load `model.safetensors`; eval mode.

    `fuse=True` returns the serving form (`FashionCNN.optimize_for_inference_`: BatchNorm folded
    into the convolutions, channels-last): faster, for predictions only.

    Raises:
        WeightsError: missing or corrupt files, a config that does not match the weights, an
            unknown architecture, or (for a repo id) a Hub that cannot be reached.
    """
    from safetensors.torch import load_file
    folder = resolve_model_dir(source)
    config_path, weights_path = folder / "config.json", folder / "model.safetensors"
    if not weights_path.is_file():
        pickles = [p.name for p in folder.glob("*") if p.suffix in (".bin", ".pt", ".pth", ".ckpt", ".pkl")]
        hint = f" (found {pickles}: pickled checkpoints are refused)" if pickles else ""
        raise WeightsError(f"{weights_path}: no model.safetensors{hint}")
    try:
        config = json.loads(config_path.read_text())
        known = {f.name for f in fields(ModelConfig)}
        unknown = set(config) - known
        if unknown:
            raise ValueError(f"unknown config keys {sorted(unknown)}")
        model = FashionCNN(**config)
    except (OSError, ValueError, TypeError) as e:
        raise WeightsError(f"{config_path}: {e}") from e
    try:
        state = load_file(str(weights_path), device=str(device))
    except Exception as e:
        raise WeightsError(f"{weights_path}: not a readable safetensors file ({e})") from e
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise WeightsError(f"{weights_path}: does not match {config_path.name} ({first} ...)") from e
    model = model.to(device).eval()
    return model.optimize_for_inference_() if fuse else model


def model_config_dict(model: FashionCNN) -> dict:
    """The JSON-ready config (tuples as lists), as written to config.json."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(model.config).items()}
