"""The three-way verdict: fashion-mnist-like, garment-photo, not-a-garment (modelrepo/verdict.py).

- The rule, the files (written, read back, refused when damaged or fitted for other weights) and the
  shipped verdict beside the committed weights.
- Through the real app: a Fashion-MNIST test image is fashion-mnist-like; the committed garment photos
  (examples/photos) are garment photos, with a confidence sentence from held-out photos; an MNIST
  digit, uniform noise and the committed natural photos (tests/data/natural) are not garments.
- Drawings (tests/drawings.py) are judged by the drawings' detector: garment drawings are garments
  (fashion-mnist-like), a scribbled zigzag and a drawn digit-like loop are not.
"""
from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from gradio_client import handle_file
from PIL import Image

from drawings import SHAPES, slug
from helpers import REPO
from model import load_model
from modelrepo import ood
from imaging.material import MATERIAL
from modelrepo.verdict import (DRAWING_FILES, FASHION_MNIST_LIKE, FEATURES, GARMENT_PHOTO, KINDS, MATERIAL_FEATURES,
                               NOT_A_GARMENT, VERDICT_META, VERDICT_TENSORS, PhotoDetector, Verdict, VerdictError, kind)
from training.data import PHOTO_FOLDERS
from training.not_garments import PACKAGES
from training.fit_verdict import (DRAWING_KEEP, PHOTO_KEEP, PRODUCT_STYLE, drawing_items, fit_detector, reliability_bins,
                                  set_margins)

WEIGHTS = REPO / "weights"
PHOTOS = REPO / "examples" / "photos"
NATURAL = REPO / "tests" / "data" / "natural"
SLICE = REPO / "tests" / "data" / "fashion_mnist"


def test_the_verdict_follows_the_route_and_the_flag():
    assert kind(photo=False, flagged=False) == FASHION_MNIST_LIKE
    assert kind(photo=True, flagged=False) == GARMENT_PHOTO
    assert kind(photo=False, flagged=True) == kind(photo=True, flagged=True) == NOT_A_GARMENT
    assert set(KINDS) == {FASHION_MNIST_LIKE, GARMENT_PHOTO, NOT_A_GARMENT}


@pytest.fixture(scope="module")
def model():
    return load_model(WEIGHTS)


@pytest.fixture
def small_verdict(model, tmp_path) -> tuple[Verdict, torch.Tensor, Path]:
    """A verdict fitted on Fashion-MNIST slice looks grouped in two, written to a folder of its own."""
    from training.data import load_images
    looks, labels, _ = load_images(str(SLICE), "test")
    x = ood.as_input(model, looks)
    detector = fit_detector(model, x, (labels >= 5).long(), 2, tied=True)
    background = fit_detector(model, x[labels < 3], torch.zeros(int((labels < 3).sum()), dtype=torch.long), 1, tied=True)
    detector.background_means, detector.background_whiten = background.means, background.whiten
    detector.background_log_prior = background.log_prior
    set_margins(detector, *detector.parts(model, model.served_features(x), x), 0.9)
    top = model.predict_proba(x).amax(1)
    v = Verdict(detector, ["low", "high"], reliability_bins(top, torch.ones(len(x), dtype=torch.bool)), {"protocol": {}})
    v.save(tmp_path, weights=WEIGHTS / "model.safetensors")
    return v, x, tmp_path


def test_a_saved_verdict_reads_back_with_the_same_scores(model, small_verdict):
    v, x, folder = small_verdict
    back = Verdict.load(folder, model)
    assert torch.equal(back.detector.score(model, x), v.detector.score(model, x))
    assert back.detector.threshold == v.detector.threshold and back.folders == ["low", "high"]
    flagged = back.detector.flag(back.detector.score(model, x)).double().mean()
    assert 0.05 < flagged < 0.2                               # the 0.9 quantile: about a tenth above it
    assert back.reliability(0.999)["hi"] == 1.0 and back.reliability(0.0) is None


def test_with_a_background_the_score_is_the_larger_margin_of_the_ratio_and_the_density(model, small_verdict):
    """The likelihood ratio (the background's log density minus the garments') over its threshold, or
    minus the garments' log density over its own, whichever is larger; 0.9 of the fitted images pass."""
    v, x, _ = small_verdict
    d = v.detector
    f = ood.density_input(model, FEATURES, model.served_features(x), x)
    garments = ood.log_density(f, d.means, d.whiten, d.log_prior)
    background = ood.log_density(f, d.background_means, d.background_whiten, d.background_log_prior)
    expected = torch.maximum(background - garments - d.ratio_threshold, -garments - d.density_threshold)
    torch.testing.assert_close(d.score(model, x), expected)
    assert d.threshold == 0 and abs(float((expected <= 0).double().mean()) - 0.9) < 0.01
    assert float((-garments > d.density_threshold).double().mean()) <= 0.011     # the density: its far end only
    alone = PhotoDetector(d.means, d.whiten, d.log_prior)
    torch.testing.assert_close(alone.score(model, x), -garments)


def test_a_detector_that_weighs_material_appends_it_reads_back_and_asks_for_it(model, tmp_path):
    """With MATERIAL_FEATURES the Gaussians are of the network's features followed by the material;
    the features' name is written and read back, and a call without material is refused."""
    from training.data import load_images
    looks, labels, _ = load_images(str(SLICE), "test")
    x = ood.as_input(model, looks)
    material = torch.rand(len(x), MATERIAL, generator=torch.Generator().manual_seed(0))
    d = fit_detector(model, x, (labels >= 5).long(), 2, tied=True, material=material)
    assert d.uses_material and d.means.shape[1] == sum(model.config.widths) + ood.LOOK_STATS + MATERIAL
    f = torch.cat([ood.density_input(model, FEATURES, model.served_features(x), x), material], dim=1)
    torch.testing.assert_close(d.score(model, x, material), -ood.log_density(f, d.means, d.whiten, d.log_prior))
    with pytest.raises(ValueError, match="material"):
        d.score(model, x)
    d.threshold = float(d.score(model, x, material).median())
    Verdict(d, ["low", "high"], [], {"protocol": {}}).save(tmp_path, weights=WEIGHTS / "model.safetensors")
    assert json.loads((tmp_path / VERDICT_META).read_text())["features"] == MATERIAL_FEATURES
    back = Verdict.load(tmp_path, model).detector
    assert back.features == MATERIAL_FEATURES
    assert torch.equal(back.score(model, x, material), d.score(model, x, material))


@pytest.mark.parametrize("damage", ["no tensors", "garbled tensors", "no json", "nan threshold", "other weights",
                                    "other width", "half a background", "material named, not fitted", "unknown features"])
def test_a_damaged_verdict_is_refused_with_the_reason(model, small_verdict, damage):
    _, _, folder = small_verdict
    meta = json.loads((folder / VERDICT_META).read_text())
    if damage == "no tensors":
        (folder / VERDICT_TENSORS).unlink()
    elif damage == "garbled tensors":
        (folder / VERDICT_TENSORS).write_bytes(b"\x00" * 64)
    elif damage == "no json":
        (folder / VERDICT_META).unlink()
    elif damage == "nan threshold":
        (folder / VERDICT_META).write_text(json.dumps(meta | {"threshold": math.nan}))
    elif damage == "other weights":
        shutil.copy(WEIGHTS / "model.safetensors", folder / "model.safetensors")
        (folder / VERDICT_META).write_text(json.dumps(meta | {"weights_sha256": "0" * 64}))
    elif damage in ("material named, not fitted", "unknown features"):
        features = MATERIAL_FEATURES if damage.startswith("material") else "gda-layers+look+colour"
        (folder / VERDICT_META).write_text(json.dumps(meta | {"features": features}))
    elif damage == "half a background":
        from safetensors.torch import load_file, save_file
        t = load_file(str(folder / VERDICT_TENSORS))
        del t["background_whiten"]
        save_file(t, str(folder / VERDICT_TENSORS))
    else:
        from safetensors.torch import load_file, save_file
        t = load_file(str(folder / VERDICT_TENSORS))
        d = t["means"].shape[1] - 1
        t = {"means": t["means"][:, :d].contiguous(), "whiten": t["whiten"][:, :d, :d].contiguous(),
             "log_prior": t["log_prior"]}
        save_file(t, str(folder / VERDICT_TENSORS))
        (folder / VERDICT_META).write_text(json.dumps(meta | {"shapes": {k: list(v.shape) for k, v in t.items()}}))
    with pytest.raises(VerdictError, match=str(folder)):
        Verdict.load(folder, model)


def test_the_committed_weights_carry_a_verdict_fitted_on_train_photos_only(model):
    v = Verdict.load(WEIGHTS, model)
    assert isinstance(v.detector, PhotoDetector) and math.isfinite(v.detector.threshold)
    protocol = v.meta["protocol"]
    assert protocol["split"] == "train" and "validation" not in json.dumps(protocol)
    assert v.detector.has_background and protocol["background"]["routed_as_photos"] > 500
    # The background: the fit photos' grounds, and real images of other things with their composites
    # (training/not_garments.py), each its own Gaussian; none of them from the photo set's validation.
    gaussians = protocol["background"]["gaussians"]
    assert list(gaussians) == ["crops", "composites", "images"] and all(routed > 100 for _, routed in gaussians.values())
    assert len(v.detector.background_means) == 3 and len(v.detector.background_whiten) == 3
    assert set(protocol["background"]["not_garments"]["packages"]) == set(PACKAGES)
    # One garment Gaussian per in-class photo folder, and one of Fashion-MNIST *train* garments dressed
    # as shop uploads (training/product_style.py), not of the test images bench/verdict.py reports.
    assert v.folders == [f for f, m in PHOTO_FOLDERS.items() if m.strict] + [PRODUCT_STYLE]
    assert protocol["product_style"]["split"] == "train" and protocol["product_style"]["routed_as_photos"] > 1000
    # The photo Gaussians weigh what the region is made of (imaging/material.py) as well.
    assert v.detector.features == MATERIAL_FEATURES
    # The threshold keeps the share of held-out garment photos that the decision log chose (one home).
    assert protocol["keep"] == PHOTO_KEEP
    assert Verdict.load(WEIGHTS, model, DRAWING_FILES).meta["protocol"]["keep"] == DRAWING_KEEP
    assert sum(b["count"] for b in v.bins) > 100 and all(b["accuracy"] is None or 0 <= b["accuracy"] <= 1 for b in v.bins)


def test_the_committed_weights_carry_a_drawing_verdict_fitted_on_validation_drawings(model):
    v = Verdict.load(WEIGHTS, model, DRAWING_FILES)
    assert isinstance(v.detector, PhotoDetector) and math.isfinite(v.detector.threshold)
    assert v.detector.score_name.startswith("drawing") and v.bins == []
    protocol = v.meta["protocol"]
    assert protocol["fit_drawings"] > 500 and protocol["selection_drawings"] > 100 and protocol["not_read_as_drawings"] == 0
    assert set(v.folders) == set(SHAPES)
    assert "held-out shape sets: ['shapes" in protocol["selection_split"]


def test_the_drawings_threshold_is_set_on_shapes_the_gaussians_never_saw(tmp_path, model):
    """drawing_items holds out whole shape sets: no shape of the selection part is in the fit part."""
    from drawings import validation_drawings
    for name, variant, _ in validation_drawings():
        (tmp_path / slug(name)).mkdir(exist_ok=True)
        (tmp_path / slug(name) / f"{variant}.png").touch()
    fit, selection = drawing_items(tmp_path, model.label_names)
    shape_set = lambda items: {p.stem.rsplit("-", 1)[-1] for p, _ in items}     # noqa: E731
    assert fit and selection and not shape_set(fit) & shape_set(selection)
    assert shape_set(fit) | shape_set(selection) == {"shapes0", "shapes1"}


# ---------------------------------------------------------------------------------------------
# Through the real app
# ---------------------------------------------------------------------------------------------

def analyse(client, image, folder: Path, name: str) -> dict:
    path = folder / name
    if not isinstance(image, Path):
        Image.fromarray(image).save(path)
        image = path
    return client.predict(handle_file(str(image)), api_name="/analyse")


def zigzag(points: list[tuple[int, int]], width: int = 14) -> np.ndarray:
    """Dark strokes through `points` on a white 280x280 canvas, as the Draw tab gives a drawing (H, W, 3)."""
    from PIL import ImageDraw
    img = Image.new("RGB", (280, 280), "white")
    ImageDraw.Draw(img).line(points, fill="black", width=width, joint="curve")
    return np.asarray(img)


def test_drawings_are_judged_against_garment_drawings_through_the_app(client, tmp_path):
    from drawings import drawings
    drawn = [(name, img) for name, variant, img in drawings(seeds=(0,)) if variant.endswith("black-0")]
    answers = [(name, analyse(client, np.asarray(img), tmp_path, f"g{i}.png")) for i, (name, img) in enumerate(drawn)]
    kinds = [a["kind"] for _, a in answers]
    # The drawings' detector keeps 95% of held-out validation drawings; these are other shapes.
    assert sum(k == FASHION_MNIST_LIKE for k in kinds) >= 0.8 * len(kinds), kinds
    threshold = client.predict(api_name="/model_info")["drawing_verdict"]["threshold"]
    assert all(a["ood_threshold"] == threshold for _, a in answers)      # judged by the drawings' detector
    rng = np.random.default_rng(3)
    scribbles = [zigzag([(int(x), int(y)) for x, y in rng.uniform(30, 250, (12, 2))]) for _ in range(3)]
    loop = zigzag([(140, 40), (200, 80), (140, 130), (80, 80), (140, 40), (140, 240)])     # a "9"
    others = [analyse(client, img, tmp_path, f"s{i}.png") for i, img in enumerate([*scribbles, loop])]
    assert [a["kind"] for a in others] == [NOT_A_GARMENT] * len(others), [a["kind"] for a in others]
    assert all("probably not a garment" in a["confidence"] for a in others)


def test_the_three_verdicts_through_the_app(client, tmp_path):
    from training.data import load_images
    raw = load_images(str(SLICE), "test")[2]
    digits = np.load(REPO / "tests" / "data" / "mnist_digits.npz")
    digits = digits[digits.files[0]]
    rng = np.random.default_rng(0)
    info = client.predict(api_name="/model_info")
    photo_threshold = info["photo_verdict"]["threshold"]

    fashion = [analyse(client, raw[i], tmp_path, f"f{i}.png") for i in range(10)]
    assert sum(a["kind"] == FASHION_MNIST_LIKE for a in fashion) >= 9, [a["kind"] for a in fashion]
    assert all("test images" in a["confidence"] for a in fashion if a["kind"] == FASHION_MNIST_LIKE)

    garments = [p for p in sorted(PHOTOS.glob("*.jpg")) if PHOTO_FOLDERS[p.stem.split("-", 1)[1]].strict]
    photos = [analyse(client, p, tmp_path, p.name) for p in garments]
    assert sum(a["kind"] == GARMENT_PHOTO for a in photos) >= len(garments) - 1, [a["kind"] for a in photos]
    for a in photos:
        assert a["in_distribution"] == (a["kind"] != NOT_A_GARMENT)
        assert a["ood_threshold"] == photo_threshold           # judged by the photo detector
        if a["kind"] == GARMENT_PHOTO:
            assert "less sure on photos" in a["confidence"] and "photos" in a["confidence"].split("less sure")[1]

    others = {"digit": [analyse(client, digits[i], tmp_path, f"d{i}.png") for i in range(5)],
              "noise": [analyse(client, rng.integers(0, 256, (64, 64), dtype=np.uint8), tmp_path, f"n{i}.png")
                        for i in range(5)],
              "natural": [analyse(client, p, tmp_path, p.name) for p in sorted(NATURAL.glob("*.*")) if p.suffix != ".md"]}
    for name in ("digit", "noise"):
        assert all(a["kind"] == NOT_A_GARMENT for a in others[name]), (name, [a["kind"] for a in others[name]])
    for a in others["digit"] + others["noise"] + others["natural"]:
        assert a["kind"] in KINDS and a["in_distribution"] == (a["kind"] != NOT_A_GARMENT)
        if a["kind"] == NOT_A_GARMENT:
            assert "probably not a garment" in a["confidence"]
    # Issue 30's bar is 90% of natural photos; bench/results/verdict.md reads what the shipped verdict
    # does. Here a regression guard, not the bar: these photos shaped the detector.
    natural = [a["kind"] for a in others["natural"]]
    assert sum(k == NOT_A_GARMENT for k in natural) >= 0.8 * len(natural), natural


def test_the_shipped_photo_verdict_asks_for_the_material_a_photo_brings():
    """A photo's Seen carries its material; the service refuses a photo without it, rather than
    judging it with half its features."""
    from dashboard.service import Service, load_weights
    from imaging.preprocess import look_and_mask
    service = Service(load_weights(None))
    assert service.photo_detector.uses_material
    with Image.open(sorted(PHOTOS.glob("*-dress.jpg"))[0]) as img:
        seen = look_and_mask(img.convert("RGB"))
    with pytest.raises(ValueError, match="material"):
        service.assess(seen.look, photo=True)
    a = service.assess(seen.look, photo=True, material=seen.material)
    assert a.kind == GARMENT_PHOTO


def test_weights_without_a_verdict_judge_photos_with_the_fashion_mnist_detector(tmp_path):
    """Older weights (no verdict.* files) still serve: a photo is judged as before, by the
    Fashion-MNIST detector, and still gets a photo's kind and sentence."""
    from dashboard.service import Service, load_weights
    from imaging.preprocess import look_and_mask
    for f in WEIGHTS.iterdir():
        if f.is_file() and f.name not in (VERDICT_META, VERDICT_TENSORS):
            shutil.copy(f, tmp_path / f.name)
    service = Service(load_weights(str(tmp_path)))
    assert service.verdict is None and f"no {VERDICT_META}" in service.verdict_error
    assert service.photo_detector is service.detector
    garment = next(p for p in sorted(PHOTOS.glob("*.jpg")) if PHOTO_FOLDERS[p.stem.split("-", 1)[1]].strict)
    with Image.open(garment) as img:
        seen = look_and_mask(img.convert("RGB"))
    a = service.assess(seen.look, photo=seen.photo, material=seen.material)
    assert seen.photo and a.ood_threshold == service.detector.threshold
    assert a.kind in (GARMENT_PHOTO, NOT_A_GARMENT) and a.in_distribution == (a.kind == GARMENT_PHOTO)
    if a.kind == GARMENT_PHOTO:
        assert "too few held-out photos" in a.confidence
