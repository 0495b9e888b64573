"""Photo-reading variants judged where the photo protocol allows choices: the selection part.

The photo protocol (docs/decision_log.md): choices are made on `selection`, a seeded part of the
photo train split (training.data.photo_selection_split), never on `validation`. This script scores
one or more model folders on `selection` under each value of a segmentation setting
(imaging.segment.PAIR_SHARE: also keep connected components at least that share of the largest's
area; "none": the largest only, as served), through the path the app serves a photo (the look of
`imaging.preprocess.fashion_look`, the network of `for_photos()`). Models whose photo layers trained
on `selection` (weights/) cannot be judged here; pass models trained on `fit` (train.py
--photo-norms, training/adapt.py).

    python bench/photo_selection.py --model R=outputs/photo-norms-fit B=outputs/photo-branch-s3 --pair-share none 0.3 0.5

Writes <out>/photo_selection.json and photo_selection.md.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as common  # noqa: E402  (puts the repository root on sys.path)

import torch  # noqa: E402

from imaging import segment  # noqa: E402
from model import load_model  # noqa: E402
from training.data import PHOTO_SELECTION, load_photo_looks  # noqa: E402
from training.evaluate import strict_by_folder, strict_hits, wilson_interval  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--photos", default="/work/shared/data/clothing_photos", help="the clothing_photos folder")
    p.add_argument("--model", nargs="+", required=True, metavar="NAME=FOLDER", help="model folders trained on `fit`")
    p.add_argument("--pair-share", nargs="+", default=["none"], help="segment.PAIR_SHARE values ('none': today's)")
    p.add_argument("--out", default=str(common.RESULTS), help="results folder")
    p.add_argument("--looks-cache", default=None,
                   help="a folder: each setting's looks are saved there and read back on the next run (segmenting "
                        "the photos is most of the time)")
    return p.parse_args(argv)


def selection_looks(photos: str, share: str, cache: str | None) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """The selection part's looks, right classes and folders with segment.PAIR_SHARE set to `share`."""
    path = Path(cache) / f"selection-pair-{share}.pt" if cache else None
    if path is not None and path.is_file():
        saved = torch.load(path, weights_only=True)
        return saved["looks"], saved["allowed"], saved["folders"]
    segment.PAIR_SHARE = None if share == "none" else float(share)
    looks, allowed, folders = load_photo_looks(photos, PHOTO_SELECTION)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save({"looks": looks, "allowed": allowed, "folders": folders}, path)
    return looks, allowed, folders


def score(model, looks: torch.Tensor, allowed: torch.Tensor, folders: list[str]) -> dict:
    strict = strict_hits(model.for_photos(), looks, allowed)[1]
    k, n = int(strict.sum()), len(strict)
    return {"n": n, "strict": k / n, "strict_ci95": list(wilson_interval(k, n)),
            "per_folder": strict_by_folder(strict, folders)}


def markdown(res: dict, info: dict) -> str:
    names = list(info["models"])
    folders = list(next(iter(next(iter(res.values())).values()))["per_folder"])
    rows = [[share, name, r["n"], r["strict"] * 100, *(r["per_folder"][f] * 100 for f in folders)]
            for share, by_model in res.items() for name, r in by_model.items()]
    return "\n\n".join([
        "# Photo reading on the selection part of the photo train split",
        "Strict accuracy (%) per `segment.PAIR_SHARE` and model: " + ", ".join(f"{n} = {info['models'][n]}" for n in names)
        + ". The selection part chooses; the validation split is not read here.",
        common.md_table(["PAIR_SHARE", "model", "n", "strict %", *folders], rows),
        f"Command: `{info['command']}`. Machine: {info['machine']['cpu_model']}, {info['machine']['cpu_count']} CPUs."])


def main(argv=None) -> int:
    cli = parse_args(argv)
    models = dict(m.split("=", 1) for m in cli.model)
    info = {"models": {name: common.rel(folder) for name, folder in models.items()}, "photos": cli.photos, "split": PHOTO_SELECTION,
            "command": common.command_line("bench/photo_selection.py"), "machine": common.machine_info()}
    loaded = {name: load_model(folder) for name, folder in models.items()}
    res = {}
    for share in cli.pair_share:
        looks, allowed, folders = selection_looks(cli.photos, share, cli.looks_cache)
        res[share] = {name: score(model, looks, allowed, folders) for name, model in loaded.items()}
        print(share, {n: round(r["strict"], 4) for n, r in res[share].items()}, flush=True)
    md = markdown(res, info)
    json_path, md_path = common.write_results(cli.out, "photo_selection", {"info": info, "scores": res}, md)
    print(md)
    print(f"[photo_selection] wrote {json_path} and {md_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
