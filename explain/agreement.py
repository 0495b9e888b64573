"""Do the methods agree? Pairwise agreement of several maps of one image, a consensus map, a warning.

Different attribution methods can contradict each other on the same input and model, and a user
who sees one map never learns it (Krishna et al., "The Disagreement Problem in Explainable Machine
Learning", 2022, arXiv:2202.01602). For each pair of the maps shown, two of their measures:

- rank agreement: Spearman's rho of |a| over the garment's pixels (look > INK). Maps are compared
  by magnitude, since half the methods are unsigned; the black background is left out because its
  many near-zero, tied values would make any two maps look alike.
- top-10% overlap ("feature agreement"): the share of the 10% highest-|a| pixels the two maps have
  in common (two random maps share 10% on average).

The consensus map is the mean over methods of each pixel's rank of |a| scaled to [0, 1] (ranks, not
values: the methods' units differ). `localisation` is the share of positive attribution inside a
mask (Quantus' relevance mass accuracy, Arras et al. 2022) for segmented photos.

    >>> report = agreement(maps, look)     # maps {method: (28, 28)}, look (28, 28) in [0, 1]
    >>> report["pairs"], report["consensus"], report["warning"]
"""
from __future__ import annotations

import itertools

import numpy as np

from explain.faithfulness import _ranks, pixel_order, spearman

INK = 0.05            # a look pixel above this is garment (the Fashion-MNIST look's foreground level)
TOP_SHARE = 0.10      # the top-10% of pixels compared by `top_overlap`
MIN_GARMENT_PIXELS = 20   # fewer garment pixels than this: rank agreement over the whole image
# Below this mean pairwise rho the maps are called in disagreement: rho^2 < 0.09, the methods'
# rankings of the garment's pixels share under a tenth of their variance, too little to read any one
# map as "the" explanation. trust.json's agreement matrix (explain/trust.py) gives the pairwise means
# over the test sample, against which this line can be judged.
DISAGREE_RHO = 0.3


def garment_pixels(look: np.ndarray | None, shape: tuple[int, int]) -> np.ndarray:
    """A flat boolean mask of the garment's pixels (look > INK); the whole image for too few or no look."""
    if look is None:
        return np.ones(int(np.prod(shape)), bool)
    mask = np.asarray(look).ravel() > INK
    return mask if mask.sum() >= MIN_GARMENT_PIXELS else np.ones_like(mask)


def top_overlap(a: np.ndarray, b: np.ndarray, share: float = TOP_SHARE) -> float:
    """The share of the top `share` pixels by |a| that are also in the top by |b| (ties in a fixed order)."""
    k = max(1, int(round(share * np.size(a))))
    top_a = set(pixel_order(np.abs(a))[:k].tolist())
    return len(top_a.intersection(pixel_order(np.abs(b))[:k].tolist())) / k


def consensus(maps: dict[str, np.ndarray]) -> np.ndarray:
    """The mean over maps of each pixel's rank of |a| in [0, 1] (28, 28): 1 = every method's top pixel."""
    ranks = [_ranks(np.abs(np.asarray(m, dtype=np.float64)).ravel()) / max(1, np.size(m) - 1) for m in maps.values()]
    return np.mean(ranks, axis=0).reshape(np.shape(next(iter(maps.values())))).astype(np.float32)


def agreement(maps: dict[str, np.ndarray], look: np.ndarray | None = None) -> dict:
    """Pairwise rank agreement and top-10% overlap of `maps` {method: (28, 28)}, their means, the
    consensus map and a one-line warning (None when they agree or fewer than two maps are given)."""
    names = list(maps)
    mask = garment_pixels(look, np.shape(maps[names[0]]))
    pairs = []
    for a, b in itertools.combinations(names, 2):
        ma, mb = np.abs(np.ravel(maps[a])), np.abs(np.ravel(maps[b]))
        pairs.append({"a": a, "b": b, "spearman": spearman(ma[mask], mb[mask]),
                      "top10_overlap": top_overlap(maps[a], maps[b])})
    mean_rho = float(np.mean([p["spearman"] for p in pairs])) if pairs else None
    mean_overlap = float(np.mean([p["top10_overlap"] for p in pairs])) if pairs else None
    warning = None
    if mean_rho is not None and mean_rho < DISAGREE_RHO:
        worst = min(pairs, key=lambda p: p["spearman"])
        warning = (f"The methods disagree (mean rank correlation {mean_rho:.2f} < {DISAGREE_RHO}; "
                   f"{worst['a']} vs {worst['b']}: {worst['spearman']:.2f}): read no single map alone.")
    return {"pairs": pairs, "mean_spearman": mean_rho, "mean_top10_overlap": mean_overlap,
            "consensus": consensus(maps), "warning": warning, "threshold": DISAGREE_RHO,
            "garment_pixels": int(mask.sum())}


def mask_on_look(mask: np.ndarray, size: int = 28) -> np.ndarray:
    """A segmentation mask over the working image (H, W) bool -> where it lands on the look (size, size)
    bool: cropped, fitted and centred exactly as `imaging.segment.look_from_mask` places the garment."""
    from imaging.segment import look_from_mask
    mask = np.asarray(mask, bool)
    return look_from_mask(np.zeros(mask.shape, np.float32), mask, size) > 0.5


def localisation(maps: dict[str, np.ndarray], mask: np.ndarray) -> dict[str, dict]:
    """Per method, the share of positive attribution inside `mask` (28, 28) bool, beside the mask's
    own share of the image (what a map spread evenly would score). Unsigned maps count as |a|."""
    mask = np.asarray(mask, bool)
    area = float(mask.mean())
    out = {}
    for name, a in maps.items():
        positive = np.clip(np.asarray(a, dtype=np.float64), 0, None)
        total = positive.sum()
        out[name] = {"inside": float(positive[mask].sum() / total) if total > 0 else None, "mask_area": area}
    return out
