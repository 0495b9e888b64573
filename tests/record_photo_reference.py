"""Record the photo-dependent half of tests/data/served_reference.npz for the shipped weights.

The Fashion-MNIST probabilities of the 200 slice images stay as recorded before the code moved into
its folders: the base network is never retrained, so they must not move. The rest depends on the
photo network, which a new photo model changes on purpose: the example photos' answers, and the
detector scores (the detector is fitted on training images and on photos through the photo
network). This script records that half again, with the sha256 of the weights it describes, so that
the test fails until it is rerun after the weights change.

    python tests/record_photo_reference.py
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))   # run as a script from anywhere: the project's packages are at the root

from dashboard.service import Service, load_weights  # noqa: E402
from imaging.preprocess import look_and_mask, normalize  # noqa: E402
from model import WEIGHTS_FILE  # noqa: E402
from modelrepo.ood import file_sha256  # noqa: E402
from training.data import load_images  # noqa: E402

REFERENCE = REPO / "tests" / "data" / "served_reference.npz"
PHOTOS = REPO / "examples" / "photos"


def record(service: Service, weights: Path) -> dict:
    """Each example photo's look, routing, served probabilities and detector score; the slice images' scores."""
    names = sorted(p.name for p in PHOTOS.glob("*.jpg"))
    looks, routed, probs, scores = [], [], [], []
    cfg = service.model.config
    for name in names:
        seen = look_and_mask(ImageOps.exif_transpose(Image.open(PHOTOS / name)).convert("RGB"))
        looks.append(seen.look)
        routed.append(seen.photo)
        probs.append(service.assess(seen.look, photo=seen.photo, material=seen.material).probs)
        x = normalize(seen.look, cfg.mean, cfg.std)[None, None]
        scores.append(float(service.detector.score(service.photo_serving, x)[0]))
    return {"photo_names": np.array(names), "photo_looks": np.stack(looks).astype(np.float32),
            "photo_routed": np.array(routed), "photo_probs": np.stack(probs).astype(np.float32),
            "photo_scores": np.array(scores), "photo_weights_sha256": np.array(file_sha256(weights)),
            "fmnist_scores": np.array([service.assess(look).ood_score for look in slice_looks()])}


def slice_looks() -> np.ndarray:
    return load_images(REPO / "tests" / "data" / "fashion_mnist", "test")[0].numpy()


def main() -> int:
    weights = REPO / "weights"
    kept = {k: v for k, v in np.load(REFERENCE).items() if k in ("fmnist_probs", "fmnist_unfused")}
    np.savez_compressed(REFERENCE, **kept, **record(Service(load_weights(None)), weights / WEIGHTS_FILE))
    print(f"wrote the photo-dependent half of {REFERENCE.relative_to(REPO)} for {weights / WEIGHTS_FILE}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
