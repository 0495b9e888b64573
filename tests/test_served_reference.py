"""The served model's answers: unchanged where the network is, recorded for the shipped weights elsewhere.

tests/data/served_reference.npz holds, for the 200 images of the committed test slice, the
probabilities the service served and `predict_proba` of the network as trained, from commit 5e0f79d
(the last of the flat layout): the Fashion-MNIST network has not been retrained since, so a change
by more than float rounding fails here. The photo-dependent half (the CC0 phone photos in
examples/photos: 28x28 look, routed as a photo or not, served answer; and the detector scores, whose
detector is fitted on photos too) is recorded for the shipped weights by
tests/record_photo_reference.py, with their sha256.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageOps

from dashboard.service import Service, load_weights
from imaging.preprocess import look_and_mask, normalize
from model import WEIGHTS_FILE
from modelrepo.ood import file_sha256
from training.data import load_images

REPO = Path(__file__).resolve().parents[1]
REFERENCE = np.load(REPO / "tests" / "data" / "served_reference.npz")


@pytest.fixture(scope="module")
def service() -> Service:
    return Service(load_weights(None))


def recorded_for_these_weights() -> None:
    assert file_sha256(REPO / "weights" / WEIGHTS_FILE) == str(REFERENCE["photo_weights_sha256"]), \
        "weights/ changed: rerun python tests/record_photo_reference.py"


def test_fashion_mnist_answers_are_unchanged(service):
    looks, _, _ = load_images(REPO / "tests" / "data" / "fashion_mnist", "test")
    served = [service.assess(look) for look in looks.numpy()]
    np.testing.assert_allclose(np.stack([a.probs for a in served]), REFERENCE["fmnist_probs"], rtol=0, atol=1e-6)
    recorded_for_these_weights()
    np.testing.assert_allclose([a.ood_score for a in served], REFERENCE["fmnist_scores"], rtol=1e-5, atol=1e-4)
    cfg = service.model.config
    unfused = service.model.predict_proba((looks[:, None] - cfg.mean) / cfg.std).numpy()
    np.testing.assert_allclose(unfused, REFERENCE["fmnist_unfused"], rtol=0, atol=1e-6)


def test_photo_looks_and_answers_are_unchanged(service):
    recorded_for_these_weights()
    names = [str(n) for n in REFERENCE["photo_names"]]
    assert names == sorted(p.name for p in (REPO / "examples" / "photos").glob("*.jpg"))
    for i, name in enumerate(names):
        seen = look_and_mask(ImageOps.exif_transpose(Image.open(REPO / "examples" / "photos" / name)).convert("RGB"))
        assert seen.photo == bool(REFERENCE["photo_routed"][i]), name
        np.testing.assert_allclose(seen.look, REFERENCE["photo_looks"][i], rtol=0, atol=1e-6, err_msg=name)
        a = service.assess(seen.look, photo=seen.photo, material=seen.material)
        np.testing.assert_allclose(a.probs, REFERENCE["photo_probs"][i], rtol=0, atol=1e-6, err_msg=name)
        # Since the three-way verdict (modelrepo/verdict.py) a photo's served score is the photo
        # detector's; the Fashion-MNIST detector's score of the photo network is still the recorded one.
        cfg = service.model.config
        x = normalize(seen.look, cfg.mean, cfg.std)[None, None]
        recorded = float(service.detector.score(service.photo_serving, x)[0])
        np.testing.assert_allclose(recorded, REFERENCE["photo_scores"][i], rtol=1e-5, atol=1e-4, err_msg=name)
        material = None if seen.material is None else torch.from_numpy(seen.material)[None]
        photo_score = float(service.photo_detector.score(service.photo_serving, x, material)[0])
        np.testing.assert_allclose(a.ood_score, photo_score, rtol=1e-5, atol=1e-4, err_msg=name)
