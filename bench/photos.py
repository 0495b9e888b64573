"""Real phone photos of garments: accuracy and time per photo through the old and the new path.

The photos are ../shared/data/clothing_photos (its README: CC0 "clothing dataset (subset)",
longest edge 192 px; the folder -> Fashion-MNIST class table and the definitions used here).
Each photo of the chosen split is classified by the shipped model through

  * old: `_looks.threshold_look`, the grey-level threshold crop model.preprocess ran before
    segmentation,
  * new: `_looks.segmented_look`, the path the app serves (`preprocess.look_and_mask`:
    segmentation unless the photo is already light on black).

Strict accuracy counts a prediction right when it is the folder's class (longsleeve: Pullover,
Shirt or T-shirt/top; shoes: Sandal, Sneaker or Ankle boot); coarse accuracy when it is in the
folder's group (Dress, Trouser, upper body, footwear). Both are over the seven folders that have
a class; hat, shorts and skirt are listed with their predictions only. Time per photo is the
preprocessing of an already-decoded photo; the full classify of a 4000x3000 JPEG (decode,
preprocess, predict) is timed on one validation photo enlarged to that size.

    python bench/photos.py                                   # validation split, weights/, bench/results
    python bench/photos.py --split selection --model outputs/x --out /tmp/bench   # where choices are made

The photo protocol (docs/decision_log.md): every choice is made on `selection`, a seeded part of the
train split (training.data.photo_selection_split); `validation` is read once per shipped model and
its strict accuracy reported with a Wilson 95% interval.

Writes <out>/photos.json and photos.md (photos_train.* for --split train). --mappings adds the
accuracy of other intensity mappings inside the same masks.
"""
from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import sys
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as common  # noqa: E402  (puts the repository root on sys.path)

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from imaging import segment  # noqa: E402
from _looks import load_rgb, routed, run_timed, segmented_look, threshold_look  # noqa: E402
from dashboard.uploads import open_image  # noqa: E402
from model import CLASS_NAMES, load_model  # noqa: E402
from training.data import PHOTO_FIT, PHOTO_REPORT, PHOTO_SELECTION  # noqa: E402
from training.data import load_photos as photo_paths  # noqa: E402
from training.evaluate import wilson_interval  # noqa: E402

UPPER = ("T-shirt/top", "Pullover", "Coat", "Shirt")
FOOTWEAR = ("Sandal", "Sneaker", "Ankle boot")
# folder -> (classes counted right for strict accuracy, classes of its coarse group); the README's table.
FOLDERS = {
    "dress": (("Dress",), ("Dress",)),
    "pants": (("Trouser",), ("Trouser",)),
    "t-shirt": (("T-shirt/top",), UPPER),
    "shirt": (("Shirt",), UPPER),
    "outwear": (("Coat",), UPPER),
    "longsleeve": (("Pullover", "Shirt", "T-shirt/top"), UPPER),
    "shoes": (FOOTWEAR, FOOTWEAR),
}
OUT_OF_CLASSES = ("hat", "shorts", "skirt")
LARGE_JPEG_SIZE = (4000, 3000)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--photos", default="/work/shared/data/clothing_photos", help="the clothing_photos folder")
    p.add_argument("--split", default=PHOTO_REPORT, choices=(PHOTO_REPORT, PHOTO_SELECTION, PHOTO_FIT, "train"),
                   help="selection/fit: the parts of train carved by training.data.photo_selection_split")
    p.add_argument("--model", default="weights", help="model folder")
    p.add_argument("--out", default=str(common.RESULTS), help="results folder")
    p.add_argument("--jpeg-repeats", type=int, default=20, help="timed classifies of the 4000x3000 JPEG")
    p.add_argument("--mappings", action="store_true",
                   help="also score other intensity mappings inside the same masks (the evidence for 1 - luminance)")
    return p.parse_args(argv)


def load_photos(root: Path, split: str) -> list[tuple[str, Path, Image.Image]]:
    """(folder, path, decoded RGB image) for every photo of the split, folders in the README's order."""
    paths = photo_paths(root, split, (*FOLDERS, *OUT_OF_CLASSES))
    photos = []
    for folder in (*FOLDERS, *OUT_OF_CLASSES):
        for path in (p for p, f in paths if f == folder and p.suffix == ".jpg"):
            with Image.open(path) as img:
                photos.append((folder, path, img.convert("RGB")))
    if not photos:
        raise SystemExit(f"no photos under {root / split}")
    return photos


def predict(model, looks: list[np.ndarray]) -> list[str]:
    x = (torch.from_numpy(np.stack(looks))[:, None] - model.config.mean) / model.config.std
    with torch.inference_mode():
        return [CLASS_NAMES[i] for i in model.predict_proba(x).argmax(1).tolist()]


def scores(folders: list[str], preds: list[str]) -> dict:
    """Strict and coarse accuracy per folder and over the seven folders with a class; predictions elsewhere."""
    out = {}
    for folder in (*FOLDERS, *OUT_OF_CLASSES):
        p = [pred for f, pred in zip(folders, preds) if f == folder]
        row = {"n": len(p), "predictions": dict(Counter(p).most_common())}
        if folder in FOLDERS and p:
            strict, coarse = FOLDERS[folder]
            row |= {"strict": float(np.mean([x in strict for x in p])), "coarse": float(np.mean([x in coarse for x in p]))}
        out[folder] = row
    scored = [(f, pred) for f, pred in zip(folders, preds) if f in FOLDERS]
    strict = sum(pred in FOLDERS[f][0] for f, pred in scored)
    out["all seven"] = {"n": len(scored), "strict": strict / len(scored),
                        "strict_ci95": list(wilson_interval(strict, len(scored))),
                        "coarse": float(np.mean([pred in FOLDERS[f][1] for f, pred in scored]))}
    return out


def mapped_look(rgb: np.ndarray, mask: np.ndarray, mapping) -> np.ndarray:
    """segment's look with another value inside the mask: mapping(1 - luminance, mask) -> values."""
    values = 1.0 - rgb @ segment.LUMA
    if mask.any():
        values = np.clip(mapping(values, mask), 0.0, 1.0)
    return segment.look_from_mask(1.0 - values, mask)


def _stretch(v: np.ndarray, mask: np.ndarray, floor: float = 0.0) -> np.ndarray:
    lo, hi = np.percentile(v[mask], [2, 98])
    return floor + (1 - floor) * np.clip((v - lo) / max(hi - lo, 1e-3), 0, 1)


MAPPINGS = {
    "1 - luminance (used)": lambda v, m: v,
    "contrast stretch 2-98%": _stretch,
    "stretch, floor 0.2": lambda v, m: _stretch(v, m, 0.2),
    "gamma 0.7": lambda v, m: v ** 0.7,
    "silhouette only (0.6)": lambda v, m: np.full_like(v, 0.6),
}


def compare_mappings(model, folders: list[str], images: list[Image.Image]) -> dict:
    """Strict and coarse accuracy over the seven folders for each mapping, on segment's masks."""
    work = [(rgb, segment.photo_look(rgb)[1]) for rgb in (load_rgb(img) for img in images)]
    out = {}
    for name, mapping in MAPPINGS.items():
        preds = predict(model.for_photos(), [mapped_look(rgb, mask, mapping) for rgb, mask in work])
        out[name] = scores(folders, preds)["all seven"]
    return out


def time_large_jpeg(model, photo: Image.Image, repeats: int) -> dict:
    """Median ms of decode + preprocess + predict for a 4000x3000 JPEG: the old path, and the app's
    (`dashboard.uploads.open_image`, which decodes a JPEG at reduced scale, then `look_and_mask`)."""
    folder = Path(tempfile.mkdtemp(prefix="bench-photos-"))
    path = folder / "large.jpg"
    photo.resize(LARGE_JPEG_SIZE, Image.Resampling.BICUBIC).save(path, "JPEG", quality=90)
    photo_model = model.for_photos()

    def served(img):
        seen = segmented_look(img)
        return seen.look, photo_model if seen.photo else model

    paths = {"old": (lambda: Image.open(path), lambda img: (threshold_look(img), model)),
             "new": (lambda: open_image(path), served)}
    out = {}
    for name, (load, look_fn) in paths.items():
        def classify(_, load=load, look_fn=look_fn):
            look, network = look_fn(load())
            return predict(network, [look])
        classify(None)                                           # warm-up
        _, wall, cpu = run_timed(classify, [None] * repeats)
        out[name] = {**common.summarize_ms(wall), "cpu_median_ms": statistics.median(cpu)}
    shutil.rmtree(folder, ignore_errors=True)
    return out


def timing(wall: list[float], cpu: list[float]) -> dict:
    return {**common.summarize_ms(wall), "cpu_median_ms": statistics.median(cpu), "cpu_p95_ms": common.percentile(sorted(cpu), 95)}


def markdown(res: dict, info: dict) -> str:
    old, new = res["old"]["scores"], res["new"]["scores"]
    pct = lambda v: None if v is None else v * 100  # noqa: E731
    rows = [[folder, old[folder]["n"], pct(old[folder].get("strict")), pct(new[folder].get("strict")),
             pct(old[folder].get("coarse")), pct(new[folder].get("coarse"))]
            for folder in (*FOLDERS, "all seven")]
    others = [[folder, new[folder]["n"], _top(old[folder]["predictions"]), _top(new[folder]["predictions"])]
              for folder in OUT_OF_CLASSES]
    times = [[name, res[name]["time"]["cpu_median_ms"], res[name]["time"]["cpu_p95_ms"], res[name]["time"]["median_ms"],
              res["large_jpeg"][name]["cpu_median_ms"], res["large_jpeg"][name]["median_ms"]] for name in ("old", "new")]
    return "\n\n".join([
        f"# Real phone photos: clothing_photos/{info['split']}, old path vs segment.photo_look",
        f"Model: {info['model']}. {res['n_photos']} photos; {res['new']['share_segmented']:.0%} routed to "
        "segmentation by `segment.needs_segmentation`"
        + (f", {res['new']['share_photo_path']:.0%} answered as the app answers a segmented photo "
           "(`FashionCNN.for_photos`: the photo BatchNorm, when the weights have one; the old path: the network's own)"
           if "share_photo_path" in res["new"] else "")
        + ". Strict and coarse accuracy as defined in the "
        "photos' README (hat, shorts and skirt are outside the ten classes: most frequent predictions only).",
        common.md_table(["folder", "n", "strict old %", "strict new %", "coarse old %", "coarse new %"], rows),
        "Strict accuracy of the served path over the seven folders: {:.1%} (Wilson 95% interval {:.1%}-{:.1%}).".format(
            new["all seven"]["strict"], *new["all seven"]["strict_ci95"]),
        common.md_table(["folder", "n", "old: top predictions", "new: top predictions"], others),
        "Time per photo: CPU time of this process (robust to other work on a shared machine) and wall time, "
        "median; the 4000x3000 JPEG classify is decode + preprocess + predict.",
        common.md_table(["path", "preprocess CPU ms", "CPU p95 ms", "wall ms", "4000x3000 JPEG CPU ms",
                         "4000x3000 JPEG wall ms"], times),
        *([common.md_table(["intensity inside the mask", "strict %", "coarse %"],
                           [[k, v["strict"] * 100, v["coarse"] * 100] for k, v in res["mappings"].items()])]
          if "mappings" in res else []),
        f"Command: `{info['command']}`. Machine: {info['machine']['cpu_model']}, {info['machine']['cpu_count']} CPUs, "
        f"torch threads {info['machine']['torch_threads']}, load average at start "
        f"{', '.join(f'{x:.1f}' for x in info['machine']['load_average_1_5_15min'])}."])


def _top(predictions: dict, k: int = 3) -> str:
    n = sum(predictions.values())
    return ", ".join(f"{name} {count / n:.0%}" for name, count in list(predictions.items())[:k])


def main(argv=None) -> int:
    cli = parse_args(argv)
    torch.set_num_threads(1)
    info = {"model": common.model_note(cli.model), "split": cli.split, "photos": cli.photos,
            "command": common.command_line("bench/photos.py"), "machine": common.machine_info()}
    model = load_model(cli.model)
    photos = load_photos(Path(cli.photos), cli.split)
    folders, images = [f for f, _, _ in photos], [img for _, _, img in photos]
    old_looks, old_wall, old_cpu = run_timed(threshold_look, images)
    new_routed, new_wall, new_cpu = run_timed(segmented_look, images)
    res = {"n_photos": len(photos),
           "old": {"scores": scores(folders, predict(model, old_looks)), "time": timing(old_wall, old_cpu)},
           "new": {"scores": scores(folders, routed(predict, model, [s.look for s in new_routed],
                                                    [s.photo for s in new_routed])),
                   "time": timing(new_wall, new_cpu),
                   "share_segmented": float(np.mean([s.mask is not None for s in new_routed])),
                   "share_photo_path": float(np.mean([s.photo for s in new_routed]))},
           "large_jpeg": time_large_jpeg(model, images[0], cli.jpeg_repeats)}
    if cli.mappings:
        res["mappings"] = compare_mappings(model, folders, images)
    md = markdown(res, info)
    name = "photos" if cli.split == PHOTO_REPORT else f"photos_{cli.split}"
    json_path, md_path = common.write_results(cli.out, name, {"info": info, **res}, md)
    print(md)
    print(f"[photos] wrote {json_path} and {md_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
