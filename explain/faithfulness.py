"""Does a map say what the model uses? Cheap faithfulness measures computed from the model alone.

- `deletion_insertion`: RISE's deletion and insertion curves (Petsiuk et al. 2018,
  https://arxiv.org/abs/1806.07421) and their areas. Cost: ONE batched forward pass of
  2 + 2 x (steps - 1) images (56 for the default 28 steps); `deletion_insertion_many` scores
  several maps of one image in one pass.
- `infidelity`: Captum's infidelity (Yeh et al. 2019) with Gaussian pixel noise. Cost: one batched
  forward pass of `n_perturb` images (default 8); no new attribution.
- `sensitivity`: Captum's sensitivity_max (Yeh et al. 2019). Cost: `n_perturb` extra attributions
  (default 4), i.e. 4x the method's own cost: precomputed on a few images only.
- `randomisation_test`: the cascading model-parameter randomisation test (Adebayo et al. 2018,
  https://arxiv.org/abs/1810.03292). Cost: one attribution per method per cascade step (4 steps
  for FashionCNN): precomputed at evaluation time, never per click.

Deleted pixels become the black background (the normalised value of a 0 pixel), which is what
Fashion-MNIST's background is. Insertion starts from a blank (all-background) image rather than
RISE's blurred copy: a blurred garment keeps its silhouette, which alone identifies most classes
here, so the insertion curve would start near its end. Probabilities are the softmax of the single
view (`model(x)`), the quantity the methods attribute (not the flip-averaged served probability).
"""
from __future__ import annotations

import copy

import numpy as np
import torch
import torch.nn as nn

from explain.methods import METHODS, as_batch, background_value, eval_mode, mean_std

STEPS = 28               # deletion/insertion: 29 points, 0..784 pixels in steps of 28
INFIDELITY_SAMPLES = 8
INFIDELITY_NOISE = 0.1   # Gaussian noise std as a fraction of the [0, 1] pixel range
SENSITIVITY_SAMPLES = 4
SENSITIVITY_RADIUS = 0.02  # uniform noise radius in [0, 1] pixel units (Captum's default)


def pixel_order(attribution: np.ndarray, seed: int = 0) -> np.ndarray:
    """Flat pixel indices, most positive attribution first; ties in a fixed random order.

    Ties matter: Grad-CAM is exactly 0 on many pixels and a row-major tie order would favour the
    top of the image.
    """
    a = np.nan_to_num(np.asarray(attribution, dtype=np.float64).ravel())
    tiebreak = np.random.default_rng(seed).permutation(a.size)
    return np.lexsort((tiebreak, -a))              # last key sorts first


def _auc(fractions: np.ndarray, curve: np.ndarray) -> float:
    return float(np.clip(np.trapezoid(curve, fractions), 0.0, 1.0))


@torch.no_grad()
def deletion_insertion(model: nn.Module, x, attribution: np.ndarray, target: int,
                       steps: int = STEPS) -> dict:
    """Deletion and insertion curves of `target`'s probability and their areas (in [0, 1]).

    Deletion: pixels go to the background in attribution order (lower area = more faithful).
    Insertion: from a blank image, pixels come back in the same order (higher = more faithful).

    Args:
        model: logits model; x: one normalised image (1, 28, 28) or (1, 1, 28, 28).
        attribution: (28, 28) map; pixels are taken in decreasing value (>= 0 maps: by magnitude).
        target: the class whose probability is tracked.
        steps: number of equal steps from 0 to all pixels (steps + 1 points).
    Returns:
        {"deletion_auc", "insertion_auc", "fractions", "deletion_curve", "insertion_curve"}.
    """
    return deletion_insertion_many(model, x, {"map": attribution}, target, steps)["map"]


@torch.no_grad()
def deletion_insertion_many(model: nn.Module, x, attributions: dict[str, np.ndarray], target: int,
                            steps: int = STEPS) -> dict[str, dict]:
    """`deletion_insertion` of several maps of one image, {name: curves}, in ONE forward pass.

    Every curve starts and ends at the image itself or the blank image, whatever the map, so those
    two are computed once; only the inner points are map-specific.
    """
    x = as_batch(x)                                               # (1, 1, H, W)
    n_pixels = x[0, 0].numel()
    fractions = np.linspace(0.0, 1.0, steps + 1)
    inner = torch.as_tensor(np.round(fractions[1:-1] * n_pixels).astype(int))      # (S-1,)
    blank = torch.full_like(x, background_value(model))
    batches = [x, blank]
    for attribution in attributions.values():
        if np.shape(attribution) != tuple(x.shape[-2:]):
            raise ValueError(f"attribution of shape {np.shape(attribution)} for an input of {tuple(x.shape[-2:])}")
        order = torch.as_tensor(pixel_order(attribution))
        # rank[p] = position of pixel p in the order; the first k pixels are those with rank < k.
        rank = torch.empty(n_pixels, dtype=torch.long)
        rank[order] = torch.arange(n_pixels)
        taken = (rank[None] < inner[:, None]).view(-1, 1, *x.shape[-2:])          # (S-1, 1, H, W)
        batches += [torch.where(taken, blank, x),          # deletion
                    torch.where(taken, x, blank)]          # insertion
    with eval_mode(model):
        probs = model(torch.cat(batches)).float().softmax(-1)[:, target].numpy().astype(np.float64)
    whole, empty, k = probs[0], probs[1], len(inner)
    out = {}
    for i, name in enumerate(attributions):
        deletion, insertion = np.split(probs[2 + 2 * i * k:2 + 2 * (i + 1) * k], 2)
        deletion, insertion = np.r_[whole, deletion, empty], np.r_[empty, insertion, whole]
        out[name] = {"deletion_auc": _auc(fractions, deletion), "insertion_auc": _auc(fractions, insertion),
                     "fractions": fractions.tolist(), "deletion_curve": deletion.tolist(),
                     "insertion_curve": insertion.tolist()}
    return out


def infidelity(model: nn.Module, x, attribution: np.ndarray, target: int,
               n_perturb: int = INFIDELITY_SAMPLES, seed: int = 0) -> float:
    """Captum's infidelity with Gaussian pixel noise, the attribution rescaled optimally
    (normalize=True, so methods in different units compare). Lower is better. One batched forward."""
    from captum.metrics import infidelity as captum_infidelity
    x = as_batch(x)
    noise_std = INFIDELITY_NOISE / mean_std(model)[1]             # pixel units -> normalised units

    def perturb(inputs: torch.Tensor):
        noise = torch.randn_like(inputs) * noise_std
        return noise, inputs - noise

    attr = torch.as_tensor(np.asarray(attribution, dtype=np.float32)).view_as(x)
    with eval_mode(model), torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        value = captum_infidelity(model, perturb, x, attr, target=target, n_perturb_samples=n_perturb,
                                  max_examples_per_batch=n_perturb, normalize=True)
    return float(value.item())


def sensitivity(model: nn.Module, x, method: str, target: int,
                n_perturb: int = SENSITIVITY_SAMPLES, seed: int = 0) -> float:
    """Captum's sensitivity_max: the largest relative change of the map, ||a(x+d) - a(x)|| / ||a(x)||,
    over `n_perturb` uniform perturbations |d| <= 2% of the pixel range. Lower is steadier.
    Costs n_perturb + 1 attributions."""
    from captum.metrics import sensitivity_max
    x = as_batch(x)
    fn = METHODS[method].fn

    def explanation(inputs, target) -> torch.Tensor:
        # Captum passes a batch of perturbed copies (possibly as a 1-tuple); the registry methods
        # take it whole, with a target per copy.
        inputs = inputs[0] if isinstance(inputs, tuple) else inputs     # (B, 1, H, W)
        targets = torch.as_tensor(target).long().reshape(-1).expand(len(inputs))
        return fn(model, inputs, targets)[:, None]                         # (B, 1, H, W)

    radius = SENSITIVITY_RADIUS / mean_std(model)[1]
    with eval_mode(model), torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        value = sensitivity_max(explanation, x, perturb_radius=radius, n_perturb_samples=n_perturb,
                                max_examples_per_batch=n_perturb, target=target)
    return float(np.nan_to_num(value.item()))


# ---------------------------------------------------------------------------------------------
# Model-parameter randomisation (cascading, top layer first).
# ---------------------------------------------------------------------------------------------

def cascade_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The model's top-level children that hold parameters, output end first.

    FashionCNN: head, stage3, stage2, stage1 (its `forward_children`: the photo BatchNorm is not run
    by forward, so re-initialising it would be a step that changes nothing). Other children are
    assumed to be declared in forward order (true of nn.Sequential-style models).
    """
    names = getattr(model, "forward_children", None) or [name for name, _ in model.named_children()]
    layers = [(name, getattr(model, name)) for name in names if any(True for _ in getattr(model, name).parameters())]
    if not layers:
        raise ValueError(f"{type(model).__name__} has no child modules with parameters to randomise")
    return layers[::-1]


def _reinitialise(module: nn.Module) -> None:
    for m in module.modules():
        if hasattr(m, "reset_parameters"):
            m.reset_parameters()         # BatchNorm: also resets running mean/var


def randomised_models(model: nn.Module, seed: int = 0) -> list[tuple[list[str], nn.Module]]:
    """Cascading randomisation: step k re-initialises the top k+1 layers of a deep copy.

    Returns [(names re-initialised so far, model copy in eval mode), ...]; the caller's model is
    never touched.
    """
    names, steps = [], []
    current = copy.deepcopy(model).eval()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for name, _ in cascade_layers(model):
            current = copy.deepcopy(current)
            _reinitialise(getattr(current, name))
            names.append(name)
            steps.append((list(names), current))
    return steps


def _ranks(v: np.ndarray) -> np.ndarray:
    """Ranks with ties averaged (as scipy.stats.rankdata), without scipy."""
    order = np.argsort(v, kind="stable")
    sorted_v = v[order]
    boundaries = np.flatnonzero(np.diff(sorted_v)) + 1
    starts = np.concatenate([[0], boundaries])
    ends = np.concatenate([boundaries, [len(v)]])
    ranks = np.empty(len(v))
    for s, e in zip(starts, ends):
        ranks[order[s:e]] = (s + e - 1) / 2.0
    return ranks


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation of two maps; 0 when either is constant (no ranking to keep)."""
    ra, rb = _ranks(np.ravel(a).astype(np.float64)), _ranks(np.ravel(b).astype(np.float64))
    if ra.std() == 0 or rb.std() == 0:
        return 0.0
    return float(np.corrcoef(ra, rb)[0, 1])


def randomisation_test(model: nn.Module, x, target: int, methods: list[str] | None = None,
                       seed: int = 0, *, steps: list | None = None,
                       trained_maps: dict[str, np.ndarray] | None = None,
                       pixels: np.ndarray | None = None) -> dict[str, list[float]]:
    """Rank correlation of |map| on the trained model vs on cascading randomised copies.

    |a| is compared (Adebayo et al.'s "absolute value" variant): a map that only flips sign is
    not a changed explanation. A method passes when the correlation falls as layers are
    randomised; one that stays high is explaining the input, not the model.

    Args:
        steps: `randomised_models(model, seed)`, when the caller reuses them over many images.
        trained_maps: {method: map on the trained model}, when the caller already has them.
        pixels: a flat boolean mask of the pixels compared (the garment's: the black background's
            tied near-zero values would otherwise count as kept rank order); default all.
    Returns:
        {method: [rho after randomising the top 1, 2, ... layers]} (see `cascade_layers`).
    """
    from explain.methods import explain
    methods = list(METHODS) if methods is None else list(methods)
    steps = randomised_models(model, seed) if steps is None else steps
    trained_maps = trained_maps or {}
    result = {}
    keep = slice(None) if pixels is None else np.asarray(pixels, bool).ravel()
    for method in methods:
        trained = trained_maps.get(method)
        trained = np.abs(explain(model, x, method, target) if trained is None else trained).ravel()[keep]
        result[method] = [spearman(trained, np.abs(explain(random_model, x, method, target)).ravel()[keep])
                          for _, random_model in steps]
    return result
