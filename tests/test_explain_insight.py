"""Tests for dashboard/insight.py on the real Service and the committed weights: neighbours of a
Fashion-MNIST image and of a phone photo, the contrast, agreement, ROAD and localisation answer,
bad requests, and a folder without an index still serving.

    .venv/bin/python -m pytest tests/test_explain_insight.py -q
"""
from __future__ import annotations

import base64
import io
import json
import shutil

import numpy as np
import pytest
from PIL import Image, ImageOps

from dashboard.insight import Insight, consensus_image, contrast_gallery, neighbour_gallery
from dashboard.service import RequestError, Service, load_weights
from explain.neighbours import DEFAULT_K, INDEX_FILE
from helpers import REPO
from imaging.preprocess import look_and_mask


@pytest.fixture(scope="module")
def service() -> Service:
    return Service(load_weights(None))


@pytest.fixture(scope="module")
def insight(service) -> Insight:
    return Insight.of(service)


@pytest.fixture(scope="module")
def test_slice():
    from training.data import load_images
    looks, labels, _ = load_images(str(REPO / "tests" / "data" / "fashion_mnist"), "test")
    return looks.numpy(), labels.numpy()


def test_neighbours_of_a_test_image_are_json_with_images_and_class_distances(insight, test_slice):
    looks, labels = test_slice
    answer = insight.neighbours(looks[0])
    json.dumps(answer)
    found = answer["neighbours"]
    assert len(found) == DEFAULT_K and found[0]["label"] == insight.service.labels[labels[0]]
    assert [n["distance"] for n in found] == sorted(n["distance"] for n in found)
    image = Image.open(io.BytesIO(base64.b64decode(found[0]["image"].split(",", 1)[1])))
    assert image.size == (28, 28) and np.asarray(image).max() > 0
    assert min(answer["class_distances"].values()) == pytest.approx(found[0]["distance"], abs=1e-4)
    assert set(answer["class_distances"]) == set(insight.service.labels)
    gallery = neighbour_gallery(answer)
    assert len(gallery) == DEFAULT_K and gallery[0][0].shape == (84, 84)
    assert gallery[0][1] == f"{found[0]['label']} {found[0]['distance']:.3f}"


def test_a_photo_is_compared_through_the_photo_network(insight):
    photo = ImageOps.exif_transpose(Image.open(REPO / "examples" / "photos" / "0098b991-pants.jpg")).convert("RGB")
    seen = look_and_mask(photo)
    assert seen.photo
    answer = insight.neighbours(seen.look, photo=True)
    assert answer["neighbours"][0]["label"] == "Trouser"


def test_explain_answers_contrast_agreement_road_and_localisation(insight, test_slice):
    looks, _ = test_slice
    photo = ImageOps.exif_transpose(Image.open(REPO / "examples" / "photos" / "009b3c31-dress.jpg")).convert("RGB")
    seen = look_and_mask(photo)
    out = insight.explain(seen.look, ["Saliency", "Grad-CAM", "Integrated Gradients"], photo=seen.photo, mask=seen.mask,
                          material=seen.material)
    json.dumps(out)
    probs = insight.service.assess(seen.look, seen.photo, material=seen.material).probs
    top2 = [insight.service.labels[i] for i in np.argsort(-probs)[:2]]
    assert [out["contrast"]["a"], out["contrast"]["b"]] == top2
    assert set(out["contrast"]["maps"]) == {"Integrated Gradients", "Occlusion"}
    assert len(out["agreement"]["pairs"]) == 3 and np.shape(out["consensus"]) == (28, 28)
    assert set(out["road"]) == {"Saliency", "Grad-CAM", "Integrated Gradients"}
    for name, loc in out["localisation"].items():
        assert 0 <= loc["inside"] <= 1 and 0 < loc["mask_area"] < 1, name
    assert "inside the garment mask" in insight.summary(out)
    gallery = contrast_gallery(out, seen.look)
    assert [caption.split(":")[0] for _, caption in gallery] == ["Integrated Gradients", "Occlusion"]
    assert all(img.shape == (224, 224, 3) and img.dtype == np.uint8 for img, _ in gallery)
    assert consensus_image(out, seen.look).shape == (224, 224, 3)
    # A chosen pair, swapped: the contrast maps are negated.
    ab = insight.explain(looks[1], ["Occlusion"], pair=["Shirt", "T-shirt/top"])["contrast"]
    ba = insight.explain(looks[1], ["Occlusion"], pair=["T-shirt/top", "Shirt"])["contrast"]
    assert ab["title"] == "evidence for Shirt over T-shirt/top"
    for m in ab["maps"]:
        np.testing.assert_allclose(ab["logit_difference_sums"][m], -ba["logit_difference_sums"][m], rtol=1e-4, atol=1e-5)


def test_bad_requests_are_refused_with_a_message(insight, test_slice):
    looks, _ = test_slice
    for pair in (["Shirt"], ["Shirt", "Shirt"], ["Shirt", "Cape"], "Shirt"):
        with pytest.raises(RequestError, match="pair must be"):
            insight.explain(looks[0], ["Saliency"], pair=pair)
    with pytest.raises(RequestError, match="Unknown method"):
        insight.explain(looks[0], ["Magic"])
    for k in (0, 101, True, "6"):
        with pytest.raises(RequestError, match="k must be"):
            insight.neighbours(looks[0], k=k)


def test_weights_without_an_index_still_serve_and_say_why(tmp_path, test_slice):
    looks, _ = test_slice
    folder = tmp_path / "weights"
    shutil.copytree(REPO / "weights", folder)
    (folder / INDEX_FILE).unlink()
    insight = Insight.of(Service(load_weights(str(folder))))
    answer = insight.neighbours(looks[0])
    assert answer["neighbours"] == [] and "missing" in answer["unavailable"]
    assert insight.explain(looks[0], ["Saliency"])["label"]


def test_the_page_section_gets_a_value_for_each_component(insight, test_slice):
    import gradio as gr
    from dashboard.insight_panel import class_distances_markdown, insight_section, insight_values
    looks, _ = test_slice
    with gr.Blocks():
        components = insight_section("t")
    values = insight_values(insight, (looks[0], False), ["Saliency", "Occlusion"])
    assert len(values) == len(components) == 6
    gallery, distances, contrast, agreement_text, consensus, road = values
    assert len(gallery) == 6 and distances.startswith("Distance to the nearest")
    top2 = [insight.service.labels[c] for c in np.argsort(-insight.service.predict(looks[0]))[:2]]
    assert contrast.label.startswith(f"Evidence for {top2[0]} over {top2[1]}") and len(contrast.value) == 2
    assert agreement_text and consensus.shape == (224, 224, 3)
    assert list(road["Method"]) == ["Saliency", "Occlusion"] and set(road["Inside the garment mask"]) == {"-"}
    assert road["ROAD MoRF AUC ↓"].between(0, 1).all() and road["ROAD LeRF AUC ↑"].between(0, 1).all()
    assert insight_values(insight, None, ["Saliency"])[:5] == [[], "", [], "", None]
    # "Why not Bag?": the class under Explain class is the contrast's B; the predicted class keeps the top two.
    last = insight.service.labels[int(np.argmin(insight.service.predict(looks[0])))]    # never the runner-up
    assert insight_values(insight, (looks[0], False), ["Occlusion"], versus=last)[2].label.startswith(
        f"Evidence for {top2[0]} over {last}")
    assert insight_values(insight, (looks[0], False), ["Occlusion"], versus=top2[0])[2].label.startswith(
        f"Evidence for {top2[0]} over {top2[1]}")
    assert "Unknown class" in insight_values(insight, (looks[0], False), ["Occlusion"], versus="Cat")[3]
    assert "Unknown method" in insight_values(insight, (looks[0], False), ["Magic"])[3]
    assert class_distances_markdown({"unavailable": "missing"}).endswith("missing")
