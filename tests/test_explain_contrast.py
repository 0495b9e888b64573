"""Tests for explain/contrast.py (evidence for A over B), explain/agreement.py (agreement, consensus,
localisation) and explain/road.py (noisy linear imputation, MoRF/LeRF curves).

    .venv/bin/python -m pytest tests/test_explain_contrast.py -q
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

import explain
from explain.agreement import DISAGREE_RHO, agreement, consensus, localisation, mask_on_look, top_overlap
from explain.contrast import CONTRAST_METHODS, contrast_map, contrast_maps
from explain.road import FRACTIONS, NEIGHBOURS, impute, road_many
from explain_cases import REGION, RegionNet, region_mask
from helpers import REPO
from imaging.preprocess import normalize
from model import load_model


@pytest.fixture(scope="module")
def shipped():
    return load_model(REPO / "weights")


@pytest.fixture(scope="module")
def shirt():
    """A committed test-slice image whose top-2 classes are close (a real 'why A, not B?' case)."""
    from training.data import load_images
    looks, _, _ = load_images(str(REPO / "tests" / "data" / "fashion_mnist"), "test")
    model = load_model(REPO / "weights")
    x = normalize(looks)[:, None]
    top2 = model.predict_proba(x).topk(2, dim=1)
    i = int((top2.values[:, 0] - top2.values[:, 1]).argmin())
    return x[i], looks[i].numpy(), [int(c) for c in top2.indices[i]]


# ---------------------------------------------------------------------------------------------
# Contrast
# ---------------------------------------------------------------------------------------------

def test_contrast_methods_are_the_signed_ones():
    assert CONTRAST_METHODS == tuple(m for m, s in explain.METHODS.items() if s.signed)
    assert {"Integrated Gradients", "Occlusion", "DeepLift"} <= set(CONTRAST_METHODS)


@pytest.mark.parametrize("method", CONTRAST_METHODS)
def test_swapping_a_and_b_negates_the_contrast_map(method, shipped, shirt):
    x, _, (a, b) = shirt
    ab, ba = contrast_map(shipped, x, method, a, b)[0], contrast_map(shipped, x, method, b, a)[0]
    assert np.abs(ab).max() > 0
    np.testing.assert_allclose(ab, -ba, atol=1e-5 * np.abs(ab).max() + 1e-7)


@pytest.mark.parametrize("method", CONTRAST_METHODS)
def test_contrast_is_the_difference_of_the_two_class_maps(method, shipped, shirt):
    """The methods are linear in the output they attribute: map(A - B) = map(A) - map(B)."""
    x, _, (a, b) = shirt
    expected = explain.explain(shipped, x, method, a) - explain.explain(shipped, x, method, b)
    np.testing.assert_allclose(contrast_map(shipped, x, method, a, b)[0], expected,
                               atol=1e-4 * np.abs(expected).max() + 1e-6)


def test_deeplift_contrast_sums_to_the_change_of_the_logit_difference(shipped, shirt):
    """DeepLift's maps sum exactly to the output's change from the black baseline (its completeness;
    Integrated Gradients' 32 steps only approximate it), here the change of logit(A) - logit(B)."""
    x, _, (a, b) = shirt
    with torch.no_grad():
        logits, blank = shipped(x[None])[0], shipped(torch.full_like(x[None], explain.background_value(shipped)))[0]
    change = float((logits[a] - logits[b]) - (blank[a] - blank[b]))
    total = float(contrast_map(shipped, x, "DeepLift", a, b).sum())
    assert total == pytest.approx(change, rel=1e-4, abs=1e-4) and abs(change) > 0.1


def test_contrast_refuses_unsigned_methods_and_bad_pairs(shipped, shirt):
    x, _, (a, b) = shirt
    with pytest.raises(ValueError, match="cannot show a contrast"):
        contrast_map(shipped, x, "Grad-CAM", a, b)
    with pytest.raises(ValueError, match="two different classes"):
        contrast_map(shipped, x, "Occlusion", a, a)
    for bad in (10, -1, True, 1.0):
        with pytest.raises(ValueError, match="out of range"):
            contrast_map(shipped, x, "Occlusion", a, bad)
    assert set(contrast_maps(shipped, x, a, b, ["Saliency", "Occlusion"])) == {"Occlusion"}


# ---------------------------------------------------------------------------------------------
# Agreement and localisation
# ---------------------------------------------------------------------------------------------

def test_identical_maps_agree_and_reversed_maps_are_flagged(shirt):
    _, look, _ = shirt
    a = np.random.default_rng(0).random((28, 28))
    same = agreement({"one": a, "two": a * 3}, look)
    assert same["mean_spearman"] == pytest.approx(1.0) and same["mean_top10_overlap"] == 1.0
    assert same["warning"] is None
    reversed_ = agreement({"one": a, "two": 1 - a}, look)
    assert reversed_["mean_spearman"] < DISAGREE_RHO and reversed_["warning"].startswith("The methods disagree")
    assert "one vs two" in reversed_["warning"]


def test_agreement_ranks_only_the_garment_pixels(shirt):
    """Two maps equal on the garment, opposite on the background: they agree (the background's
    ranking is left out), though over the whole image they would not."""
    _, look, _ = shirt
    garment = look > 0.05
    a = np.random.default_rng(1).random((28, 28))
    b = np.where(garment, a, 1 - a)
    assert agreement({"a": a, "b": b}, look)["mean_spearman"] == pytest.approx(1.0)
    assert agreement({"a": a, "b": b}, None)["mean_spearman"] < 0.9


def test_top_overlap_and_consensus_on_known_maps():
    a = np.random.default_rng(0).permutation(784).reshape(28, 28).astype(float)   # no ties
    b = a.copy()
    b[a < 10] = 1000.0 + a[a < 10]                           # a's ten lowest pixels jump to b's top
    assert top_overlap(a, a) == 1.0
    assert top_overlap(a, b) == pytest.approx((78 - 10) / 78)           # 78 = 10% of 784
    c = consensus({"a": a, "b": a})
    assert c.shape == (28, 28) and c.min() >= 0 and c.max() == pytest.approx(1.0)
    assert np.unravel_index(c.argmax(), c.shape) == np.unravel_index(a.argmax(), a.shape)


def test_localisation_is_the_positive_share_inside_the_mask():
    mask = region_mask()
    inside_only = np.where(mask, 1.0, -5.0)                   # negative attribution does not count
    spread = np.ones((28, 28))
    out = localisation({"inside": inside_only, "spread": spread, "zero": np.zeros((28, 28))}, mask)
    assert out["inside"]["inside"] == 1.0
    assert out["spread"]["inside"] == pytest.approx(mask.mean()) == out["spread"]["mask_area"]
    assert out["zero"]["inside"] is None


def test_mask_on_look_lands_where_the_garment_does():
    from imaging.segment import look_from_mask
    mask = np.zeros((300, 200), bool)
    mask[40:260, 50:150] = True
    luminance = np.full(mask.shape, 0.2, np.float32)
    look = look_from_mask(luminance, mask)
    on_look = mask_on_look(mask)
    assert on_look.shape == (28, 28) and on_look.any()
    assert ((look > 0.4) == on_look).mean() > 0.97


# ---------------------------------------------------------------------------------------------
# ROAD
# ---------------------------------------------------------------------------------------------

def _dense_reference(image: np.ndarray, removed: np.ndarray) -> np.ndarray:
    """The same linear system, assembled pixel by pixel and solved directly."""
    h, w = image.shape
    unknown = np.flatnonzero(removed)
    var = -np.ones(h * w, int)
    var[unknown] = np.arange(len(unknown))
    a, rhs, flat = np.zeros((len(unknown),) * 2), np.zeros(len(unknown)), image.ravel()
    for n, i in enumerate(unknown):
        r, c = divmod(int(i), w)
        for (dy, dx), weight in NEIGHBOURS:
            if 0 <= r + dy < h and 0 <= c + dx < w:
                a[n, n] += weight
                j = (r + dy) * w + c + dx
                if var[j] < 0:
                    rhs[n] += weight * flat[j]
                else:
                    a[n, var[j]] -= weight
    out = flat.copy()
    out[unknown] = np.linalg.solve(a, rhs)
    return out.reshape(h, w)


def test_imputation_solves_the_neighbour_system(shirt):
    x, _, _ = shirt
    image = x[0].double()
    removed = torch.rand(28, 28, generator=torch.Generator().manual_seed(0)) < 0.7
    got = impute(image[None], removed[None])[0]
    np.testing.assert_allclose(got.numpy(), _dense_reference(image.numpy(), removed.numpy()), atol=1e-6)
    assert torch.equal(got[~removed], image[~removed])
    ramp = torch.tensor(np.add.outer(np.arange(28.0), 2 * np.arange(28.0)))[None]   # linear: its own interpolant
    hole = torch.zeros(1, 28, 28, dtype=torch.bool)
    hole[0, 5:20, 6:22] = True
    assert (impute(ramp, hole) - ramp).abs().max() < 1e-6
    noisy = impute(image[None], removed[None], noise=0.5, seed=0)[0]
    assert (noisy - got)[removed].std() == pytest.approx(0.5, rel=0.2) and torch.equal(noisy[~removed], got[~removed])
    with pytest.raises(ValueError, match="every pixel"):
        impute(image[None], torch.ones(1, 28, 28, dtype=torch.bool))


def test_road_ranks_a_faithful_map_above_its_reverse():
    """RegionNet's score depends only on REGION, here a grey patch on black: removing the region first
    (MoRF) must hurt more than removing it last, and keeping it (LeRF) must keep more of the score."""
    model = RegionNet().eval()
    rng = np.random.default_rng(0)
    image = np.zeros((28, 28), np.float32)
    image[REGION] = 0.4 + 0.05 * rng.random((8, 8))        # class 0 at about 80%: not saturated
    x = normalize(image)[None]
    faithful = region_mask().astype(float) + 0.01 * rng.random((28, 28))
    out = road_many(model, x, {"faithful": faithful, "reversed": -faithful}, target=0)
    assert out["faithful"]["fractions"] == list(FRACTIONS) and len(out["faithful"]["morf_curve"]) == len(FRACTIONS)
    assert out["faithful"]["morf_auc"] < out["reversed"]["morf_auc"] - 0.3
    assert out["faithful"]["lerf_auc"] > out["reversed"]["lerf_auc"] + 0.3
    for curves in out.values():
        assert all(0 <= p <= 1 for p in curves["morf_curve"] + curves["lerf_curve"])
