"""Measure the out-of-distribution detector of a model folder on the reported sets; write bench/results/ only.

The detector is fitted, and its score chosen on validation, by `train.py --fit-ood`
(training/fit_ood.py, whose docstring has the protocol); its record of that choice,
<model>/evaluation/ood.json, is quoted in the report. This script only measures what was written:
the chosen detector on Fashion-MNIST test, MNIST test (10,000), uniform noise, constant images,
gradients (28 px, and 256 px for the segmentation path), visitor-style sketches (digits, circles,
scribbles drawn dark on white at 280x280), photos of hats/shorts/skirts (photo train split), and
the in-class photos (photo validation split, the seven folders with a class); then its latency.
bench/ood_http.py sends the same sets through the running app.

    python bench/ood.py                                   # weights/ -> bench/results/ood.json + ood.md
    python bench/ood.py --model /tmp/refit --results-dir /tmp/bench   # another folder's detector
    python bench/ood.py --all-candidates                  # + every candidate score refitted in memory, for reference
    python bench/ood.py --latency-only                    # re-time the detector (e.g. on a quiet machine)

Writes <results-dir>/ood.json + ood.md; never writes into the model folder.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as common  # noqa: E402  (puts the repository root on sys.path)

import torch  # noqa: E402

from modelrepo import artefacts, ood  # noqa: E402
from ood_sets import PER_FAMILY, PHOTO_CLASSES, evaluation_sets, photos, served_scores  # noqa: E402
from model import CLASS_NAMES, load_model  # noqa: E402

from training.config import DataConfig, OODConfig  # noqa: E402
from training.data import load_images  # noqa: E402
from training.fit_ood import auroc, fit_candidates, fpr_at_95_tpr  # noqa: E402
from imaging.preprocess import fashion_look  # noqa: E402

DATA = common.REPO.parent / "shared" / "data"
TARGETS = {"fmnist_test_flagged_max": 0.06, "mnist_flagged_min": 0.97, "mnist_auroc_min": 0.995,
           "synthetic_flagged_min": 0.99}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=str(common.REPO / "weights"), help="model folder with its detector")
    p.add_argument("--fashion-mnist", default=str(DATA / "fashion_mnist"))
    p.add_argument("--mnist", default=str(DATA / "mnist"))
    p.add_argument("--photos", default=str(DATA / "clothing_photos"))
    p.add_argument("--results-dir", default=str(common.RESULTS))
    p.add_argument("--per-family", type=int, default=PER_FAMILY, help="images per synthetic set")
    p.add_argument("--seed", type=int, default=0, help="seed of the synthetic sets")
    p.add_argument("--all-candidates", action="store_true",
                   help="also refit every candidate score in memory (as train.py --fit-ood does, on --fashion-mnist "
                        "and --photos' train split) and report their AUROCs beside the shipped one's, for reference")
    p.add_argument("--repeats", type=int, default=300, help="timed calls for the latency figures")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument("--latency-only", action="store_true",
                   help="re-time the detector and rewrite the reports' latency section (e.g. on a quiet machine)")
    return p.parse_args(argv)


# ---------------------------------------------------------------------------------------------
# Metrics
# ---------------------------------------------------------------------------------------------

def flagged(detector: ood.OODDetector, scores: torch.Tensor) -> float:
    return float(detector.flag(scores).double().mean())


# ---------------------------------------------------------------------------------------------
# Steps
# ---------------------------------------------------------------------------------------------

def photo_risk(detector, model, photos_val) -> dict:
    """Flagged fraction and strict accuracy (all, unflagged, flagged) of the in-class validation photos."""
    _, probs, scores = served_scores(model, {"chosen": detector}, [img for img, _ in photos_val])
    scores = scores["chosen"]
    names = [CLASS_NAMES[i] for i in probs.argmax(1).tolist()]
    right = torch.tensor([name in PHOTO_CLASSES[folder] for name, (_, folder) in zip(names, photos_val)])
    return risk_row(detector.flag(scores), right) | {"per_folder_flagged": {
        f: float(detector.flag(scores)[[i for i, (_, g) in enumerate(photos_val) if g == f]].double().mean())
        for f in PHOTO_CLASSES}}


def risk_row(flags: torch.Tensor, right: torch.Tensor) -> dict:
    kept = ~flags
    acc = lambda m: float(right[m].double().mean()) if m.any() else None  # noqa: E731
    return {"n": len(right), "flagged": float(flags.double().mean()), "accuracy_all": float(right.double().mean()),
            "accuracy_unflagged": acc(kept), "accuracy_flagged": acc(flags), "coverage": float(kept.double().mean())}


def timing(detector, model_dir: str, sample: torch.Tensor, repeats: int) -> dict:
    """Batch-1 CPU latency of the served classify with and without the OOD score (BN-folded model).

    The calls are interleaved, one of each per round, so that other work on a shared CPU slows them
    alike and the difference of the medians stays meaningful.
    """
    served = load_model(model_dir, fuse=True)
    x = sample[:1]
    views = served.served_features(x)
    calls = {"predict_proba": lambda: served.predict_proba(x),
             "predict_with_score": lambda: detector.predict(served, x),
             "score_alone": lambda: detector.score(served, x),
             "score_from_features": lambda: detector.score_views(served, views, x)}
    times = {k: [] for k in calls}
    with torch.inference_mode():
        for round_ in range(repeats + 20):
            for k, fn in calls.items():
                t0 = time.perf_counter()
                fn()
                if round_ >= 20:                         # the first rounds warm caches and oneDNN kernels
                    times[k].append((time.perf_counter() - t0) * 1000)
    t = {k: common.summarize_ms(v) for k, v in times.items()}
    t["added_ms_one_pass"] = t["predict_with_score"]["median_ms"] - t["predict_proba"]["median_ms"]
    # The fastest calls are the least disturbed by other work: their difference is the detector's own cost.
    t["added_ms_one_pass_min"] = t["predict_with_score"]["min_ms"] - t["predict_proba"]["min_ms"]
    t["torch_threads"] = torch.get_num_threads()
    t["load_average_1min_after"] = os.getloadavg()[0]
    return t


def evaluate(model, detectors: dict, chosen: str, test_x, test_labels, sets: dict, photos_val) -> dict:
    """The chosen detector on every reported set; the other candidates' AUROCs alongside, for reference."""
    test_views = ood.views_in_batches(model, test_x)
    test_scores = {n: d.score_views(model, test_views, test_x) for n, d in detectors.items()}
    det = detectors[chosen]
    probs = model.served_proba(test_views)
    right = probs.argmax(1) == test_labels
    out = {"fmnist_test": risk_row(det.flag(test_scores[chosen]), right)
           | {"risk_coverage": risk_coverage(test_scores[chosen], right)},
           "sets": {}, "all_candidates_auroc": {n: {} for n in detectors}}
    for name, images in sets.items():
        x, _, scores = served_scores(model, detectors, images)
        s = scores[chosen]
        out["sets"][name] = {"n": len(images), "auroc": auroc(test_scores[chosen], s),
                             "fpr_at_95_tpr": fpr_at_95_tpr(test_scores[chosen], s), "flagged": flagged(det, s),
                             "distinct_looks": int(torch.unique(x.flatten(1), dim=0).shape[0])}
        for n in detectors:
            out["all_candidates_auroc"][n][name] = auroc(test_scores[n], scores[n])
        print(f"[ood] {name:40s} AUROC {out['sets'][name]['auroc']:.4f} flagged {out['sets'][name]['flagged']:.3f}", flush=True)
    out["photos_in_class_validation"] = photo_risk(det, model, photos_val)
    return out


def risk_coverage(scores: torch.Tensor, right: torch.Tensor, coverages=(1.0, 0.95, 0.9, 0.8, 0.5)) -> list[dict]:
    """Accuracy on the images kept when only the lowest-scoring fraction `coverage` is kept."""
    order = scores.argsort()
    return [{"coverage": c, "accuracy": float(right[order[:max(1, round(c * len(order)))]].double().mean())}
            for c in coverages]


def main(argv=None) -> None:
    args = parse_args(argv)
    preprocessing = preprocessing_files()          # now: the files as imported, before anyone edits them
    if args.threads:
        torch.set_num_threads(args.threads)
    model = load_model(args.model)
    if args.latency_only:
        return retime(args, model)
    detector = ood.OODDetector.load(args.model, model)
    record = fit_record(Path(args.model))
    chosen = detector.score_name
    detectors = {chosen: detector}
    if args.all_candidates:       # refitted in memory for the reference table; the shipped one is what is measured
        data = DataConfig(dataset=args.fashion_mnist, photo_train=args.photos, seed=record["protocol"]["seed"])
        others = fit_candidates(model, data, OODConfig(proxy_size=args.per_family))[0]
        detectors = {n: (detector if n == chosen else d) for n, d in others.items()}
    test_looks, test_labels, _ = load_images(args.fashion_mnist, "test")
    sets = evaluation_sets(args.mnist, args.photos, args.per_family, args.seed)
    photos_val = photos(args.photos, "validation", PHOTO_CLASSES)
    evaluation = evaluate(model, detectors, chosen, ood.as_input(model, test_looks), test_labels, sets, photos_val)
    latency = timing(detector, args.model, ood.as_input(model, test_looks[:1]), args.repeats)
    report = {"command": common.command_line("bench/ood.py"), "model": common.model_note(Path(args.model)),
              "detector_folder": common.rel(args.model), "fitted_by": record.get("command"),
              "machine": common.machine_info(), "preprocessing": preprocessing,
              "protocol": record["protocol"], "validation": record["validation"], "chosen": chosen,
              "threshold": detector.threshold, "evaluation": evaluation, "latency": latency, "targets": TARGETS}
    common.write_results(args.results_dir, "ood", report, markdown(report))
    print(markdown(report))


def fit_record(folder: Path) -> dict:
    """The detector's record of how it was fitted and chosen (train.py --fit-ood writes it)."""
    path = folder / artefacts.EVALUATION / artefacts.OOD
    if not path.is_file():
        raise SystemExit(f"{path}: missing; fit the detector with train.py --fit-ood --model {folder}")
    return json.loads(path.read_text())


def retime(args, model) -> None:
    """Measure the latency again for the detector of --model and rewrite the reports with it."""
    path = Path(args.results_dir) / "ood.json"
    report = json.loads(path.read_text())
    detector = ood.OODDetector.load(args.model, model)
    test_looks = load_images(args.fashion_mnist, "test")[0][:1]
    report["latency"] = timing(detector, args.model, ood.as_input(model, test_looks), args.repeats)
    report["latency"]["command"] = common.command_line("bench/ood.py")
    report["latency"]["load_average_1min_before"] = common.machine_info()["load_average_1_5_15min"][0]
    common.write_results(args.results_dir, "ood", report, markdown(report))
    print(markdown(report).split("## Latency")[1].split("## For reference")[0])


def preprocessing_files() -> dict:
    """sha256 of the files the serving preprocessing lives in: the photo and sketch figures depend on them."""
    import hashlib
    names = ("model.py", "preprocess.py", "segment.py", "strokes.py")
    return {n: hashlib.sha256((common.REPO / n).read_bytes()).hexdigest()[:16] if (common.REPO / n).is_file()
            else "absent" for n in names} | {"fashion_look from": fashion_look.__module__}


def pct(v: float | None) -> str:
    return "" if v is None else f"{100 * v:.1f}%"


def markdown(r: dict) -> str:
    ev, chosen, lat = r["evaluation"], r["chosen"], r["latency"]
    fams = list(next(iter(r["validation"].values()))["families"])
    lines = ["# Out-of-distribution detection", "",
             f"Model: {r['model']}; detector in `{r['detector_folder']}/ood.safetensors` + `ood.json`"
             + (f", fitted by `{r['fitted_by']}`. " if r.get("fitted_by") else ". ")
             +
             f"Command: `{r['command']}`. Machine: {r['machine']['cpu_model']}, {r['machine']['cpu_count']} cores, "
             f"torch {r['machine']['torch']}. Preprocessing files (sha256 prefixes): "
             + ", ".join(f"{k} {v}" for k, v in r["preprocessing"].items()) + ".", "",
             f"Statistics fitted on {r['protocol']['fit_images']:,} Fashion-MNIST training images (the training split "
             f"minus validation) and {r['protocol'].get('photo_fit_images', 0):,} in-class photos of the photo train split; threshold = the {r['protocol']['keep']:.0%} quantile of the "
             f"{r['protocol']['validation_images']:,} validation images' scores. The shipped weights were trained on all "
             "60,000 training images, validation included, so validation images look more familiar to the network "
             "than unseen ones: the test set's flagged fraction below measures what that costs.", "",
             "## Choice on validation (Fashion-MNIST validation vs the OOD proxy)", "",
             "AUROC (FPR at 95% TPR) per proxy family; none of these families is an evaluation set below "
             "(*smooth shading* is smooth like the gradients but made otherwise: bicubic surfaces through random "
             "grids, 28 to 160 px, another random stream). Rule: the highest mean AUROC, unless a simpler score "
             "(listed earlier) is tied with it: the best's lead over it, in a paired bootstrap "
             f"({r['protocol']['bootstrap_resamples']} resamples of the validation and proxy images), has a 2.5% "
             "quantile at or below 0. Leads (95% interval): "
             + ", ".join(f"over {n} {lo:+.4f} to {hi:+.4f}" for n, (lo, hi) in r["protocol"]["lead_of_best_ci95"].items())
             + ".", ""]
    rows = [[f"**{n}**" if n == chosen else n,
             *[f"{t['families'][f]['auroc']:.4f} ({pct(t['families'][f]['fpr_at_95_tpr'])})" for f in fams],
             f"{t['mean_auroc']:.4f}", f"{t['min_auroc']:.4f}"] for n, t in r["validation"].items()]
    lines += [common.md_table(["score", *fams, "mean AUROC", "min AUROC"], rows), "",
              f"Chosen: **{chosen}**, threshold {r['threshold']:.6g}.", "",
              "## Evaluation of the chosen score (in-distribution: Fashion-MNIST test, 10,000)", "",
              "AUROC and FPR@95%TPR use the test images as the in-distribution side; *flagged* is at the stored "
              "threshold (set on validation). *Distinct looks*: how many different 28x28 inputs the set became "
              "after preprocessing (every constant image becomes the same blank look).", ""]
    rows = [["Fashion-MNIST test (in distribution)", f"{ev['fmnist_test']['n']:,}", "", "", "",
             pct(ev["fmnist_test"]["flagged"]), f"<= {pct(r['targets']['fmnist_test_flagged_max'])}"]]
    target = {"MNIST test digits": f">= {pct(r['targets']['mnist_flagged_min'])} (AUROC >= {r['targets']['mnist_auroc_min']})",
              **{k: f">= {pct(r['targets']['synthetic_flagged_min'])}"
                 for k in ("uniform noise", "constant images", "gradients", "gradients, 256 px")}}
    rows += [[name, f"{s['n']:,}", f"{s['distinct_looks']:,}", f"{s['auroc']:.4f}", pct(s["fpr_at_95_tpr"]),
              pct(s["flagged"]), target.get(name, "")] for name, s in ev["sets"].items()]
    pv = ev["photos_in_class_validation"]
    rows.append(["photos, seven in-class folders (validation split; in distribution by intent)", f"{pv['n']}", "", "", "",
                 pct(pv["flagged"]), ""])
    lines += [common.md_table(["set", "images", "distinct looks", "AUROC", "FPR@95%TPR", "flagged", "aim"], rows), "",
              "In-class photos flagged per folder: "
              + ", ".join(f"{k} {pct(v)}" for k, v in pv["per_folder_flagged"].items()) + ".", "",
              "## Risk and coverage", "", "Accuracy (strict accuracy for the photos) on all images, on those the "
              "detector lets through, and on those it flags.", ""]
    ft = ev["fmnist_test"]
    rows = [[name, pct(x["coverage"]), pct(x["accuracy_all"]), pct(x["accuracy_unflagged"]), pct(x["accuracy_flagged"])]
            for name, x in (("Fashion-MNIST test", ft), ("photos, in-class validation", pv))]
    lines += [common.md_table(["set", "coverage (unflagged)", "accuracy, all", "accuracy, unflagged",
                               "accuracy, flagged"], rows), "",
              "Fashion-MNIST test accuracy when only the lowest-scoring fraction is kept: "
              + ", ".join(f"{pct(x['coverage'])} kept: {pct(x['accuracy'])}" for x in ft["risk_coverage"]) + ".", "",
              "## Latency (batch 1, CPU, BN-folded model as served)", "",
              common.md_table(["call", "median ms", "min ms", "p95 ms"], [
                  [label, lat[k]["median_ms"], lat[k]["min_ms"], lat[k]["p95_ms"]] for k, label in (
                      ("predict_proba", "predict_proba (what the app serves)"),
                      ("predict_with_score", "detector.predict (probabilities + score, one pass)"),
                      ("score_alone", "detector.score alone (its own forward pass)"),
                      ("score_from_features", "score from features already computed"))]), "",
              f"Added to a batch-1 classify by `detector.predict`: {lat['added_ms_one_pass']:.2f} ms between the "
              f"medians, {lat['added_ms_one_pass_min']:.2f} ms between the fastest calls (target < 2 ms). Calls "
              f"interleaved, {lat['predict_proba']['n']} rounds, {lat['torch_threads']} torch threads; load average "
              f"(1 min) {lat.get('load_average_1min_before', r['machine']['load_average_1_5_15min'][0]):.2f} before "
              f"timing, {lat['load_average_1min_after']:.2f} after ({r['machine']['cpu_count']} cores: above ~0.5 means "
              "other work shared the CPU, and medians then measure the contention more than the code)"
              + (f". Timed by `{lat['command']}`." if "command" in lat else "."), ""]
    candidates = [n for n in r["validation"] if n in ev["all_candidates_auroc"]]
    if len(candidates) > 1:       # bench/ood.py --all-candidates
        names = list(ev["sets"])
        rows = [[n, *[f"{ev['all_candidates_auroc'][n][s]:.4f}" for s in names]] for n in candidates]
        lines += ["## For reference: every candidate on the evaluation sets (AUROC)", "",
                  "Computed after the choice above and not used for it.", "",
                  common.md_table(["score", *names], rows)]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
