"""The per-method trust table, precomputed once at evaluation time (never per click).

For a fixed sample of test images (evaluation/samples.npz, written by train.py) and each method in
`METHODS`: mean deletion/insertion AUC (and the mean curves, for plotting), a random-order
baseline, Captum's infidelity and sensitivity, the cascading randomisation test and the time per
map. The maps of all images come from one batched call per method, with a target per image: the
predicted classes, as the app explains by default. Writes <model_dir>/evaluation/trust.json.

    python -m explain.trust weights            # or outputs/smoke; --help for options

Cost per image and method (see faithfulness.py): one attribution, one batched forward for the
curves, one for infidelity; the randomisation test adds one attribution per cascade step and
sensitivity n_perturb + 1, so those two run on the first `n_randomisation` / `n_sensitivity`
images only. It competes for the same cores as training: run it after training, not beside it.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from explain.faithfulness import (deletion_insertion, infidelity, randomised_models,
                                  randomisation_test, sensitivity, INFIDELITY_SAMPLES,
                                  SENSITIVITY_SAMPLES)
from explain.methods import METHODS, explain_batch, mean_std, resolve_targets

RANDOMISATION_PASS_RHO = 0.5   # a method "passes" when the fully randomised map keeps less rank order


def _mean(values: list[float]) -> float | None:
    return float(np.mean(values)) if values else None


def precompute_trust(model: nn.Module, images_uint8: np.ndarray, labels: np.ndarray,
                     methods: list[str] | None = None, n: int = 100, seed: int = 0, *,
                     n_randomisation: int = 20, n_sensitivity: int = 8, steps: int = 20,
                     progress: bool = False) -> dict:
    """Faithfulness and cost of each method over a fixed sample of images; JSON-ready.

    Args:
        model: the trained model (not modified; the randomisation test works on copies).
        images_uint8: (N, 28, 28) raw test images; they go through `fashion_look` + `normalize`
            (model.py's `preprocess`) exactly as the app's input does.
        labels: (N,) true labels (kept for reference; targets are the predicted classes).
        methods: names from `METHODS` (default: all).
        n: images used (a seeded random subset when N > n, all of them otherwise).
        n_randomisation, n_sensitivity: images (the first of the sample) for the two costly measures.
        steps: deletion/insertion steps (20: 21 points, 39 pixels a step; fewer than
            `deletion_insertion`'s default 28 to keep the whole table to a few minutes).
        progress: print a line every 10 images to stderr.
    Returns:
        {method: {deletion_auc, insertion_auc, mean_deletion_curve, mean_insertion_curve,
                  infidelity, sensitivity, randomisation_rho, randomisation_curve,
                  randomisation_passes, cascade_layers, latency_ms},
         "methods": [names], "random_order": {deletion_auc, insertion_auc, curves},
         "n_images", "fractions", "seconds", "settings": {...}}
    """
    from imaging.preprocess import preprocess
    start = time.perf_counter()
    methods = list(METHODS) if methods is None else list(methods)
    images_uint8, labels = np.asarray(images_uint8), np.asarray(labels)
    if len(images_uint8) != len(labels):
        raise ValueError(f"{len(images_uint8)} images but {len(labels)} labels")
    chosen = np.arange(len(images_uint8))
    if len(chosen) > n:
        chosen = np.sort(np.random.default_rng(seed).choice(len(chosen), n, replace=False))
    mean, std = mean_std(model)
    cascade = randomised_models(model, seed)                       # built once, shared by all images
    layer_names = cascade[-1][0]

    rows = {m: {"del": [], "ins": [], "del_auc": [], "ins_auc": [], "inf": [], "sens": [],
                "rho": [], "ms": []} for m in methods}
    random_rows = {"del": [], "ins": [], "del_auc": [], "ins_auc": []}
    rng = np.random.default_rng(seed)
    fractions = None
    x_all = torch.stack([preprocess(images_uint8[index], mean, std) for index in chosen])   # (N, 1, 28, 28)
    targets = resolve_targets(model, x_all, None)                                         # (N,)
    all_maps = {}
    for method in methods:                 # one batched call per method, a target per image
        t0 = time.perf_counter()
        all_maps[method] = explain_batch(model, x_all, method, targets)                   # (N, 28, 28)
        rows[method]["ms"].append(1000 * (time.perf_counter() - t0) / len(chosen))
    for i in range(len(chosen)):
        x, target = x_all[i:i + 1], int(targets[i])
        maps = {method: all_maps[method][i] for method in methods}
        for method, a in maps.items():
            row = rows[method]
            curves = deletion_insertion(model, x, a, target, steps)
            fractions = curves["fractions"]
            row["del"].append(curves["deletion_curve"])
            row["ins"].append(curves["insertion_curve"])
            row["del_auc"].append(curves["deletion_auc"])
            row["ins_auc"].append(curves["insertion_auc"])
            row["inf"].append(infidelity(model, x, a, target, seed=seed))
            if i < n_sensitivity:
                row["sens"].append(sensitivity(model, x, method, target, seed=seed))
        if i < n_randomisation:
            for method, rhos in randomisation_test(model, x, target, methods, seed, steps=cascade,
                                                   trained_maps=maps).items():
                rows[method]["rho"].append(rhos)
        curves = deletion_insertion(model, x, rng.random(x.shape[-2:]), target, steps)
        random_rows["del"].append(curves["deletion_curve"])
        random_rows["ins"].append(curves["insertion_curve"])
        random_rows["del_auc"].append(curves["deletion_auc"])
        random_rows["ins_auc"].append(curves["insertion_auc"])
        if progress and (i + 1) % 10 == 0:
            print(f"trust: {i + 1}/{len(chosen)} images, {time.perf_counter() - start:.0f} s", file=sys.stderr, flush=True)

    result: dict = {"methods": methods}
    for method, row in rows.items():
        curve = np.mean(row["rho"], axis=0).tolist() if row["rho"] else []
        result[method] = {
            "deletion_auc": _mean(row["del_auc"]), "insertion_auc": _mean(row["ins_auc"]),
            "mean_deletion_curve": np.mean(row["del"], axis=0).tolist(),
            "mean_insertion_curve": np.mean(row["ins"], axis=0).tolist(),
            "infidelity": _mean(row["inf"]), "sensitivity": _mean(row["sens"]),
            "randomisation_rho": curve[-1] if curve else None, "randomisation_curve": curve,
            "randomisation_passes": bool(curve and curve[-1] < RANDOMISATION_PASS_RHO),
            "cascade_layers": layer_names, "latency_ms": float(np.median(row["ms"])),
        }
    result["random_order"] = {
        "deletion_auc": _mean(random_rows["del_auc"]), "insertion_auc": _mean(random_rows["ins_auc"]),
        "mean_deletion_curve": np.mean(random_rows["del"], axis=0).tolist(),
        "mean_insertion_curve": np.mean(random_rows["ins"], axis=0).tolist()}
    result.update({
        "n_images": int(len(chosen)), "fractions": fractions, "seconds": time.perf_counter() - start,
        "settings": {
            "target": "predicted class (argmax of predict_proba)",
            "deletion": "pixels set to the black background in attribution order; lower AUC is better",
            "insertion": "from a blank (black) image, pixels restored in attribution order; higher AUC is better",
            "probability": "softmax of the single-view logits for the target",
            "infidelity": f"Captum infidelity, Gaussian noise std 10% of pixel range, {INFIDELITY_SAMPLES} samples, "
                          "normalize=True; lower is better; all images",
            "sensitivity": f"Captum sensitivity_max, radius 2% of pixel range, {SENSITIVITY_SAMPLES} samples; lower is "
                           f"steadier; first {min(n_sensitivity, len(chosen))} images",
            "randomisation": f"Spearman rho of |a| trained vs cascading re-initialised ({', '.join(layer_names)}); "
                             f"passes when rho < {RANDOMISATION_PASS_RHO} fully randomised; "
                             f"first {min(n_randomisation, len(chosen))} images",
            "latency_ms": f"attribution time per image in one batch of all images ({torch.get_num_threads()} threads)",
            "n_randomisation": int(min(n_randomisation, len(chosen))),
            "n_sensitivity": int(min(n_sensitivity, len(chosen))),
            "steps": steps, "seed": seed,
        }})
    return result


def format_table(trust: dict) -> str:
    """A plain-text table of the per-method summary (for logs and the README)."""
    head = f"{'method':22s} {'del AUC':>8s} {'ins AUC':>8s} {'infid.':>8s} {'sens.':>7s} {'rand rho':>9s} {'ms':>7s}"
    lines = [head, "-" * len(head)]

    def fmt(v, spec):
        return format(v, spec) if v is not None else "-"
    for method in trust["methods"]:
        r = trust[method]
        lines.append(f"{method:22s} {fmt(r['deletion_auc'], '8.3f')} {fmt(r['insertion_auc'], '8.3f')} "
                     f"{fmt(r['infidelity'], '8.4f')} {fmt(r['sensitivity'], '7.3f')} "
                     f"{fmt(r['randomisation_rho'], '9.3f')} {fmt(r['latency_ms'], '7.1f')}")
    r = trust["random_order"]
    lines.append(f"{'(random order)':22s} {r['deletion_auc']:8.3f} {r['insertion_auc']:8.3f}")
    lines.append(f"{trust['n_images']} images, {trust['seconds']:.0f} s")
    return "\n".join(lines)


def write_trust(model_dir: str | Path, model: nn.Module | None = None, **kwargs) -> Path:
    """Read <model_dir>/evaluation/samples.npz, write <model_dir>/evaluation/trust.json.

    Args:
        model_dir: a folder written by train.py (config.json, model.safetensors, evaluation/).
        model: the model already in memory (default: `load_model(model_dir)`).
        **kwargs: passed to `precompute_trust` (n, seed, n_randomisation, n_sensitivity, steps).
    """
    from model import load_model
    folder = Path(model_dir) / "evaluation"
    samples_path = folder / "samples.npz"
    if not samples_path.is_file():
        raise FileNotFoundError(f"{samples_path}: no samples.npz (run train.py's evaluation first)")
    model = load_model(model_dir) if model is None else model
    with np.load(samples_path) as samples:
        images, labels = samples["images"], samples["label"]
    trust = precompute_trust(model, images, labels, **kwargs)
    out = folder / "trust.json"
    out.write_text(json.dumps(trust, indent=1))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("model_dir", nargs="?", default="weights", help="folder with evaluation/samples.npz")
    parser.add_argument("--n", type=int, default=100, help="images from samples.npz")
    parser.add_argument("--n-randomisation", type=int, default=20, help="images for the randomisation test")
    parser.add_argument("--n-sensitivity", type=int, default=8, help="images for sensitivity_max")
    parser.add_argument("--steps", type=int, default=20, help="deletion/insertion steps")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    path = write_trust(args.model_dir, n=args.n, seed=args.seed, n_randomisation=args.n_randomisation,
                       n_sensitivity=args.n_sensitivity, steps=args.steps, progress=True)
    print(format_table(json.loads(path.read_text())))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
