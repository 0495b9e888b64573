"""ROAD: deletion and insertion-like curves with removed pixels filled by noisy linear imputation.

Setting removed pixels to black (faithfulness.deletion_insertion) leaves the removed region's
shape in the image, and that shape can carry the class by itself: a map is then rewarded for the
mask it draws, not for the pixels it ranks (Rong, Leemann, Borisov, Kasneci & Kasneci, "A
Consistent and Efficient Evaluation Strategy for Attribution Methods", ICML 2022,
https://arxiv.org/abs/2202.00449). ROAD fills each removed pixel with the weighted mean of its 8
neighbours (1/6 for the four sides, 1/12 for the corners), solved for all removed pixels at once,
plus a little noise (std 0.01 of the pixel range, as the reference implementation's default), so
the filled region matches its surroundings and tells little about where it was.

Two orders, at removal fractions 10%, 20%, ..., 90% (100% has no pixel left to impute from):
MoRF removes the most relevant pixels first (the probability should fall fast: lower area is
better, like deletion); LeRF removes the least relevant first (it should stay high: higher is
better, the counterpart of insertion). Each area is the mean probability over the fractions.
Cost: one batched conjugate-gradient solve for all fractions, orders and maps, and one batched
forward pass.

    >>> curves = road_many(model, x, {"Grad-CAM": a}, target)     # {"Grad-CAM": {"morf_auc", "lerf_auc", ...}}
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn

from explain.faithfulness import pixel_order
from explain.methods import as_batch, eval_mode, mean_std

FRACTIONS = tuple(round(0.1 * i, 1) for i in range(1, 10))
NOISE = 0.01          # std of the noise added to imputed pixels, in [0, 1] pixel units
NEIGHBOURS = (((-1, 0), 1 / 6), ((1, 0), 1 / 6), ((0, -1), 1 / 6), ((0, 1), 1 / 6),
              ((-1, -1), 1 / 12), ((-1, 1), 1 / 12), ((1, -1), 1 / 12), ((1, 1), 1 / 12))


def _neighbour_sum(v: torch.Tensor) -> torch.Tensor:
    """sum_j w_ij v_j over each pixel's 8 neighbours of (M, 1, H, W), zero outside the image.
    Shifted slices, not conv2d: a float64 convolution is ~100x slower on CPUs."""
    h, w = v.shape[-2:]
    padded = torch.nn.functional.pad(v, (1, 1, 1, 1))
    return sum(weight * padded[..., 1 + dy:1 + dy + h, 1 + dx:1 + dx + w] for (dy, dx), weight in NEIGHBOURS)


def impute(images: torch.Tensor, removed: torch.Tensor, noise: float = 0.0, seed: int = 0,
           tol: float = 1e-8, max_iter: int = 500) -> torch.Tensor:
    """Images (M, H, W) with the `removed` (M, H, W) bool pixels replaced by the solution of
    sum_j w_ij (x_i - x_j) = 0 over each removed pixel's neighbours j inside the image, plus Gaussian
    noise of std `noise` on the imputed pixels only.

    The system is symmetric positive definite and has at most 9 entries a row, so it is solved by
    conjugate gradients for all M images at once, its product being one weighted neighbour sum.
    """
    x = images.double()
    unknown = removed.bool()[:, None]                                      # (M, 1, H, W)
    if (unknown.flatten(1).all(1)).any():
        raise ValueError("every pixel of an image is removed: nothing to impute from")
    conv = _neighbour_sum
    degree = conv(torch.ones_like(x[:1, None]))                           # sum of in-image neighbour weights

    def matvec(v):                                                         # A v on the unknown pixels
        return torch.where(unknown, degree * v - conv(v), 0.0)

    b = torch.where(unknown, conv(torch.where(unknown, 0.0, x[:, None])), 0.0)
    v = torch.zeros_like(b)
    r = b.clone()
    p = r.clone()
    rr = (r * r).sum((1, 2, 3), keepdim=True)
    for _ in range(max_iter):
        if float(rr.max()) <= tol ** 2:
            break
        ap = matvec(p)
        alpha = rr / (p * ap).sum((1, 2, 3), keepdim=True).clamp(min=1e-300)
        v, r = v + alpha * p, r - alpha * ap
        rr_new = (r * r).sum((1, 2, 3), keepdim=True)
        p, rr = r + (rr_new / rr.clamp(min=1e-300)) * p, rr_new
    if noise > 0:
        g = torch.Generator().manual_seed(seed)
        v = v + torch.randn(v.shape, generator=g, dtype=v.dtype) * noise
    return torch.where(unknown, v, x[:, None])[:, 0]


@torch.no_grad()
def road_many(model: nn.Module, x, attributions: dict[str, np.ndarray], target: int,
              fractions=FRACTIONS, seed: int = 0) -> dict[str, dict]:
    """ROAD's MoRF and LeRF curves of `target`'s probability for several maps of one normalised image
    x (1, 28, 28), {name: {"fractions", "morf_curve", "lerf_curve", "morf_auc", "lerf_auc"}}, in one
    forward pass. Probabilities are the softmax of the single view, as in faithfulness.py."""
    x = as_batch(x)                                                   # (1, 1, H, W)
    image = x[0, 0]
    n_pixels = image.numel()
    masks = []
    for attribution in attributions.values():
        if np.shape(attribution) != tuple(image.shape):
            raise ValueError(f"attribution of shape {np.shape(attribution)} for an input of {tuple(image.shape)}")
        most_first = pixel_order(attribution, seed)
        for order in (most_first, most_first[::-1].copy()):           # MoRF, then LeRF
            for f in fractions:
                removed = torch.zeros(n_pixels, dtype=torch.bool)
                removed[torch.as_tensor(order[:int(round(f * n_pixels))])] = True
                masks.append(removed.view(image.shape))
    masks = torch.stack(masks)                                        # (2 * F * maps, H, W)
    noise = NOISE / mean_std(model)[1]                                # pixel units -> normalised units
    batch = impute(image.expand_as(masks), masks, noise, seed).float()[:, None]   # (2 * F * maps, 1, H, W)
    with eval_mode(model):
        probs = model(batch).float().softmax(-1)[:, target].numpy().astype(np.float64)
    k, out = len(fractions), {}
    for i, name in enumerate(attributions):
        morf, lerf = probs[2 * i * k:(2 * i + 1) * k], probs[(2 * i + 1) * k:(2 * i + 2) * k]
        out[name] = {"fractions": list(fractions), "morf_curve": morf.tolist(), "lerf_curve": lerf.tolist(),
                     "morf_auc": float(morf.mean()), "lerf_auc": float(lerf.mean())}
    return out
