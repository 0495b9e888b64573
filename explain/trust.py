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
                                  randomisation_test, sensitivity, spearman, INFIDELITY_SAMPLES,
                                  SENSITIVITY_SAMPLES)
from explain.agreement import garment_pixels, top_overlap
from explain.methods import METHODS, class_probabilities, explain_batch, mean_std, resolve_targets
from explain.road import road_many

RANDOMISATION_PASS_RHO = 0.5   # a method "passes" when the fully randomised map keeps less rank order
# A map for the runner-up class that keeps this much rank order of the predicted class's map does
# not say which class it explains: Guided Backprop reconstructs the image whatever the class
# (Nie, Zhang & Patel, ICML 2018, arXiv:1805.07039). Maps of different classes of one image share the
# garment's outline, so honest methods correlate too; 0.9 leaves them room and catches a copy.
CLASS_PASS_RHO = 0.9


def _mean(values: list[float]) -> float | None:
    return float(np.mean(values)) if values else None


def precompute_trust(model: nn.Module, images_uint8: np.ndarray, labels: np.ndarray,
                     methods: list[str] | None = None, n: int = 100, seed: int = 0, *,
                     n_randomisation: int = 20, n_sensitivity: int = 8, steps: int = 20, n_road: int = 20,
                     progress: bool = False) -> dict:
    """Faithfulness and cost of each method over a fixed sample of images; JSON-ready.

    Args:
        model: the trained model (not modified; the randomisation test works on copies).
        images_uint8: (N, 28, 28) raw test images; they go through `fashion_look` + `normalize`
            (model.py's `preprocess`) exactly as the app's input does.
        labels: (N,) true labels (kept for reference; targets are the predicted classes).
        methods: names from `METHODS` (default: all).
        n: images used (a seeded random subset when N > n, all of them otherwise).
        n_randomisation, n_sensitivity, n_road: images (the first of the sample) for the costly measures.
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
    looks = (x_all[:, 0] * std + mean).numpy()                                             # (N, 28, 28)
    pixels = [garment_pixels(look, look.shape) for look in looks]                          # flat, per image
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
                                                   trained_maps=maps, pixels=pixels[i]).items():
                rows[method]["rho"].append(rhos)
        curves = deletion_insertion(model, x, rng.random(x.shape[-2:]), target, steps)
        random_rows["del"].append(curves["deletion_curve"])
        random_rows["ins"].append(curves["insertion_curve"])
        random_rows["del_auc"].append(curves["deletion_auc"])
        random_rows["ins_auc"].append(curves["insertion_auc"])
        if progress and (i + 1) % 10 == 0:
            print(f"trust: {i + 1}/{len(chosen)} images, {time.perf_counter() - start:.0f} s", file=sys.stderr, flush=True)

    checks = class_sensitivity(model, x_all, all_maps, pixels)
    road = road_rows(model, x_all[:n_road], targets[:n_road], {m: v[:n_road] for m, v in all_maps.items()}, seed)
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
            "class_rho": _mean(checks[method]), "class_passes": bool(checks[method] and _mean(checks[method]) < CLASS_PASS_RHO),
            "road_morf_auc": _mean(road[method]["morf"]), "road_lerf_auc": _mean(road[method]["lerf"]),
        }
    result["random_order"] = {
        "deletion_auc": _mean(random_rows["del_auc"]), "insertion_auc": _mean(random_rows["ins_auc"]),
        "road_morf_auc": _mean(road[RANDOM]["morf"]), "road_lerf_auc": _mean(road[RANDOM]["lerf"]),
        "mean_deletion_curve": np.mean(random_rows["del"], axis=0).tolist(),
        "mean_insertion_curve": np.mean(random_rows["ins"], axis=0).tolist()}
    result["agreement"] = agreement_matrix(all_maps, pixels)
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
            "randomisation": f"Spearman rho of |a| on the garment's pixels, trained vs cascading re-initialised "
                             f"({', '.join(layer_names)}); "
                             f"passes when rho < {RANDOMISATION_PASS_RHO} fully randomised; "
                             f"first {min(n_randomisation, len(chosen))} images",
            "class_sensitivity": f"Spearman rho of |a| on the garment's pixels, map for the predicted class vs the "
                                 f"runner-up class; passes when the mean rho < {CLASS_PASS_RHO}; all images",
            "road": "ROAD (Rong et al. 2022): pixels removed most relevant first (MoRF, lower is better) or least "
                    "relevant first (LeRF, higher is better), filled by noisy linear imputation; mean "
                    "probability over 10%..90% removed; all images",
            "agreement": "per pair of methods, mean over images of Spearman rho of |a| on the garment's pixels and "
                         "of the top-10% overlap",
            "latency_ms": f"attribution time per image in one batch of all images ({torch.get_num_threads()} threads)",
            "n_randomisation": int(min(n_randomisation, len(chosen))),
            "n_sensitivity": int(min(n_sensitivity, len(chosen))), "n_road": int(min(n_road, len(chosen))),
            "steps": steps, "seed": seed,
        }})
    return result


RANDOM = "(random order)"


def class_sensitivity(model: nn.Module, x_all: torch.Tensor, all_maps: dict[str, np.ndarray],
                      pixels: list[np.ndarray]) -> dict[str, list[float]]:
    """Per method, per image: rho of |map| for the predicted class vs for the runner-up class (one batched call)."""
    runner_up = class_probabilities(model, x_all).topk(2, dim=1).indices[:, 1]
    out = {}
    for method, maps in all_maps.items():
        other = explain_batch(model, x_all, method, runner_up)
        out[method] = [spearman(np.abs(a).ravel()[m], np.abs(b).ravel()[m]) for a, b, m in zip(maps, other, pixels)]
    return out


def road_rows(model: nn.Module, x_all: torch.Tensor, targets: torch.Tensor, all_maps: dict[str, np.ndarray],
              seed: int) -> dict[str, dict[str, list[float]]]:
    """Per method (and a random order, RANDOM), per image: ROAD's MoRF and LeRF areas."""
    rng = np.random.default_rng(seed)
    rows = {name: {"morf": [], "lerf": []} for name in [*all_maps, RANDOM]}
    for i in range(len(x_all)):
        maps = {m: all_maps[m][i] for m in all_maps} | {RANDOM: rng.random(x_all.shape[-2:])}
        for name, r in road_many(model, x_all[i], maps, int(targets[i]), seed=seed).items():
            rows[name]["morf"].append(r["morf_auc"])
            rows[name]["lerf"].append(r["lerf_auc"])
    return rows


def agreement_matrix(all_maps: dict[str, np.ndarray], pixels: list[np.ndarray]) -> dict:
    """Mean over images of each pair's rho of |a| on the garment's pixels and top-10% overlap (M, M)."""
    names = list(all_maps)
    rho, overlap = np.eye(len(names)), np.eye(len(names))
    for (i, a), (j, b) in ((p, q) for p in enumerate(names) for q in enumerate(names) if p[0] < q[0]):
        pairs = list(zip(all_maps[a], all_maps[b], pixels))
        rho[i, j] = rho[j, i] = np.mean([spearman(np.abs(x).ravel()[m], np.abs(y).ravel()[m]) for x, y, m in pairs])
        overlap[i, j] = overlap[j, i] = np.mean([top_overlap(x, y) for x, y, _ in pairs])
    return {"methods": names, "spearman": rho.round(4).tolist(), "top10_overlap": overlap.round(4).tolist()}


def format_table(trust: dict) -> str:
    """A plain-text table of the per-method summary (for logs and the README)."""
    head = (f"{'method':22s} {'del AUC':>8s} {'ins AUC':>8s} {'infid.':>8s} {'sens.':>7s} {'rand rho':>9s} "
            f"{'class rho':>9s} {'ROAD MoRF':>9s} {'ROAD LeRF':>9s} {'ms':>7s}")
    lines = [head, "-" * len(head)]

    def fmt(v, spec):
        return format(v, spec) if v is not None else "-"
    for method in trust["methods"]:
        r = trust[method]
        lines.append(f"{method:22s} {fmt(r['deletion_auc'], '8.3f')} {fmt(r['insertion_auc'], '8.3f')} "
                     f"{fmt(r['infidelity'], '8.4f')} {fmt(r['sensitivity'], '7.3f')} "
                     f"{fmt(r['randomisation_rho'], '9.3f')} {fmt(r.get('class_rho'), '9.3f')} "
                     f"{fmt(r.get('road_morf_auc'), '9.3f')} {fmt(r.get('road_lerf_auc'), '9.3f')} "
                     f"{fmt(r['latency_ms'], '7.1f')}")
    r = trust["random_order"]
    lines.append(f"{'(random order)':22s} {r['deletion_auc']:8.3f} {r['insertion_auc']:8.3f} {'':8s} {'':7s} {'':9s} "
                 f"{'':9s} {fmt(r.get('road_morf_auc'), '9.3f')} {fmt(r.get('road_lerf_auc'), '9.3f')}")
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
    parser.add_argument("--n-road", type=int, default=20, help="images for ROAD's curves")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    path = write_trust(args.model_dir, n=args.n, seed=args.seed, n_randomisation=args.n_randomisation,
                       n_sensitivity=args.n_sensitivity, steps=args.steps, n_road=args.n_road, progress=True)
    print(format_table(json.loads(path.read_text())))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
