"""Batched training augmentation of normalised images (B, 1, 28, 28): no Python loop per image.

`augment` is the Fashion-MNIST recipe (shift, mirror, random erasing). `photo_like` imitates what
segmenting a phone photo leaves behind (uneven light across the garment, a soft or slightly turned
outline, a ragged edge), so a network trained on product photos also reads segmented photos.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def augment(x: torch.Tensor, args, gen: torch.Generator, background: float) -> torch.Tensor:
    """Batched augmentation of (B, 1, 28, 28): shift, mirror, random erasing. No Python loop per image.

    `background` is the normalised value of a black pixel, used to fill what a shift uncovers.
    """
    b, _, h, w = x.shape
    dev = x.device

    def rand(*shape):
        return torch.rand(*shape, generator=gen).to(dev)

    if args.translate:
        t = args.translate
        padded = F.pad(x, (t, t, t, t), value=background)                          # (B, 1, H+2t, W+2t)
        dy, dx = (torch.randint(0, 2 * t + 1, (2, b), generator=gen)).to(dev)
        rows = (dy[:, None] + torch.arange(h, device=dev))[:, :, None]             # (B, H, 1)
        cols = (dx[:, None] + torch.arange(w, device=dev))[:, None, :]             # (B, 1, W)
        x = padded[torch.arange(b, device=dev)[:, None, None], 0, rows, cols][:, None]
    if args.flip:
        x = torch.where((rand(b) < args.flip)[:, None, None, None], x.flip(-1), x)
    if args.erase:
        # Erase a rectangle of 2-40% of the image, aspect 0.3-3.3, with noise (as torchvision's RandomErasing).
        area = (0.02 + 0.38 * rand(b)) * h * w
        aspect = torch.exp(math.log(0.3) + (math.log(3.3) - math.log(0.3)) * rand(b))
        eh = (area * aspect).sqrt().clamp(1, h).round()
        ew = (area / aspect).sqrt().clamp(1, w).round()
        y0 = (rand(b) * (h - eh + 1)).floor()
        x0 = (rand(b) * (w - ew + 1)).floor()
        ys = torch.arange(h, device=dev)[None, :, None]
        xs = torch.arange(w, device=dev)[None, None, :]
        box = ((ys >= y0[:, None, None]) & (ys < (y0 + eh)[:, None, None])
               & (xs >= x0[:, None, None]) & (xs < (x0 + ew)[:, None, None]))
        box &= (rand(b) < args.erase)[:, None, None]
        noise = torch.randn(x.shape, generator=gen).to(dev)
        x = torch.where(box[:, None], noise, x)
    return x


def photo_like(x: torch.Tensor, p: float, gen: torch.Generator, background: float) -> torch.Tensor:
    """With probability p per image: a linear light gradient, a rotation of up to 15 degrees and a
    blur, each drawn independently; (B, 1, H, W) normalised, `background` the value of black."""
    b = len(x)
    dev = x.device

    def rand(*shape):
        return torch.rand(*shape, generator=gen).to(dev)

    chosen = (rand(b) < p)[:, None, None, None]
    if not chosen.any():
        return x
    y = x - background                                                   # black at 0, so scaling keeps it black
    h, w = x.shape[-2:]
    # Uneven light: gain 1 +- 0.4 along a random direction (a lamp on one side, a fold's shadow).
    angle = 2 * math.pi * rand(b)
    ys = torch.linspace(-1, 1, h, device=dev)[None, :, None]
    xs = torch.linspace(-1, 1, w, device=dev)[None, None, :]
    ramp = angle.cos()[:, None, None] * xs + angle.sin()[:, None, None] * ys          # (B, H, W)
    y = y * (1 + 0.4 * (2 * rand(b) - 1)[:, None, None] * ramp)[:, None]
    # A slightly turned garment (the photo is rarely square to it).
    theta = (2 * rand(b) - 1) * math.radians(15)
    affine = torch.zeros(b, 2, 3, device=dev)
    affine[:, 0, 0], affine[:, 0, 1] = theta.cos(), -theta.sin()
    affine[:, 1, 0], affine[:, 1, 1] = theta.sin(), theta.cos()
    y = F.grid_sample(y, F.affine_grid(affine, list(y.shape), align_corners=False), align_corners=False)
    # A soft outline: a 3x3 blur on half of them.
    blurred = F.avg_pool2d(y, 3, stride=1, padding=1, count_include_pad=False)
    y = torch.where((rand(b) < 0.5)[:, None, None, None], blurred, y)
    return torch.where(chosen, y + background, x)
