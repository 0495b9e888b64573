"""Fashion-MNIST test images dressed as product uploads, classified through the old and the new path.

Each image (a fixed seeded sample of the test split) is made to look like a product photo a
visitor uploads: inverted to a dark garment on white, turned RGB with a slight colour cast over a
rectangle around the garment (a backdrop or a scanner's lit area), enlarged 6-14x and pasted
off-centre on a larger white canvas. Then it is classified by

  * old: `_looks.threshold_look`, the threshold crop on grey levels that model.preprocess ran
    before segmentation (it finds the tinted rectangle, not the garment),
  * new: `_looks.segmented_look`, i.e. `segment.photo_look` when `segment.needs_segmentation`,
    else the old path,

and, as the ceiling, the same test images as they are (28x28, light on black) through the old
path. Accuracy over the ten classes, per class too; time per image (decode excluded, the
enlarged upload's shrink to 256 px included).

    python bench/product_uploads.py                         # 2,000 images, weights/, bench/results
    python bench/product_uploads.py --n 200 --out /tmp/bench # smoke run

Writes <out>/product_uploads.json and product_uploads.md.
"""
from __future__ import annotations

import argparse
import sys
import statistics
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as common  # noqa: E402  (puts the repository root on sys.path)

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from imaging import segment  # noqa: E402
from _looks import routed, run_timed, segmented_look, threshold_look  # noqa: E402
from model import CLASS_NAMES, load_model  # noqa: E402
from training.product_style import product_upload  # noqa: E402

TARGET_ACCURACY = 0.90


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default="/work/shared/data/fashion_mnist", help="a Fashion-MNIST dataset folder or Hub id")
    p.add_argument("--model", default="weights", help="model folder")
    p.add_argument("--n", type=int, default=2000, help="test images, sampled without replacement")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--validation", action="store_true",
                   help="the training images train.py holds out (its --val-size and --seed), for choices; "
                        "writes product_uploads_validation.*")
    p.add_argument("--out", default=str(common.RESULTS), help="results folder")
    return p.parse_args(argv)


def predict(model, looks: list[np.ndarray]) -> np.ndarray:
    """Predicted class ids for looks (28, 28) in [0, 1]."""
    x = (torch.from_numpy(np.stack(looks))[:, None] - model.config.mean) / model.config.std
    with torch.inference_mode():
        return model.predict_proba(x).argmax(1).numpy()


def accuracy(pred: np.ndarray, labels: np.ndarray) -> dict:
    per_class = {CLASS_NAMES[c]: float(np.mean(pred[labels == c] == c)) for c in range(len(CLASS_NAMES))
                 if np.any(labels == c)}
    return {"accuracy": float(np.mean(pred == labels)), "per_class": per_class}


def run(cli) -> dict:
    from training.data import open_split, split_train_val
    if cli.validation:
        import train
        defaults = train.parse_args([])
        ds = open_split(cli.dataset, "train")
        ds = ds.select(split_train_val(len(ds), defaults.val_size, defaults.seed)[1].tolist())
    else:
        ds = open_split(cli.dataset, "test")
    rng = np.random.default_rng(cli.seed)
    idx = np.sort(rng.choice(len(ds), size=min(cli.n, len(ds)), replace=False))
    sample = ds.select(idx.tolist())
    raws = [np.asarray(im.convert("L"), dtype=np.uint8) for im in sample["image"]]
    labels = np.asarray(sample["label"])
    uploads = [product_upload(r, rng) for r in raws]
    model = load_model(cli.model)

    old, wall_old, cpu_old = run_timed(threshold_look, uploads)
    new, wall_new, cpu_new = run_timed(segmented_look, uploads)
    clean = [threshold_look(Image.fromarray(r)) for r in raws]
    every_test_image = [np.asarray(im.convert("L"), dtype=np.uint8) for im in ds["image"]]
    return {"n": len(labels),
            "fashion_mnist_test_routed_to_segmentation": {
                "n": len(every_test_image), "count": int(sum(segment.needs_segmentation(r) for r in every_test_image))},
            "clean_28px": accuracy(predict(model, clean), labels),
            "old_threshold": {**accuracy(predict(model, old), labels), **common.summarize_ms(wall_old),
                              "cpu_median_ms": statistics.median(cpu_old)},
            "new_segmented": {**accuracy(np.array(routed(predict, model, [s.look for s in new], [s.photo for s in new])),
                                         labels),
                              **common.summarize_ms(wall_new), "cpu_median_ms": statistics.median(cpu_new),
                              "share_segmented": float(np.mean([s.mask is not None for s in new])),
                              "share_photo_path": float(np.mean([s.photo for s in new]))}}


def markdown(res: dict, info: dict) -> str:
    which = "held-out training (train.py's validation split)" if info.get("validation") else "test"
    rows = [[f"Fashion-MNIST {which} images as they are (28x28)", res["clean_28px"]["accuracy"] * 100, None, None],
            *[[label, res[key]["accuracy"] * 100, res[key]["cpu_median_ms"], res[key]["median_ms"]]
              for label, key in (("product uploads, old path (threshold crop)", "old_threshold"),
                                 ("product uploads, new path (`segment.photo_look`)", "new_segmented"))]]
    per_class = [[name, res["old_threshold"]["per_class"][name] * 100, res["new_segmented"]["per_class"][name] * 100]
                 for name in res["new_segmented"]["per_class"]]
    return "\n\n".join([
        f"# Product uploads: Fashion-MNIST {which} images as product photos",
        f"{res['n']} {which} images (seed {info['seed']}), each inverted to white, tinted over a rectangle "
        "around the garment, enlarged 6-14x and pasted off-centre on a white canvas 1.2-2x larger. "
        f"Target: > {TARGET_ACCURACY:.0%} through the new path. Model: {info['model']}. "
        f"Share of uploads routed to segmentation: {res['new_segmented']['share_segmented']:.0%}.",
        common.md_table(["input", "accuracy %", "preprocess CPU ms (median)", "wall ms (median)"], rows),
        common.md_table(["class", "old %", "new %"], per_class),
        "Routing: `segment.needs_segmentation` sends {count} of all {n:,} Fashion-MNIST {which} images (28x28, "
        "light on black) to segmentation; the rest keep the old path unchanged.".format(
            which=which, **res["fashion_mnist_test_routed_to_segmentation"]),
        f"Command: `{info['command']}`. Machine: {info['machine']['cpu_model']}, "
        f"{info['machine']['cpu_count']} CPUs, load average at start "
        f"{', '.join(f'{x:.1f}' for x in info['machine']['load_average_1_5_15min'])} (times are inflated under load)."])


def main(argv=None) -> int:
    cli = parse_args(argv)
    torch.set_num_threads(1)
    info = {"model": common.model_note(cli.model), "seed": cli.seed, "dataset": cli.dataset, "validation": cli.validation,
            "command": common.command_line("bench/product_uploads.py"), "machine": common.machine_info()}
    res = run(cli)
    md = markdown(res, info)
    name = "product_uploads_validation" if cli.validation else "product_uploads"
    json_path, md_path = common.write_results(cli.out, name, {"info": info, **res}, md)
    print(md)
    print(f"[product_uploads] wrote {json_path} and {md_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
