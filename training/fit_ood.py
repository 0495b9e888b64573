"""Fit the out-of-distribution detector of a trained model folder, choosing its score on validation,
and write it into a folder: ood.safetensors, ood.json and its record, evaluation/ood.json.

Protocol (modelrepo/ood.py has the scores and their sources):
1. Statistics are fitted on the Fashion-MNIST training split minus validation (`split_train_val`
   with the run's --val-size and --seed), and, with --photo-train, on the in-class photos of that
   photo set's train split, which the photo-trained weights saw: each under the class the network
   gives it among its folder's classes, with the features of the network that answers photos.
2. Every candidate score is compared on validation: the validation images against an OOD proxy
   (training/ood_proxy.py) made of families that are none of bench/'s reported sets. The score
   with the highest mean AUROC over the proxy families is chosen, unless a simpler one (earlier in
   ood.SCORES) is behind it by no more than the proxy's sampling noise (a paired bootstrap).
3. Its threshold is the --ood-keep quantile of the validation scores. The detector is written and
   read back; bench/ood.py then measures it on the reported sets (test images, MNIST, noise, ...).

    python train.py --fit-ood --model weights --dataset ../shared/data/fashion_mnist --photo-train ../shared/data/clothing_photos
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from model import WEIGHTS_FILE, FashionCNN, load_model
from modelrepo import artefacts, ood
from training.config import DataConfig, OODConfig
from training.data import load_images, load_photo_looks, split_train_val
from training.ood_proxy import proxy_families


def auroc(in_scores: torch.Tensor, out_scores: torch.Tensor) -> float:
    """Probability that an OOD image scores above an in-distribution one (ties count half)."""
    a, b = in_scores.double().numpy(), out_scores.double().numpy()
    values = np.concatenate([a, b])
    _, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
    mid_rank = np.cumsum(counts) - (counts - 1) / 2                  # average rank of each tied value
    rank_sum = mid_rank[inverse[len(a):]].sum()
    return float((rank_sum - len(b) * (len(b) + 1) / 2) / (len(a) * len(b)))


def fpr_at_95_tpr(in_scores: torch.Tensor, out_scores: torch.Tensor) -> float:
    """Fraction of OOD images that pass at the threshold passing 95% of the in-distribution ones."""
    return float((out_scores <= torch.quantile(in_scores.double(), 0.95)).double().mean())


def fit_inputs(model: FashionCNN, data: DataConfig) -> dict:
    """What the statistics are fitted on: normalised inputs (N, 1, 28, 28), their served views
    (V, N, F) and classes (N,); with the validation looks and raw images, and the counts."""
    looks, labels, raw = load_images(data.dataset, "train")
    train_idx, val_idx = split_train_val(len(looks), data.val_size, data.seed)
    if data.train_limit:
        train_idx = train_idx[:data.train_limit]
    print(f"[fit-ood] features of {len(train_idx)} training images ...", flush=True)
    x, y = ood.as_input(model, looks[train_idx]), labels[train_idx]
    views, n_photos = ood.views_in_batches(model, x), 0
    if data.photo_train:
        # The weights were trained on these photos: they are in distribution by construction.
        photo_looks, allowed, _ = load_photo_looks(data.photo_train, "train")
        photo_net = model.for_photos()
        photo_x = ood.as_input(model, photo_looks)
        photo_y = photo_net.predict_proba(photo_x).masked_fill(~allowed, -1.0).argmax(1)
        views = torch.cat([views, ood.views_in_batches(photo_net, photo_x)], 1)
        x, y, n_photos = torch.cat([x, photo_x]), torch.cat([y, photo_y]), len(photo_x)
    return {"x": x, "views": views, "labels": y, "val_looks": looks[val_idx], "val_raw": raw[val_idx.numpy()],
            "fit_images": len(train_idx), "photo_fit_images": n_photos}


def compare_on_validation(model, train_views, train_x, train_labels, val_looks, proxy) -> tuple[dict, dict, dict]:
    """Every candidate fitted on the same training features; AUROC / FPR@95 against each proxy family.

    Returns the table, the detectors and each candidate's scores {"validation": (N,), family: (n,)}.
    """
    val_x = ood.as_input(model, val_looks)
    val_views = ood.views_in_batches(model, val_x)
    proxy_inputs = {k: ood.as_input(model, v) for k, v in proxy.items()}
    proxy_views = {k: ood.views_in_batches(model, x) for k, x in proxy_inputs.items()}
    table, detectors, scores = {}, {}, {}
    for name in ood.SCORES:
        det = ood.fit_statistics(model, train_views, train_x, train_labels, name)
        s = {"validation": det.score_views(model, val_views, val_x)}
        s |= {k: det.score_views(model, proxy_views[k], proxy_inputs[k]) for k in proxy}
        rows = {k: {"auroc": auroc(s["validation"], s[k]), "fpr_at_95_tpr": fpr_at_95_tpr(s["validation"], s[k])}
                for k in proxy}
        table[name] = {"families": rows, "mean_auroc": float(np.mean([r["auroc"] for r in rows.values()])),
                       "min_auroc": min(r["auroc"] for r in rows.values())}
        detectors[name], scores[name] = det, s
        print(f"[fit-ood] {name:12s} mean proxy AUROC {table[name]['mean_auroc']:.4f}", flush=True)
    return table, detectors, scores


def choose(table: dict, scores: dict, resamples: int, rng: np.random.Generator) -> tuple[str, dict]:
    """The score with the highest mean proxy AUROC, or the simplest (first in ood.SCORES) of those tied with it.

    A score is tied with the best when the best's lead over it is within the proxy's sampling noise:
    the 2.5% quantile of the lead over `resamples` paired bootstrap resamples (the same validation
    and proxy images drawn for every score) is at or below 0. Returns the choice and each simpler
    score's lead interval [2.5%, 97.5%].
    """
    best = max(table, key=lambda n: table[n]["mean_auroc"])
    simpler = [n for n in ood.SCORES[:ood.SCORES.index(best)] if n in table]
    leads = paired_bootstrap_leads(scores, best, simpler, resamples, rng)
    intervals = {n: [float(q) for q in np.quantile(leads[n], [0.025, 0.975])] for n in simpler}
    return next((n for n in simpler if intervals[n][0] <= 0), best), intervals


def paired_bootstrap_leads(scores: dict, best: str, others: list[str], resamples: int,
                           rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Mean proxy AUROC of `best` minus that of each other score, per resample (resamples,)."""
    sizes = {k: len(v) for k, v in scores[best].items()}
    leads = {n: np.empty(resamples) for n in others}
    for i in range(resamples):
        picks = {k: torch.from_numpy(rng.integers(0, n, n)) for k, n in sizes.items()}
        mean = {n: np.mean([auroc(scores[n]["validation"][picks["validation"]], scores[n][k][picks[k]])
                            for k in picks if k != "validation"]) for n in [best, *others]}
        for n in others:
            leads[n][i] = mean[best] - mean[n]
    return leads


def fit_candidates(model: FashionCNN, data: DataConfig, cfg: OODConfig) -> tuple[dict, dict, dict]:
    """Every candidate detector fitted and compared (nothing written): the candidates {name: detector},
    the chosen one's name with its threshold set, and the record of the choice."""
    fit = fit_inputs(model, data)
    proxy = proxy_families(fit["val_raw"], cfg.proxy_size, data.seed)
    table, detectors, scores = compare_on_validation(model, fit["views"], fit["x"], fit["labels"], fit["val_looks"],
                                                     proxy)
    chosen, leads = choose(table, scores, cfg.bootstrap, np.random.default_rng(data.seed))
    detectors[chosen].threshold = ood.threshold_at(scores[chosen]["validation"], cfg.keep)
    record = {"protocol": {"fit_images": fit["fit_images"], "photo_fit_images": fit["photo_fit_images"],
                           "validation_images": len(fit["val_looks"]), "keep": cfg.keep,
                           "proxy_families": {k: len(v) for k, v in proxy.items()}, "seed": data.seed,
                           "bootstrap_resamples": cfg.bootstrap, "lead_of_best_ci95": leads},
              "validation": table, "chosen": chosen, "threshold": detectors[chosen].threshold}
    return detectors, chosen, record


def fit_detector(model_dir: str | Path, out: str | Path, data: DataConfig, cfg: OODConfig, command: str) -> dict:
    """Fit the detector of the weights in `model_dir` and write it, with its record, into `out`
    (ood.safetensors, ood.json, evaluation/ood.json); returns the record."""
    model_dir, out = Path(model_dir), Path(out)
    model = load_model(model_dir)
    detectors, chosen, record = fit_candidates(model, data, cfg)
    detectors[chosen].save(out, weights=model_dir / WEIGHTS_FILE)
    detector = ood.OODDetector.load(out, model)         # the record describes what was written
    record = {"command": command, "model": str(model_dir)} | record | {"threshold": detector.threshold}
    (out / artefacts.EVALUATION).mkdir(parents=True, exist_ok=True)
    (out / artefacts.EVALUATION / artefacts.OOD).write_text(json.dumps(record, indent=2) + "\n")
    print(f"[fit-ood] chose {chosen!r}, threshold {detector.threshold:.6g}; wrote {out}", flush=True)
    return record
