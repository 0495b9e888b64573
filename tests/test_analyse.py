"""What a visitor is told about an answer, through the real app: /analyse, the verdict on the page,
and real phone photos end to end.

- Test images are in distribution and get the calibrated confidence in words; uniform noise and
  MNIST digits (a committed slice) are flagged with the plain verdict.
- The page shows the verdict (real Chromium), and the outline of what was kept beside the 28x28.
- The committed example photos (examples/photos/, CC0) go through upload -> segmentation -> model.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from gradio_client import handle_file
from PIL import Image

from helpers import ARTIFACTS, CLASSIFY_KEYS, NEIGHBOUR_KEYS, REPO, needs_chromium
from dashboard.service import GUESS

SLICE = REPO / "tests" / "data" / "fashion_mnist"
PHOTOS = REPO / "examples" / "photos"
KEYS = CLASSIFY_KEYS | NEIGHBOUR_KEYS


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, list[Path]]:
    from training.data import load_images
    folder = tmp_path_factory.mktemp("analyse")
    _, labels, raw = load_images(str(SLICE), "test")
    digits = np.load(REPO / "tests" / "data" / "mnist_digits.npz")
    digits = digits[digits.files[0]]
    rng = np.random.default_rng(0)
    out = {"fashion": [], "noise": [], "mnist": []}
    for i in range(10):
        for kind, img in (("fashion", raw[i]), ("noise", rng.integers(0, 256, (64, 64), dtype=np.uint8)),
                          ("mnist", digits[i])):
            path = folder / f"{kind}-{i}.png"
            Image.fromarray(img).save(path)
            out[kind].append(path)
    return out


def analyse(client, path: Path) -> dict:
    return client.predict(handle_file(str(path)), api_name="/analyse")


def test_analyse_answers_with_the_verdict_and_confidence(client, files):
    answers = {kind: [analyse(client, p) for p in paths] for kind, paths in files.items()}
    for a in answers["fashion"]:
        assert set(a) == KEYS and abs(sum(a["probabilities"].values()) - 1) < 1e-4
        assert a["label"] == max(a["probabilities"], key=a["probabilities"].get)
    inside = [a["in_distribution"] for a in answers["fashion"]]
    assert sum(inside) >= 9, inside                      # 95% of test images pass the threshold
    assert all("test images" in a["confidence"] for a in answers["fashion"] if a["in_distribution"])
    for kind in ("noise", "mnist"):
        flagged = [not a["in_distribution"] for a in answers[kind]]
        assert sum(flagged) >= 9, (kind, flagged)
        assert all(a["ood_score"] > a["ood_threshold"] and a["confidence"] == GUESS
                   for a in answers[kind] if not a["in_distribution"])


def test_classify_keeps_its_output(client, files):
    out = client.predict(handle_file(str(files["fashion"][0])), api_name="/classify")
    assert set(out) == {"label", "confidences"} and len(out["confidences"]) == 3


@pytest.mark.skipif(not PHOTOS.is_dir(), reason="no example photos")
def test_real_photos_end_to_end(client):
    """Each committed photo is segmented and classified by the photo network (its own BatchNorm),
    which is what the answer's probabilities must be; most land in their folder's classes."""
    from training.data import PHOTO_FOLDERS
    from model import load_model
    from imaging.preprocess import look_and_mask, normalize
    served = load_model(client.predict(api_name="/model_info")["folder"])
    right, moved = 0, []
    photos = sorted(PHOTOS.glob("*.jpg"))
    for path in photos:
        folder = path.stem.split("-", 1)[1]
        a = analyse(client, path)
        assert set(a) == KEYS
        with Image.open(path) as img:
            seen = look_and_mask(img.convert("RGB"))
        assert seen.photo, path.name
        x = normalize(seen.look, served.config.mean, served.config.std)[None, None]
        photo_p, plain_p = served.for_photos().predict_proba(x)[0], served.predict_proba(x)[0]
        names = served.label_names
        assert max(abs(a["probabilities"][n] - float(photo_p[i])) for i, n in enumerate(names)) < 1e-4, path.name
        moved.append(float((photo_p - plain_p).abs().max()))
        right += a["label"] in PHOTO_FOLDERS[folder].strict
    if served.config.photo_norms:          # the two networks differ, so the check above tells them apart
        assert max(moved) > 0.05, moved
    # /explain answers (and explains) a photo with the same network.
    label = client.predict(handle_file(str(photos[-1])), ["Saliency"], "predicted class", api_name="/explain")[1]
    assert label["label"] == names[int(photo_p.argmax())]
    mapped = sum(bool(PHOTO_FOLDERS[p.stem.split("-", 1)[1]].strict) for p in photos)
    assert right >= mapped - 2, f"{right} of {mapped} photos in their folder's classes"


@needs_chromium
def test_page_shows_the_verdict_and_the_outline(app_server, files, page):
    from playwright.sync_api import expect
    page.goto(app_server.url, wait_until="domcontentloaded")
    page.locator("#upload input[type=file]").set_input_files(str(files["noise"][0]))
    expect(page.locator("#explain-verdict")).to_contain_text("does not look like the garments", timeout=90_000)
    expect(page.locator("#explain-maps img").first).to_be_visible(timeout=90_000)   # still explained
    page.screenshot(path=str(ARTIFACTS / "browser_verdict_noise.png"), full_page=True)
    page.locator("#upload button[aria-label='Remove Image']").click()
    photo = next(PHOTOS.glob("*pants.jpg"), None) or files["fashion"][1]
    page.locator("#upload input[type=file]").set_input_files(str(photo))
    expect(page.locator("#explain-kept img")).to_be_visible(timeout=90_000)
    expect(page.locator("#status")).to_contain_text("outlined region", timeout=90_000)
    page.wait_for_timeout(500)
    page.screenshot(path=str(ARTIFACTS / "browser_photo.png"), full_page=True)
