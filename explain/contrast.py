"""Contrast maps: "evidence for A over B", the attribution of logit(A) - logit(B).

The map a visitor asking "why Shirt, not T-shirt/top?" wants is the one that separates the two
classes (contrastive explanations; pytorch-grad-cam's FinerCAM compares a class with its nearest
rivals in the same spirit): pixels that raise A's logit and B's alike cancel. Softmax is invariant
to adding one number to every logit, so the logit difference is exactly what decides between the
two classes.

The registry's methods attribute one output of a network; `LogitDifference` is a network whose
output A is logit(A) - logit(B), so every method runs on it unchanged. Only signed methods
(`METHODS[name].signed`) support a contrast: a map shown as |a| cannot say which of the two classes
a pixel argues for. Integrated Gradients, DeepLift and Occlusion are linear in the output they
attribute, so swapping A and B negates their maps (tests/test_explain_contrast.py checks it).

    >>> maps = contrast_maps(model, x, a=6, b=0)     # {method: (28, 28)}: red = for Shirt over T-shirt/top
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn

from explain.methods import METHODS, as_batch, explain_batch, relu_safe

CONTRAST_METHODS = tuple(name for name, spec in METHODS.items() if spec.signed)


class LogitDifference(nn.Module):
    """logits - logits[:, b]: output a is logit(a) - logit(b) (B, C); b's own output is 0.

    Every column keeps the (B, C) shape the methods expect (Integrated Gradients and Occlusion
    enlarge the batch internally, so a per-image column choice would not survive them). It reads
    the network's ReLU-safe copy, so methods that hook ReLUs need no copy of this wrapper.
    """

    def __init__(self, model: nn.Module, b: int):
        super().__init__()
        self.net = relu_safe(model)
        self.b = int(b)
        self.config = getattr(model, "config", None)      # mean/std for the baselines, num_classes

    @property
    def last_conv(self) -> nn.Module:
        return self.net.last_conv

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.net(x)                                # (B, C)
        return logits - logits[:, self.b:self.b + 1]


def contrast_map(model: nn.Module, x, method: str, a: int, b: int) -> np.ndarray:
    """The map (B, 28, 28) of `method` for logit(a) - logit(b) of images x (B, 1, 28, 28) (or one (1, 28, 28)).

    Raises:
        ValueError: a method that cannot show a contrast (unsigned), a == b, or classes out of range.
    """
    if method not in CONTRAST_METHODS:
        raise ValueError(f"{str(method)[:60]!r} cannot show a contrast; signed methods can: {', '.join(CONTRAST_METHODS)}")
    x = as_batch(x)
    num_classes = model.config.num_classes
    for c in (a, b):
        if isinstance(c, bool) or not isinstance(c, (int, np.integer)) or not 0 <= c < num_classes:
            raise ValueError(f"class {str(c)[:20]} is out of range: the model has {num_classes} classes")
    if a == b:
        raise ValueError(f"a contrast needs two different classes, got {a} twice")
    return explain_batch(LogitDifference(model, b).eval(), x, method, [int(a)] * len(x))


def contrast_maps(model: nn.Module, x, a: int, b: int, methods=CONTRAST_METHODS) -> dict[str, np.ndarray]:
    """{method: (28, 28) map of logit(a) - logit(b)} for one image x (1, 28, 28), signed methods only."""
    return {m: contrast_map(model, x, m, a, b)[0] for m in methods if m in CONTRAST_METHODS}
