"""The Fashion-MNIST network and its config: building, the served forward pass, saving, checked loading.

`ModelConfig` holds every default of the network (nowhere else repeats them), `FashionCNN` builds
from it, and `load_model` rebuilds it from a folder's `config.json` + `model.safetensors` alone,
after checking the config against sane bounds and the safetensors header before any tensor is
allocated. This file imports torch and safetensors only: images become inputs in imaging/, Hub ids
and the out-of-distribution detector beside the weights are read by modelrepo/.

    >>> from model import load_model
    >>> from imaging.preprocess import look_and_mask, normalize
    >>> model = load_model("weights")                        # a local folder in the Hub layout
    >>> seen = look_and_mask(image)
    >>> network = model.for_photos() if seen.photo else model
    >>> probs = network.predict_proba(normalize(seen.look)[None, None])   # (1, 10), as served
"""
from __future__ import annotations

import json
import math
import os
import stat
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import torch
import torch.nn as nn


# The dataset's label order (zalando-datasets/fashion_mnist, label ids 0..9).
CLASS_NAMES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
               "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
# Pixel statistics of the 60,000 training images scaled to [0, 1] (the notebook recomputes them).
MEAN, STD = 0.2860, 0.3530
INPUT_SIZE = 28
ARCH = "fashion-cnn"
CONFIG_FILE, WEIGHTS_FILE = "config.json", "model.safetensors"


@dataclass
class ModelConfig:
    """Everything needed to rebuild the network from its config.json alone; the one home of its defaults."""
    widths: tuple[int, ...] = (16, 64, 192)   # channels of the three stages (28, 14, 7 px)
    dropout: float = 0.1                      # before the classifier
    num_classes: int = 10
    label_names: tuple[str, ...] = CLASS_NAMES
    mean: float = MEAN
    std: float = STD
    input_size: int = INPUT_SIZE
    flip_tta: bool = True                     # average with the mirror image at inference
    temperature: float = 1.0                  # logits / T before softmax, fitted on validation (Guo et al. 2017)
    arch: str = ARCH
    photo_norms: bool = False                 # BatchNorm layers of its own for segmented photos (`for_photos`)
    photo_layers: tuple[str, ...] = ()        # forward_children photos have their own copy of (needs photo_norms)


# Bounds a config must meet before anything is allocated: generous for this architecture, but a
# hostile config.json cannot ask for gigabytes or serve NaN confidences.
MAX_WIDTH, MAX_CLASSES, MAX_LABEL_CHARS, MAX_TEMPERATURE = 1024, 1000, 64, 100.0
MAX_CONFIG_BYTES = 64 * 1024


def check_config(config: ModelConfig) -> None:
    """Raise ValueError naming the first field outside its bounds."""
    def need(ok: bool, what: str) -> None:
        if not ok:
            raise ValueError(what)

    need(config.arch == ARCH, f"unknown architecture {config.arch!r}: this code builds {ARCH!r}")
    w = config.widths
    need(isinstance(w, (list, tuple)) and len(w) == 3
         and all(isinstance(c, int) and not isinstance(c, bool) and 1 <= c <= MAX_WIDTH for c in w),
         f"widths must be 3 integers in 1..{MAX_WIDTH}, got {str(w)[:80]}")
    n = config.num_classes
    need(isinstance(n, int) and not isinstance(n, bool) and 2 <= n <= MAX_CLASSES,
         f"num_classes must be an integer in 2..{MAX_CLASSES}, got {str(n)[:40]}")
    names = config.label_names
    need(isinstance(names, (list, tuple)) and len(names) == n,
         f"{len(names) if isinstance(names, (list, tuple)) else 'no'} label names for {n} classes")
    need(all(isinstance(s, str) and 0 < len(s) <= MAX_LABEL_CHARS for s in names),
         f"label names must be strings of 1..{MAX_LABEL_CHARS} characters")
    for name, lo, hi in (("dropout", 0.0, 0.999), ("mean", -10.0, 10.0), ("std", 1e-6, 10.0),
                         ("temperature", 1e-3, MAX_TEMPERATURE)):
        v = getattr(config, name)
        need(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and lo <= v <= hi,
             f"{name} must be a finite number in [{lo:g}, {hi:g}], got {str(v)[:40]}")
    need(config.input_size == INPUT_SIZE, f"input_size must be {INPUT_SIZE}, got {str(config.input_size)[:40]}")
    for name in ("flip_tta", "photo_norms"):
        v = getattr(config, name)
        need(isinstance(v, bool), f"{name} must be true or false, got {str(v)[:40]}")
    layers = config.photo_layers
    need(isinstance(layers, (list, tuple)) and all(isinstance(c, str) for c in layers)
         and list(layers) == [c for c in FashionCNN.forward_children if c in layers],
         f"photo_layers must name some of {list(FashionCNN.forward_children)} once each, in order, got {str(layers)[:80]}")
    need(config.photo_norms or not layers, "photo_layers needs photo_norms")


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


_D = ModelConfig   # the defaults below are read from the dataclass, never restated


class FashionCNN(nn.Module):
    """A small residual CNN in the style of the ResNet-9 used for fast CIFAR-10 training.

    Three stages at 28, 14 and 7 pixels, each a conv-BN-ReLU that changes width followed by a
    residual block; global average pooling and one linear layer. `last_conv` is the final
    conv stage (7x7), the layer Grad-CAM reads.

    Takes a normalised batch (B, 1, 28, 28); returns logits (B, num_classes).
    """

    def __init__(self, widths=_D.widths, dropout=_D.dropout, num_classes=_D.num_classes,
                 label_names=_D.label_names, mean=_D.mean, std=_D.std, input_size=_D.input_size,
                 flip_tta=_D.flip_tta, temperature=_D.temperature, arch=_D.arch, photo_norms=_D.photo_norms,
                 photo_layers=_D.photo_layers):
        super().__init__()
        self.config = ModelConfig(tuple(widths), float(dropout), int(num_classes), tuple(label_names),
                                  float(mean), float(std), int(input_size), bool(flip_tta),
                                  float(temperature), arch, photo_norms, tuple(photo_layers))
        check_config(self.config)
        for child, module in self.build_children().items():
            setattr(self, child, module)
        if photo_norms:   # one per BatchNorm above, in the same order; unused by `forward`
            self.photo_norms = nn.ModuleList(nn.BatchNorm2d(bn.num_features) for bn in self.norms())
        # Photos' own copies of whole stages (photo_<child>), also unused by `forward`.
        photo_children = self.build_children() if self.config.photo_layers else {}
        for child in self.config.photo_layers:
            setattr(self, f"photo_{child}", photo_children[child])

    def build_children(self) -> dict[str, nn.Module]:
        """New (untrained) modules for each of `forward_children`, from the config."""
        (w1, w2, w3), c = self.config.widths, self.config
        return {"stage1": nn.Sequential(conv_bn(1, w1), Residual(w1)),                     # (B, w1, 28, 28)
                "stage2": nn.Sequential(nn.MaxPool2d(2), conv_bn(w1, w2), Residual(w2)),   # (B, w2, 14, 14)
                "stage3": nn.Sequential(nn.MaxPool2d(2), conv_bn(w2, w3), Residual(w3)),   # (B, w3, 7, 7)
                "head": nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                                      nn.Dropout(c.dropout), nn.Linear(w3, c.num_classes))}

    def norms(self) -> list[nn.BatchNorm2d]:
        """The BatchNorm layers of the network `forward` runs, in order (not the photo ones)."""
        return [m for child in self.forward_children for m in getattr(self, child).modules() if isinstance(m, nn.BatchNorm2d)]

    def for_photos(self) -> "FashionCNN":
        """The network that answers segmented photos: with `photo_norms`, a copy whose BatchNorm
        layers are the photo ones and whose `photo_layers` stages are the photo copies; otherwise
        this network itself.

        Domain-specific BatchNorm (Li et al., "Revisiting Batch Normalization For Practical Domain
        Adaptation", AdaBN, 2016; Chang et al., CVPR 2019): a photo segmented from a phone picture
        differs from a Fashion-MNIST image mostly in its low-level statistics, which BatchNorm's
        statistics and affine maps carry. Photos get their own; the convolutions and the classifier
        are shared, and every other input meets the network exactly as it was trained. With
        `photo_layers`, photos also get their own copy of those stages (a photo branch with more
        capacity than statistics alone), still never run for any other input.
        """
        if not self.config.photo_norms:
            return self
        if self.fused:
            raise RuntimeError("this model's BatchNorm is folded; take for_photos() of the unfused model")
        view = FashionCNN(**(config_dict(self) | {"photo_norms": False, "photo_layers": []}))
        view.load_state_dict({k: v for k, v in self.state_dict().items() if not k.startswith("photo_")})
        for bn, photo in zip(view.norms(), self.photo_norms):
            bn.load_state_dict(photo.state_dict())
        for child in self.config.photo_layers:   # their BatchNorm included: trained with the stage
            getattr(view, child).load_state_dict(getattr(self, f"photo_{child}").state_dict())
        return view.to(next(self.parameters()).device).train(self.training)

    forward_children = ("stage1", "stage2", "stage3", "head")   # what forward runs, in order
    fused = False   # True after optimize_for_inference_: predictions only, never saved

    def optimize_for_inference_(self) -> "FashionCNN":
        """Fold each BatchNorm into the conv before it and switch to channels-last; in place, returns self.

        In eval mode BatchNorm is a per-channel affine map, so conv -> BN is one conv with a bias:
        one pass over the activations fewer per layer. Channels-last is the layout oneDNN's
        convolutions run fastest in (bench/latency.py compares both forms). The outputs match the
        network as trained to float rounding; its state dict does not, so it refuses to be saved.
        """
        from torch.nn.utils.fusion import fuse_conv_bn_eval
        self.eval()
        for block in self.modules():
            if isinstance(block, nn.Sequential) and len(block) == 3 and isinstance(block[1], nn.BatchNorm2d):
                block[0], block[1] = fuse_conv_bn_eval(block[0], block[1]), nn.Identity()
        if self.config.photo_norms:
            del self.photo_norms    # a serving copy answers one kind of input; take for_photos() first
        for child in self.config.photo_layers:
            delattr(self, f"photo_{child}")
        self.fused = True
        return self.to(memory_format=torch.channels_last)

    @property
    def last_conv(self) -> nn.Module:
        """The last convolutional block (output (B, w3, 7, 7)): Grad-CAM's layer."""
        return self.stage3

    @property
    def label_names(self) -> tuple[str, ...]:
        return self.config.label_names

    def forward_stages(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The outputs of stage1, stage2 and stage3 for a normalised batch (B, 1, 28, 28):
        (B, w1, 28, 28), (B, w2, 14, 14), (B, w3, 7, 7)."""
        s1 = self.stage1(x)
        s2 = self.stage2(s1)
        return [s1, s2, self.stage3(s2)]

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The last stage's feature map (B, w3, 7, 7): what the head pools and Grad-CAM reads."""
        return self.forward_stages(x)[-1]

    def forward_head(self, features: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Logits (B, C) from `forward_features`' map; `pre_logits`: the pooled vector (B, w3) the Linear reads."""
        pooled = self.head[:-1](features)                  # pool, flatten, dropout
        return pooled if pre_logits else self.head[-1](pooled)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    # The served forward pass. Every consumer of served answers (predict_proba, the OOD detector,
    # the service's batches, the benches) goes through these three, so they cannot drift apart.

    def served_views(self, x: torch.Tensor) -> torch.Tensor:
        """The views (V*B, 1, 28, 28) the served answer averages: the batch and, with `flip_tta`, its
        mirror after it (V = 2). Garments are left-right symmetric, so the mirror is a second look at
        the same garment; both in one batch, since one forward call costs less than two on a CPU."""
        return torch.cat([x, x.flip(-1)]) if self.config.flip_tta else x

    def served_features(self, x: torch.Tensor) -> torch.Tensor:
        """Globally pooled outputs of the three stages, concatenated, per served view: (V, B, w1 + w2 + w3)
        for a normalised batch (B, 1, 28, 28). The last w3 values are what the head's Linear reads;
        the earlier ones are what the OOD detector reads as well."""
        pooled = torch.cat([s.float().mean((2, 3)) for s in self.forward_stages(self.served_views(x))], 1)
        return pooled.unflatten(0, (-1, len(x)))

    def served_logits(self, features: torch.Tensor) -> torch.Tensor:
        """Logits (V, B, C) from `served_features`' output (the head's Dropout is the identity in eval)."""
        return self.head[-1](features[..., -self.head[-1].in_features:]).float()

    def served_proba(self, features: torch.Tensor) -> torch.Tensor:
        """Probabilities (B, C) from `served_features`' output: logits / temperature, softmax, mean over views."""
        return (self.served_logits(features) / self.config.temperature).softmax(-1).mean(0)

    @torch.no_grad()
    def predict_proba(self, x: torch.Tensor) -> torch.Tensor:
        """Class probabilities (B, C) for a normalised batch (B, 1, 28, 28), as served.

        With `flip_tta`, the average over the image and its mirror. Logits are divided by the
        config's temperature (fitted on validation, Guo et al. 2017). Explanations attribute the
        single-view logits of `forward`, for the class this returns.
        """
        return self.served_proba(self.served_features(x))


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def config_dict(model: FashionCNN) -> dict:
    """The JSON-ready config (tuples as lists), as written to config.json."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(model.config).items()}


# ---------------------------------------------------------------------------------------------
# Saving and loading: config.json + model.safetensors in a folder (modelrepo/ resolves Hub ids).
# Everything is checked before the network is built or a tensor is read; never a pickle.
# ---------------------------------------------------------------------------------------------

class WeightsError(RuntimeError):
    """The weights cannot be loaded; the message names the file and the reason."""


def read_config(path: Path) -> ModelConfig:
    """A bounded read of a regular config.json into a checked ModelConfig (ValueError otherwise)."""
    try:
        info = path.stat()                       # follows a link: /dev/zero behind one is refused here
    except FileNotFoundError:
        raise ValueError("missing") from None
    if not stat.S_ISREG(info.st_mode):
        raise ValueError("not a regular file")
    if info.st_size > MAX_CONFIG_BYTES:
        raise ValueError(f"{info.st_size:,} bytes, more than a config's {MAX_CONFIG_BYTES:,}")
    with open(path, "rb") as f:
        raw = json.loads(f.read(MAX_CONFIG_BYTES + 1))
    if not isinstance(raw, dict):
        raise ValueError("not a JSON object")
    unknown = set(raw) - {f.name for f in fields(ModelConfig)}
    if unknown:
        raise ValueError(f"unknown config keys {sorted(unknown)[:5]}")
    config = ModelConfig(**raw)
    check_config(config)
    return config


def _check_header(path: Path, config: ModelConfig) -> None:
    """The safetensors header must list exactly the tensors this config builds, with their shapes."""
    from safetensors import safe_open
    with torch.device("meta"):                   # shapes only: nothing is allocated
        expected = {k: tuple(v.shape) for k, v in FashionCNN(**asdict(config)).state_dict().items()}
    with safe_open(str(path), framework="pt") as f:
        found = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    if found.keys() != expected.keys():
        missing, extra = sorted(expected.keys() - found.keys()), sorted(found.keys() - expected.keys())
        raise ValueError(f"tensors do not match the config (missing {missing[:3]}, unexpected {extra[:3]})")
    wrong = [k for k in expected if found[k] != expected[k]]
    if wrong:
        k = wrong[0]
        raise ValueError(f"{k} has shape {list(found[k])}, the config needs {list(expected[k])}")


def save_model(model: FashionCNN, folder: str | os.PathLike) -> None:
    """Write config.json (every field of the config) and model.safetensors into `folder`."""
    from safetensors.torch import save_file
    if model.fused:
        raise RuntimeError("this model's BatchNorm is folded for inference; save the unfused model")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(folder / WEIGHTS_FILE), metadata={"format": "pt"})
    (folder / CONFIG_FILE).write_text(json.dumps(config_dict(model), indent=2))


def load_model(folder: str | os.PathLike, device: str | torch.device = "cpu", fuse: bool = False) -> FashionCNN:
    """Rebuild the network from a folder's `config.json` and load its `model.safetensors`; eval mode.

    `fuse=True` returns the serving form (`FashionCNN.optimize_for_inference_`), for predictions
    only. A Hub repo id is resolved to a folder by `modelrepo.folder.open_model`.

    Raises:
        WeightsError: no such folder, missing, oversized or corrupt files, a config out of bounds
            or not matching the weights, non-finite weights.
    """
    from safetensors.torch import load_file
    folder = Path(folder)
    if not folder.is_dir():
        raise WeightsError(f"{folder}: no such folder (a Hub repo id is read by modelrepo.folder.open_model)")
    config_path, weights_path = folder / CONFIG_FILE, folder / WEIGHTS_FILE
    if not weights_path.is_file():
        pickles = [p.name for p in folder.glob("*") if p.suffix in (".bin", ".pt", ".pth", ".ckpt", ".pkl")]
        hint = f" (found {pickles}: pickled checkpoints are refused)" if pickles else ""
        raise WeightsError(f"{weights_path}: no model.safetensors{hint}")
    try:
        config = read_config(config_path)
    except (OSError, ValueError, TypeError, RecursionError) as e:
        raise WeightsError(f"{config_path}: {e}") from None
    try:
        _check_header(weights_path, config)
        state = load_file(str(weights_path), device=str(device))
    except Exception as e:  # a damaged header, a truncated body, a mismatch: one WeightsError
        raise WeightsError(f"{weights_path}: {e}"[:500]) from None
    bad = [k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise WeightsError(f"{weights_path}: non-finite values in {bad[:3]}")
    model = FashionCNN(**asdict(config))
    model.load_state_dict(state, strict=True)
    model = model.to(device).eval()
    return model.optimize_for_inference_() if fuse else model
