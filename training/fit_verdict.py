"""Fit the photo half of the three-way verdict (modelrepo/verdict.py) for a model folder: one command.

Protocol (no photo of the validation split is read):
1. The in-class photos of the photo *train* split (the seven folders with a class), each through the
   serving preprocessing; those the app routes as photos (`Seen.photo`) are used.
2. They are split into the fit part and the held-out *selection* part (`data.photo_selection_split`,
   the split every photo choice of the project uses).
3. Gaussians of the photo network's features, one per folder (one covariance shared by the folders
   with --covariance tied), are fitted on the fit part.
4. The threshold is the --keep quantile of the selection photos' scores: that share of held-out
   garment photos is called a garment photo.
5. The reliability bins (how often the top class was right, by the top probability) are counted on
   the selection photos that pass the threshold: the sentence a visitor reads for a garment photo.

    python -m training.fit_verdict --model weights --photos ../shared/data/clothing_photos
    python -m training.fit_verdict --model weights --out /tmp/verdict      # a trial that leaves weights/ alone

Writes <out>/verdict.safetensors and <out>/verdict.json (default out: the model folder).
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps

from imaging.preprocess import look_and_mask
from model import load_model
from modelrepo import ood
from modelrepo.verdict import FEATURES, PhotoDetector, Verdict
from training import data

# Edges of the reliability bins of the top probability: a few hundred held-out photos fill four
# bins with tens of photos each; finer bins would report noise.
BIN_EDGES = (0.0, 0.5, 0.7, 0.9, 1.0)
IN_CLASS = tuple(f for f, m in data.PHOTO_FOLDERS.items() if m.strict)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--model", default="weights", help="model folder")
    p.add_argument("--photos", default="../shared/data/clothing_photos", help="the photo set (<split>/<folder>/*.jpg)")
    p.add_argument("--out", default=None, help="where the verdict files go (default: the model folder)")
    p.add_argument("--keep", type=float, default=0.95, help="share of held-out selection photos called garment photos")
    p.add_argument("--covariance", choices=("tied", "per-folder"), default="tied",
                   help="one covariance shared by the folders, or one per folder")
    args = p.parse_args(argv)
    args.out = Path(args.out or args.model)
    return args


def photo_looks(items: list[tuple[Path, str]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Looks (N, 28, 28) and whether the app routes each as a photo (N,), as the app sees an upload."""
    looks, routed = [], []
    for path, _ in items:
        with Image.open(path) as img:                 # upright, as the app shows it: EXIF rotation applied
            seen = look_and_mask(ImageOps.exif_transpose(img).convert("RGB"))
        looks.append(seen.look)
        routed.append(seen.photo)
    return torch.from_numpy(np.stack(looks)), torch.tensor(routed)


def fit_detector(network, x: torch.Tensor, groups: torch.Tensor, n_groups: int, tied: bool) -> PhotoDetector:
    """Gaussians of FEATURES over the fit photos' inputs x (N, 1, 28, 28), one per group (N,)."""
    views = ood.views_in_batches(network, x)
    means, whiten, log_prior = ood.fit_gaussians(ood.density_input(network, FEATURES, views, x), groups, n_groups, tied)
    return PhotoDetector(means, whiten, log_prior)


def reliability_bins(top: torch.Tensor, right: torch.Tensor, edges=BIN_EDGES) -> list[dict]:
    """{lo, hi, count, right, accuracy} per bin (lo, hi] of the top probability."""
    bins = []
    for lo, hi in zip(edges[:-1], edges[1:]):
        inside = (top > lo) & (top <= hi)
        n, k = int(inside.sum()), int(right[inside].sum())
        bins.append({"lo": lo, "hi": hi, "count": n, "right": k, "accuracy": k / n if n else None})
    return bins


def fit(args) -> Verdict:
    model = load_model(args.model)
    network = model.for_photos()
    fit_items, sel_items = data.photo_selection_split(args.photos, folders=IN_CLASS)
    items = fit_items + sel_items
    fit_idx, sel_idx = range(len(fit_items)), range(len(fit_items), len(items))
    print(f"[fit_verdict] {len(items)} in-class train photos: {len(fit_idx)} fit, {len(sel_idx)} selection; "
          "preprocessing ...", flush=True)
    looks, routed = photo_looks(items)
    x = ood.as_input(model, looks)
    folders = sorted({f for _, f in items}, key=IN_CLASS.index)
    group = torch.tensor([folders.index(f) for _, f in items])
    fit_idx = torch.tensor([i for i in fit_idx if routed[i]])
    sel_idx = torch.tensor([i for i in sel_idx if routed[i]])
    detector = fit_detector(network, x[fit_idx], group[fit_idx], len(folders), args.covariance == "tied")
    probs, scores = detector.predict(network, x[sel_idx])
    detector.threshold = ood.threshold_at(scores, args.keep)
    passed = ~detector.flag(scores)
    names = [model.label_names[i] for i in probs.argmax(1).tolist()]
    right = torch.tensor([n in data.PHOTO_FOLDERS[items[i][1]].strict for n, i in zip(names, sel_idx.tolist())])
    bins = reliability_bins(probs.amax(1)[passed], right[passed])
    meta = {"protocol": {"photos": str(args.photos), "split": "train", "folders": list(IN_CLASS),
                         "fit_photos": len(fit_idx), "selection_photos": len(sel_idx), "keep": args.keep,
                         "covariance": args.covariance, "routed_as_photos": int(routed.sum()),
                         "not_routed_as_photos": int((~routed).sum()),
                         "selection_split": "training.data.photo_selection_split "
                                            f"({data.SELECTION_FRACTION:.0%} of each folder, seed {data.SELECTION_SEED})",
                         "selection_strict_accuracy_passed": float(right[passed].double().mean())},
            "reliability_of": "selection photos called garment photos"}
    return Verdict(detector, folders, bins, meta)


def main(argv=None) -> None:
    args = parse_args(argv)
    verdict = fit(args)
    verdict.save(args.out, weights=Path(args.model) / "model.safetensors")
    Verdict.load(args.out)                                   # what was written reads back
    print(f"[fit_verdict] threshold {verdict.detector.threshold:.6g}; wrote {args.out}/verdict.*", flush=True)
    for b in verdict.bins:
        print(f"[fit_verdict]   top in ({b['lo']:.0%}, {b['hi']:.0%}]: {b['count']} photos, right {b['accuracy']}")


if __name__ == "__main__":
    main()
