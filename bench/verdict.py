"""The three-way verdict (modelrepo/verdict.py) on every reported set, in process, routed as the app routes each image.

Each image goes through `preprocess.look_and_mask`; a segmented photo is answered by the photo
network (`for_photos()`) and judged by the photo detector (verdict.safetensors), a drawing by the
network as trained and the drawings' detector (verdict_drawing.safetensors), anything else by the
network as trained and the Fashion-MNIST detector (ood.safetensors). Its verdict is
`verdict.kind`: fashion-mnist-like, garment-photo or not-a-garment. bench/ood_http.py checks that
the running app's /analyse gives the same verdicts.

The photo detector and its threshold were fitted and chosen on the photo *train* split only
(training/fit_verdict.py: fit part and selection part), the drawings' detector on
tests/drawings.validation_drawings (other shapes, seeds and jitter than the reported drawings). The in-class photos of the validation split
are read here once, for the bar, and reported with a 95% Wilson interval.

    python bench/verdict.py                                   # every set
    python bench/fresh_natural.py --out /tmp/natural-fresh && python bench/fresh_natural.py --set third --out /tmp/natural-third
    python bench/verdict.py --fresh-natural /tmp/natural-fresh --third-natural /tmp/natural-third
    python bench/verdict.py --limit 200 --results-dir /tmp/bench   # a quicker look

Writes <results-dir>/verdict.json and verdict.md (default bench/results/).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as common  # noqa: E402  (puts the repository root on sys.path)

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from imaging.preprocess import look_and_mask  # noqa: E402
from modelrepo import ood, verdict  # noqa: E402
from modelrepo.folder import open_model  # noqa: E402
from ood_sets import PER_FAMILY, PHOTO_CLASSES, PHOTO_OUTSIDE, constants, photos, sketches, uniform_noise  # noqa: E402
from training.data import load_images  # noqa: E402
from training.evaluate import wilson_interval  # noqa: E402
from training.product_style import product_upload  # noqa: E402

DATA = common.REPO.parent / "shared" / "data"
NATURAL = common.REPO / "tests" / "data" / "natural"
FMNIST, MNIST, NOISE, CONSTANT = "Fashion-MNIST test", "MNIST test digits", "uniform noise", "constant images"
NATURAL_SET = "natural non-garment photos (tests/data/natural)"
# The natural sets of bench/fresh_natural.py, when --fresh-natural and --third-natural name them.
# tests/data/natural and the fresh set shaped the twentieth decision's choice (docs/decision_log.md):
# they are selection sets, and issue 30's natural bar is read on the third, which no choice has seen.
FRESH_SET = "natural non-garment photos, fresh (bench/fresh_natural.py)"
THIRD_SET = "natural non-garment photos, third (bench/fresh_natural.py --set third)"
# {set: (the report's key for its per-image verdicts, their title in verdict.md, the argument naming
# its folder: None for tests/data/natural, always read)}.
NATURAL_SETS = {NATURAL_SET: ("natural_per_image", "Natural photos", None),
                FRESH_SET: ("fresh_natural_per_image", "Fresh natural photos", "fresh_natural"),
                THIRD_SET: ("third_natural_per_image", "Third natural set (issue 30's natural bar)", "third_natural")}
IN_CLASS, OUTSIDE = "photos, seven in-class folders (validation)", "photos: hat/shorts/skirt (validation)"
DRAWN = "garment drawings (tests/drawings.py)"
PRODUCT = "product-style uploads (Fashion-MNIST test, bench/product_uploads.py)"
# Issue 30's bars on the share called not-a-garment: (at most, at least).
BARS = {IN_CLASS: (0.10, None), MNIST: (None, 0.97), NOISE: (None, 1.0), CONSTANT: (None, 1.0),
        THIRD_SET: (None, 0.90), FMNIST: (0.05, None)}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--model", default=str(common.REPO / "weights"), help="model folder (with ood.* and verdict.*)")
    p.add_argument("--fashion-mnist", default=str(DATA / "fashion_mnist"))
    p.add_argument("--mnist", default=str(DATA / "mnist"))
    p.add_argument("--photos", default=str(DATA / "clothing_photos"))
    p.add_argument("--results-dir", default=str(common.RESULTS))
    p.add_argument("--per-family", type=int, default=PER_FAMILY, help="images of uniform noise; sketches: a tenth")
    p.add_argument("--seed", type=int, default=0, help="seed of the synthetic sets (stream 1, as bench/ood.py)")
    p.add_argument("--limit", type=int, default=0, help="only the first N images of each set (0: all)")
    p.add_argument("--fresh-natural", default=None,
                   help="folder of bench/fresh_natural.py: the second natural set, reported beside tests/data/natural")
    p.add_argument("--third-natural", default=None,
                   help="folder of bench/fresh_natural.py --set third: the natural set that issue 30's bar is read on")
    return p.parse_args(argv)


def natural_files(folder: Path = NATURAL) -> list[Path]:
    """The photos of a natural set (tests/data/natural, whose README names source and licence, or
    bench/fresh_natural.py's folder), in name order."""
    return [p for p in sorted(folder.glob("*")) if p.suffix in (".jpg", ".png")]


def natural_photos(folder: Path = NATURAL) -> list[tuple[Image.Image, str]]:
    """A natural set's photos as RGB, each with its name."""
    out = []
    for path in natural_files(folder):
        with Image.open(path) as img:
            out.append((img.convert("RGB"), path.stem))
    return out


def natural_folders(args) -> dict[str, tuple[str, Path]]:
    """{set name: (the report's key for its per-image verdicts, its folder)} of the natural sets read."""
    folders = {}
    for name, (key, _, argument) in NATURAL_SETS.items():
        folder = NATURAL if argument is None else getattr(args, argument, None)
        if folder:
            folders[name] = (key, Path(folder))
    return folders


def reported_sets(args) -> dict[str, list]:
    """Every set by name, as images for the serving path; the in-class validation photos are (image, folder)."""
    from training.data import open_split
    rng = np.random.default_rng([args.seed, 1])
    sets = {FMNIST: list(load_images(args.fashion_mnist, "test")[2]),
            MNIST: [np.asarray(im.convert("L")) for im in open_split(args.mnist, "test")["image"]],
            NOISE: uniform_noise(args.per_family, rng), CONSTANT: constants(min(args.per_family, 256)),
            **{name: [img for img, _ in natural_photos(folder)] for name, (_, folder) in natural_folders(args).items()}}
    sets |= {f"sketches: {k}": v for k, v in sketches(args.per_family // 10, rng).items()}
    sys.path.insert(0, str(common.REPO / "tests"))
    from drawings import drawings
    sets[DRAWN] = [img for _, _, img in drawings()]
    # A garment enlarged on a white ground, as a shop shows it: routed as a photo, though no garment
    # photo of the photo set looks like it; reported, so that what the detector makes of it is known.
    sets[PRODUCT] = [product_upload(raw, rng) for raw in sets[FMNIST][:args.per_family]]
    sets[OUTSIDE] = [img for img, _ in photos(args.photos, "validation", PHOTO_OUTSIDE)]
    sets[IN_CLASS] = photos(args.photos, "validation", PHOTO_CLASSES)
    return {k: v[:args.limit or None] for k, v in sets.items()}


@torch.no_grad()
def served_verdicts(model, detector, photo_verdict, images, drawing_verdict=None) -> dict:
    """What the app answers for each image: routed (photo, drawing or neither), probabilities (N, C)
    of the network that answers it, the score of the detector that judges it, and the verdict `kind`."""
    seen = [look_and_mask(img) for img in images]
    x = ood.as_input(model, torch.from_numpy(np.stack([s.look for s in seen])))
    photo = torch.tensor([s.photo for s in seen])
    material = torch.from_numpy(np.stack([s.material_row for s in seen]))
    drawing = torch.tensor([s.drawing for s in seen]) & (drawing_verdict is not None)
    probs, scores, flagged = torch.empty(len(x), model.config.num_classes), torch.empty(len(x)), torch.empty(len(x), dtype=torch.bool)
    routes = [(~photo & ~drawing, model, detector), (photo, model.for_photos(), photo_verdict.detector)]
    if drawing_verdict is not None:
        routes.append((drawing, model, drawing_verdict.detector))
    for route, network, judge in routes:
        idx = route.nonzero()[:, 0]
        for part in idx.split(1000):
            if len(part):
                # Every detector takes the material; only a photo detector with material features weighs it.
                probs[part], scores[part] = judge.predict(network, x[part], material[part])
                flagged[part] = judge.flag(scores[part])
    kinds = [verdict.kind(bool(p), bool(f)) for p, f in zip(photo, flagged)]
    return {"photo": photo, "drawing": drawing, "probs": probs, "scores": scores, "kinds": kinds}


def kind_row(kinds: list[str]) -> dict:
    n = len(kinds)
    k = sum(v == verdict.NOT_A_GARMENT for v in kinds)
    lo, hi = wilson_interval(k, n)
    return {"n": n, "not_a_garment": k / n, "not_a_garment_ci95": [lo, hi],
            "kinds": {v: sum(x == v for x in kinds) / n for v in verdict.KINDS}}


def in_class_rows(model, result: dict, folders: list[str], photo_verdict) -> dict:
    """Per folder not-a-garment; strict accuracy of the photos called garment photos; the shipped
    reliability bins against what the validation photos show in each."""
    names = [model.label_names[i] for i in result["probs"].argmax(1).tolist()]
    right = torch.tensor([n in PHOTO_CLASSES[f] for n, f in zip(names, folders)])
    garment = torch.tensor([k != verdict.NOT_A_GARMENT for k in result["kinds"]])
    photo_garment = garment & result["photo"]
    top = result["probs"].amax(1)
    bins = []
    for b in photo_verdict.bins:
        inside = photo_garment & (top > b["lo"]) & (top <= b["hi"])
        n = int(inside.sum())
        bins.append({"lo": b["lo"], "hi": b["hi"], "selection_accuracy": b["accuracy"], "selection_count": b["count"],
                     "validation_accuracy": float(right[inside].double().mean()) if n else None, "validation_count": n})
    # Only the folders read: with --limit some may hold no photo.
    per_folder = {f: kind_row([k for k, g in zip(result["kinds"], folders) if g == f]) for f in PHOTO_CLASSES if f in folders}
    return {"per_folder": per_folder, "strict_accuracy_all": float(right.double().mean()),
            "strict_accuracy_garment": float(right[garment].double().mean()) if garment.any() else None,
            "routed_as_photos": float(result["photo"].double().mean()), "reliability": bins}


def main(argv=None) -> None:
    args = parse_args(argv)
    opened = open_model(args.model)
    model, detector = opened.model, opened.detector
    if detector is None:
        raise SystemExit(f"{args.model}: no usable Fashion-MNIST detector ({opened.detector_error})")
    photo_verdict = verdict.Verdict.load(args.model, model)
    drawing_verdict = verdict.Verdict.load(args.model, model, verdict.DRAWING_FILES)
    sets, naturals = reported_sets(args), natural_folders(args)
    rows, extra = {}, {}
    for name, images in sets.items():
        folders = None
        if name == IN_CLASS:
            images, folders = [img for img, _ in images], [f for _, f in images]
        result = served_verdicts(model, detector, photo_verdict, images, drawing_verdict)
        rows[name] = kind_row(result["kinds"]) | {"routed_as_photos": float(result["photo"].double().mean()),
                                                  "routed_as_drawings": float(result["drawing"].double().mean())}
        if name in naturals:
            key, folder = naturals[name]
            extra[key] = {p.stem: k for p, k in zip(natural_files(folder), result["kinds"])}
        if folders:
            extra["in_class"] = in_class_rows(model, result, folders, photo_verdict)
        print(f"[verdict] {name:50s} n {rows[name]['n']:>6,} not-a-garment {rows[name]['not_a_garment']:.3f}", flush=True)
    # The twentieth decision's selection sets, reported together.
    selection = [NATURAL_SETS[name][0] for name in (NATURAL_SET, FRESH_SET)]
    if all(key in extra for key in selection):
        extra["natural_both"] = natural_both(*(extra[key] for key in selection))
    report = {"command": common.command_line("bench/verdict.py"), "model": common.model_note(Path(args.model)),
              "machine": common.machine_info(), "limit": args.limit, "seed": args.seed,
              "detectors": {"fashion_mnist": {"score": detector.score_name, "threshold": detector.threshold},
                            "photo": {"score": photo_verdict.detector.score_name,
                                      "threshold": photo_verdict.detector.threshold,
                                      "protocol": photo_verdict.meta.get("protocol")},
                            "drawing": {"score": drawing_verdict.detector.score_name,
                                        "threshold": drawing_verdict.detector.threshold,
                                        "protocol": drawing_verdict.meta.get("protocol")}},
              "bars": {k: {"at_most": lo, "at_least": hi} for k, (lo, hi) in BARS.items()},
              "sets": rows, **extra}
    common.write_results(args.results_dir, "verdict", report, markdown(report))
    print(markdown(report))


def natural_both(*per_image: dict) -> dict:
    """The two natural sets that shaped the twentieth decision's choice, taken together: its selection figure."""
    kinds = [k for d in per_image for k in d.values()]
    k = sum(v == verdict.NOT_A_GARMENT for v in kinds)
    return {"k": k, "n": len(kinds), "not_a_garment": k / len(kinds), "ci95": list(wilson_interval(k, len(kinds)))}


def pct(v: float | None) -> str:
    return "" if v is None else f"{100 * v:.1f}%"


def bar_text(bar: dict | None) -> str:
    if not bar:
        return ""
    return f"<= {pct(bar['at_most'])}" if bar["at_most"] is not None else f">= {pct(bar['at_least'])}"


def met(row: dict, bar: dict | None) -> str:
    if not bar:
        return ""
    v = row["not_a_garment"]
    ok = v <= bar["at_most"] if bar["at_most"] is not None else v >= bar["at_least"]
    return "yes" if ok else "**no**"


def product_style_part(protocol: dict) -> str:
    """", and N Fashion-MNIST train images dressed as shop uploads" when the photo detector has that Gaussian."""
    p = protocol.get("product_style")
    return f" and {p['routed_as_photos']:,} Fashion-MNIST train images dressed as shop uploads" if p else ""


def markdown(r: dict) -> str:
    photo, drawing = r["detectors"]["photo"], r["detectors"].get("drawing") or {}
    proto, dproto = photo.get("protocol") or {}, drawing.get("protocol") or {}
    lines = ["# The three-way verdict: fashion-mnist-like, garment-photo, not-a-garment", "",
             f"Model: {r['model']}. Command: `{r['command']}`. Machine: {r['machine']['cpu_model']}, "
             f"{r['machine']['cpu_count']} cores, torch {r['machine']['torch']}, load average (1 min) when the run ended "
             f"{r['machine']['load_average_1_5_15min'][0]:.1f}.", "",
             f"Images neither photos nor drawings are judged by the Fashion-MNIST detector ({r['detectors']['fashion_mnist']['score']}, threshold "
             f"{r['detectors']['fashion_mnist']['threshold']:.6g}); segmented photos by the photo detector "
             f"({photo['score']}, threshold {photo['threshold']:.6g}: the {proto.get('keep', 0):.0%} quantile of "
             f"{proto.get('selection_photos', '?')} held-out selection photos of the train split; Gaussians fitted on "
             f"{proto.get('fit_photos', '?')} fit photos{product_style_part(proto)}, covariance {proto.get('covariance', '?')}); "
             "drawings by the "
             f"drawings' detector ({drawing.get('score', '?')}, threshold {drawing.get('threshold', float('nan')):.6g}: the "
             f"{dproto.get('keep', 0):.0%} quantile of {dproto.get('selection_drawings', '?')} held-out validation drawings; "
             f"Gaussians fitted on {dproto.get('fit_drawings', '?')} others). Validation photos "
             "are read once, here. Interval: 95% Wilson.", ""]
    rows = []
    for name, s in r["sets"].items():
        bar = r["bars"].get(name)
        lo, hi = s["not_a_garment_ci95"]
        rows.append([name, f"{s['n']:,}", pct(s["routed_as_photos"]), pct(s.get("routed_as_drawings")),
                     pct(s["kinds"][verdict.FASHION_MNIST_LIKE]),
                     pct(s["kinds"][verdict.GARMENT_PHOTO]), f"{pct(s['not_a_garment'])} ({pct(lo)} to {pct(hi)})",
                     bar_text(bar), met(s, bar)])
    lines.append(common.md_table(["set", "images", "routed as photos", "routed as drawings", "fashion-mnist-like", "garment-photo",
                                  "not-a-garment (95% CI)", "bar", "met"], rows))
    ic = r.get("in_class")
    if ic:
        lines += ["", "In-class validation photos called not-a-garment, per folder: "
                  + ", ".join(f"{f} {pct(v['not_a_garment'])} of {v['n']}" for f, v in ic["per_folder"].items())
                  + f". Strict accuracy: {pct(ic['strict_accuracy_all'])} of all, {pct(ic['strict_accuracy_garment'])} "
                  "of those called a garment.", "",
                  "The confidence sentence of a garment photo (bins of the top probability, counted on the selection "
                  "photos called garment photos) against the validation photos called garment photos:", "",
                  common.md_table(["top probability", "selection: right (photos)", "validation: right (photos)"],
                                  [[f"{b['lo']:.0%}-{b['hi']:.0%}", f"{pct(b['selection_accuracy'])} ({b['selection_count']})",
                                    f"{pct(b['validation_accuracy'])} ({b['validation_count']})"] for b in ic["reliability"]])]
    for key, title, _ in NATURAL_SETS.values():
        if key in r:
            lines += ["", f"{title}, per image: " + ", ".join(f"{n} {k}" for n, k in r[key].items()) + "."]
    if "natural_both" in r:
        b = r["natural_both"]
        lines += ["", f"The two natural selection sets together: {b['k']} of {b['n']} called not-a-garment, "
                      f"{pct(b['not_a_garment'])} ({pct(b['ci95'][0])} to {pct(b['ci95'][1])})."]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
