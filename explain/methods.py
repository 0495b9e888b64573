"""The registry of attribution methods (`METHODS`) and the one entry point `explain()`.

Every method has the same call shape, `fn(model, x, targets) -> (B, 28, 28)` float32 tensor, for
a normalised batch x (B, 1, 28, 28) and one target class per image (B,), as Captum's `attribute`
takes them; the app's controls and the tests both read `METHODS`. Adding a method is one function
and one registry entry.

Captum objects are created inside each function and dropped when it returns, so no hook or
graph outlives a call (the memory test in tests/test_explain.py runs hundreds of calls).
Defaults are chosen for 28x28 grayscale inputs and for a few batched forward passes per call:

    >>> from explain import explain, METHODS
    >>> a = explain(model, preprocess(image), "Integrated Gradients")   # (28, 28) numpy, target = predicted
    >>> maps = explain_batch(model, x, "Grad-CAM", targets)            # (B, 28, 28) for x (B, 1, 28, 28)
"""
from __future__ import annotations

import contextlib
import copy
import warnings
import weakref
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
import torch.nn as nn

import model as model_py

# Defaults (documented in each method's `description`).
IG_STEPS = 32            # Gauss-Legendre steps, all in one batch
SMOOTHGRAD_SAMPLES = 16  # noisy copies, all in one batch
SMOOTHGRAD_NOISE = 0.15  # noise std as a fraction of the [0, 1] pixel range (Smilkov et al.: 10-20%)
OCCLUSION_WINDOW = 4     # px; with stride 3 the 9x9 = 81 windows tile 28 px exactly (0..27)
OCCLUSION_STRIDE = 3


@dataclass(frozen=True)
class MethodSpec:
    """One attribution method as the UI and the tests see it."""
    name: str
    fn: Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]   # (model, x (B,1,28,28), targets (B,)) -> (B, 28, 28)
    signed: bool          # does the sign mean something? False: the map is >= 0 (shown as |a|)
    description: str      # one line for the UI, with the defaults
    reference: str        # paper or documentation link


# ---------------------------------------------------------------------------------------------
# Helpers: the background value, eval mode, a ReLU-safe copy of the model.
# ---------------------------------------------------------------------------------------------

def mean_std(model: nn.Module) -> tuple[float, float]:
    """The model's normalisation constants: model.config, else model.MEAN/STD, else model.py's."""
    config = getattr(model, "config", None)
    if config is not None and hasattr(config, "mean") and hasattr(config, "std"):
        return float(config.mean), float(config.std)
    return float(getattr(model, "MEAN", model_py.MEAN)), float(getattr(model, "STD", model_py.STD))


def background_value(model: nn.Module) -> float:
    """The normalised value of a black (0) pixel: Fashion-MNIST's background, our baseline."""
    mean, std = mean_std(model)
    return (0.0 - mean) / std


@contextlib.contextmanager
def eval_mode(model: nn.Module):
    """Run in eval mode (BatchNorm running stats, no dropout), restoring the caller's mode."""
    was_training = model.training
    if was_training:
        model.eval()
    try:
        yield model
    finally:
        if was_training:
            model.train()


# Methods that replace ReLU gradients (DeepLift, Guided Backprop) hook every ReLU; an in-place
# ReLU (FashionCNN's) overwrites the tensor the hooks hold. They run on a copy whose ReLUs are
# not in place, made once per model object and dropped with it (weak keys: no leak). The copy
# shares nothing with the caller's model; it is rebuilt if the weights change (version check).
_relu_safe_copies: "weakref.WeakKeyDictionary[nn.Module, tuple[int, nn.Module]]" = weakref.WeakKeyDictionary()


def _weights_version(model: nn.Module) -> int:
    # Changes whenever a parameter or buffer is written in place (optimizer step, load_state_dict).
    return hash(tuple((t.data_ptr(), t._version) for t in list(model.parameters()) + list(model.buffers())))


def relu_safe(model: nn.Module) -> nn.Module:
    """`model` if it has no in-place ReLU, else a cached eval-mode copy with out-of-place ReLUs."""
    if not any(isinstance(m, nn.ReLU) and m.inplace for m in model.modules()):
        return model
    version = _weights_version(model)
    cached = _relu_safe_copies.get(model)
    if cached is not None and cached[0] == version:
        return cached[1]
    safe = copy.deepcopy(model).eval()
    for m in safe.modules():
        if isinstance(m, nn.ReLU):
            m.inplace = False
    _relu_safe_copies[model] = (version, safe)
    return safe


@contextlib.contextmanager
def _quiet():
    """Captum warns on every call that it sets hooks on ReLUs; that is expected here."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        yield


def _input(x: torch.Tensor) -> torch.Tensor:
    """A private copy of the input that records gradients; the caller's tensor is never touched."""
    return x.detach().clone().requires_grad_(True)


def _map(attr: torch.Tensor) -> torch.Tensor:
    """(B, 1, H, W) attribution -> (B, H, W) float32, detached."""
    return attr.detach()[:, 0].float()


# ---------------------------------------------------------------------------------------------
# The methods. Each: (model, x (B, 1, 28, 28) normalised, targets (B,) long) -> (B, 28, 28) float32.
# ---------------------------------------------------------------------------------------------

def saliency(model: nn.Module, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    from captum.attr import Saliency
    return _map(Saliency(model).attribute(_input(x), target=target, abs=True))


def integrated_gradients(model: nn.Module, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    from captum.attr import IntegratedGradients
    baseline = torch.full_like(x, background_value(model))                # a black image
    attr = IntegratedGradients(model).attribute(
        _input(x), baselines=baseline, target=target,
        n_steps=IG_STEPS, internal_batch_size=IG_STEPS * len(x))          # one (32B, 1, 28, 28) pass
    return _map(attr)


def smoothgrad(model: nn.Module, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    from captum.attr import Saliency
    _, std = mean_std(model)
    # Noise is set in pixel units and converted to the normalised scale the model sees. One fixed
    # draw (in a forked RNG, so the caller's random stream is untouched), shared by every image:
    # a click is repeatable and an image's map does not depend on the batch it came in.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        noise = torch.randn(SMOOTHGRAD_SAMPLES, *x.shape[1:]) * (SMOOTHGRAD_NOISE / std)   # (S, 1, 28, 28)
    noisy = (x[None] + noise[:, None]).flatten(0, 1)                                      # (S*B, 1, 28, 28)
    grads = Saliency(model).attribute(_input(noisy), target=target.repeat(SMOOTHGRAD_SAMPLES), abs=True)
    return _map(grads.unflatten(0, (SMOOTHGRAD_SAMPLES, len(x))).mean(0))                  # one (16B, ...) pass


def grad_cam(model: nn.Module, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    from captum.attr import LayerAttribution, LayerGradCam
    layer = getattr(model, "last_conv", None)
    if not isinstance(layer, nn.Module):
        raise ValueError(f"Grad-CAM needs a model with a `last_conv` layer; {type(model).__name__} has none")
    cam = LayerGradCam(model, layer).attribute(_input(x), target=target,
                                               relu_attributions=True)    # (B, 1, h, w), h = 7 for FashionCNN
    cam = LayerAttribution.interpolate(cam, tuple(x.shape[-2:]), "bilinear")   # (B, 1, 28, 28)
    return _map(cam)


def occlusion(model: nn.Module, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    from captum.attr import Occlusion
    side = x.shape[-1]
    n_windows = ((side - OCCLUSION_WINDOW) // OCCLUSION_STRIDE + 1) ** 2
    with torch.no_grad():
        attr = Occlusion(model).attribute(
            _input(x), sliding_window_shapes=(1, OCCLUSION_WINDOW, OCCLUSION_WINDOW),
            strides=(1, OCCLUSION_STRIDE, OCCLUSION_STRIDE), baselines=background_value(model),
            target=target, perturbations_per_eval=n_windows)               # one (81B, 1, 28, 28) pass
    return _map(attr)


def deeplift(model: nn.Module, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    from captum.attr import DeepLift
    net = relu_safe(model)
    baseline = torch.full_like(x, background_value(model))
    with _quiet():
        attr = DeepLift(net).attribute(_input(x), baselines=baseline, target=target)
    return _map(attr)


def guided_backprop(model: nn.Module, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    from captum.attr import GuidedBackprop
    net = relu_safe(model)
    with _quiet():
        attr = GuidedBackprop(net).attribute(_input(x), target=target)
    return _map(attr).abs()


METHODS: dict[str, MethodSpec] = {spec.name: spec for spec in (
    MethodSpec("Saliency", saliency, signed=False,
               description="|gradient| of the class score w.r.t. each pixel (one backward pass).",
               reference="https://arxiv.org/abs/1312.6034"),
    MethodSpec("Integrated Gradients", integrated_gradients, signed=True,
               description=f"Gradients integrated from a black image to the input ({IG_STEPS} steps, one batch); "
                           "sums to the score change.",
               reference="https://arxiv.org/abs/1703.01365"),
    MethodSpec("SmoothGrad", smoothgrad, signed=False,
               description=f"|gradient| averaged over {SMOOTHGRAD_SAMPLES} noisy copies "
                           f"(noise std {SMOOTHGRAD_NOISE:.0%} of the pixel range).",
               reference="https://arxiv.org/abs/1706.03825"),
    MethodSpec("Grad-CAM", grad_cam, signed=False,
               description="Last conv layer's activations weighted by their mean gradient, ReLU, "
                           "upsampled bilinearly from 7x7.",
               reference="https://arxiv.org/abs/1610.02391"),
    MethodSpec("Occlusion", occlusion, signed=True,
               description=f"Score drop when a {OCCLUSION_WINDOW}x{OCCLUSION_WINDOW} patch is blacked out "
                           f"(stride {OCCLUSION_STRIDE}, 81 patches in one batch).",
               reference="https://arxiv.org/abs/1311.2901"),
    MethodSpec("DeepLift", deeplift, signed=True,
               description="Contributions relative to a black image (Rescale rule); sums to the score change.",
               reference="https://arxiv.org/abs/1704.02685"),
    MethodSpec("Guided Backprop", guided_backprop, signed=False,
               description="|gradient| with negative gradients stopped at every ReLU (one backward pass).",
               reference="https://arxiv.org/abs/1412.6806"),
)}


# ---------------------------------------------------------------------------------------------
# The entry point.
# ---------------------------------------------------------------------------------------------

def as_batch(x) -> torch.Tensor:
    """(28, 28), (1, 28, 28) or (B, 1, 28, 28) tensor or array -> (B, 1, H, W) float32 tensor."""
    x = torch.as_tensor(x, dtype=torch.float32).detach()
    if x.ndim == 2:
        x = x[None]
    if x.ndim == 3:
        x = x[None]
    if x.ndim != 4 or x.shape[1] != 1 or len(x) == 0:
        raise ValueError(f"expected images of shape (1, 28, 28) or (B, 1, 28, 28), got {tuple(x.shape)}")
    return x


def class_probabilities(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """(B, C) probabilities as served: model.predict_proba if it has one, else softmax(logits)."""
    with torch.no_grad():
        if hasattr(model, "predict_proba"):
            return model.predict_proba(x).float()
        return model(x).float().softmax(-1)


def _class_index(t) -> int:
    """An int-like class index (Python or numpy int, 0-d integer tensor); never a bool or a float."""
    if isinstance(t, torch.Tensor) and t.ndim == 0 and not t.is_floating_point() and t.dtype != torch.bool:
        return int(t)
    if isinstance(t, (bool, np.bool_)) or not isinstance(t, (int, np.integer)):
        raise ValueError(f"target must be a class index (int), got {str(t)[:60]}")
    return int(t)


def resolve_targets(model: nn.Module, x: torch.Tensor, targets) -> torch.Tensor:
    """targets None -> the predicted classes; one int or B ints -> a checked (B,) long tensor."""
    if targets is None:
        return class_probabilities(model, x).argmax(-1)
    if isinstance(targets, torch.Tensor) and targets.ndim == 1:
        targets = list(targets)
    values = [_class_index(t) for t in (targets if isinstance(targets, (list, tuple, np.ndarray)) else [targets])]
    if len(values) != len(x):
        raise ValueError(f"{len(values)} targets for {len(x)} images")
    # The config says how many classes there are; other models are asked (one forward pass).
    num_classes = getattr(getattr(model, "config", None), "num_classes", None)
    if num_classes is None:
        num_classes = class_probabilities(model, x[:1]).shape[-1]
    for t in values:
        if not 0 <= t < num_classes:
            raise ValueError(f"target {t} is out of range: the model has {num_classes} classes (0..{num_classes - 1})")
    return torch.tensor(values, dtype=torch.long)


def resolve_target(model: nn.Module, x: torch.Tensor, target) -> int:
    """One image's target: None -> the predicted class; otherwise checked against the classes."""
    return int(resolve_targets(model, as_batch(x)[:1], target)[0])


def explain_batch(model: nn.Module, x, method: str, targets=None) -> np.ndarray:
    """Attribution maps (B, 28, 28) of `method` for a batch and one target per image (default: predicted).

    Args:
        model: a FashionCNN or any nn.Module mapping (B, 1, 28, 28) to logits; Grad-CAM also
            needs `model.last_conv`.
        x: normalised images (B, 1, 28, 28) (or one image, (1, 28, 28)).
        method: a key of `METHODS`.
        targets: B class indices (or one int for a single image); None -> argmax of
            `model.predict_proba` (else of the logits).
    Returns:
        (B, 28, 28) float32 array, always finite; >= 0 for methods with `signed=False`.
    Raises:
        ValueError: unknown method (the message names it and the known ones), bad target or shape.
    """
    spec = METHODS.get(method)
    if spec is None:
        raise ValueError(f"unknown attribution method {str(method)[:60]!r}; known: {', '.join(METHODS)}")
    x = as_batch(x)
    with eval_mode(model):
        targets = resolve_targets(model, x, targets)
        attr = spec.fn(model, x, targets)
    # A non-finite value (overflow on an extreme input) carries no ranking information: zero it.
    a = np.nan_to_num(attr.detach().cpu().numpy().astype(np.float32), nan=0.0, posinf=0.0, neginf=0.0)
    assert a.shape == (len(x), *x.shape[-2:]) and np.isfinite(a).all(), f"{method}: bad maps {a.shape}"
    return a


def explain(model: nn.Module, x, method: str, target: int | None = None) -> np.ndarray:
    """The map (28, 28) of `method` for one image x (1, 28, 28) and `target` (default: predicted)."""
    x = as_batch(x)
    if len(x) != 1:
        raise ValueError(f"explain takes one image, got {tuple(x.shape)}: use explain_batch for a batch")
    return explain_batch(model, x, method, None if target is None else [target])[0]
