"""Localisation over a photo split: does each method's map look at the garment or at the ground?

For every photo of a folder that preprocessing segments (`imaging.preprocess.look_and_mask`: a
photo, with the garment's mask), each method's map for the class the photo network predicts, and
the share of its positive attribution inside the mask (`explain.agreement.localisation`), beside
the mask's own share of the image: a map spread evenly would score that much. The means over the
split go into <model_dir>/evaluation/trust.json under "photo_localisation" (the rest of the file is
kept), where the Trust view reads them.

    python -m explain.photo_localisation weights --photos ../shared/data/clothing_photos/validation
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from explain.agreement import localisation, mask_on_look
from explain.methods import METHODS, explain_batch
from imaging.preprocess import look_and_mask, normalize

PHOTO_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")


def segmented_photos(folder: Path, limit: int | None = None):
    """(path, look (28, 28), mask on the look (28, 28) bool) of each photo in folder/*/ that is
    segmented as a photo; the others (and unreadable files) are counted, not returned."""
    from PIL import Image, ImageOps
    kept, skipped = [], 0
    paths = sorted(p for p in Path(folder).glob("*/*") if p.suffix.lower() in PHOTO_SUFFIXES)
    for path in paths[:limit]:
        try:
            with Image.open(path) as img:
                seen = look_and_mask(ImageOps.exif_transpose(img).convert("RGB"))
        except (OSError, ValueError):
            skipped += 1
            continue
        if not seen.photo or seen.mask is None:
            skipped += 1
            continue
        kept.append((path, seen.look, mask_on_look(seen.mask)))
    return kept, skipped


@torch.no_grad()
def _predicted(network, x: torch.Tensor) -> list[int]:
    return network.predict_proba(x).argmax(1).tolist()


def photo_localisation(model, photos: list, methods=tuple(METHODS), batch_size: int = 32) -> dict:
    """Per method, the mean share of positive attribution inside the garment mask over `photos`
    (from `segmented_photos`), with the mean mask area; maps from the photo network (`for_photos`)."""
    network = model.for_photos()
    inside = {m: [] for m in methods}
    areas = []
    for i in range(0, len(photos), batch_size):
        chunk = photos[i:i + batch_size]
        x = torch.stack([normalize(look, model.config.mean, model.config.std)[None] for _, look, _ in chunk])  # (B, 1, 28, 28)
        targets = _predicted(network, x)
        maps = {m: explain_batch(network, x, m, targets) for m in methods}      # (B, 28, 28) each
        for j, (_, _, mask) in enumerate(chunk):
            loc = localisation({m: maps[m][j] for m in methods}, mask)
            areas.append(float(mask.mean()))
            for m in methods:
                if loc[m]["inside"] is not None:
                    inside[m].append(loc[m]["inside"])
    return {"n_photos": len(photos), "mean_mask_area": float(np.mean(areas)) if areas else None,
            "methods": {m: {"mean_inside": float(np.mean(v)) if v else None, "n": len(v)} for m, v in inside.items()}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("model_dir", nargs="?", default="weights", help="model folder with evaluation/trust.json")
    parser.add_argument("--photos", required=True, help="a photo split: a folder of class folders of photos")
    parser.add_argument("--limit", type=int, default=None, help="at most this many photos (default: all)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = parser.parse_args(argv)
    from model import load_model
    if args.threads:
        torch.set_num_threads(args.threads)
    started = time.perf_counter()
    photos, skipped = segmented_photos(Path(args.photos), args.limit)
    result = photo_localisation(load_model(args.model_dir), photos)
    result.update({"split": Path(args.photos).as_posix(), "not_segmented_as_photos": skipped,
                   "seconds": round(time.perf_counter() - started, 1)})
    path = Path(args.model_dir) / "evaluation" / "trust.json"
    trust = json.loads(path.read_text()) if path.is_file() else {}
    trust["photo_localisation"] = result
    path.write_text(json.dumps(trust, indent=1))
    print(json.dumps(result, indent=1))
    print(f"wrote photo_localisation into {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
