"""Tests for explain/methods.py and the deletion/insertion curves: every method in METHODS, known answers.

Tiny models stand in for the trained network where a known answer is needed: `TinyCNN` (random,
seeded, in-place ReLUs like FashionCNN) and `RegionNet`, whose score depends only on one 8x8
region, so a faithful map must put that region first. One FashionCNN test runs the real
architecture (random weights) through every method. Real data: the committed test slice.

    .venv/bin/python -m pytest tests/test_explain.py -q        # about 30-60 s on 2 CPU cores
"""
from __future__ import annotations

import copy
import gc

import numpy as np
import psutil
import pytest
import torch
import torch.nn as nn
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import explain
from explain import (METHODS, deletion_insertion)
from explain.faithfulness import pixel_order
from explain.methods import background_value, relu_safe
from model import MEAN, STD, FashionCNN
from imaging.preprocess import InvalidImageError, normalize, preprocess
from explain_cases import RegionNet, TinyCNN, region_mask

METHOD_NAMES = list(METHODS)


@pytest.fixture(scope="module")
def tiny():
    return TinyCNN().eval()


@pytest.fixture(scope="module")
def images():
    """Real Fashion-MNIST test images from the committed slice (uint8, (N, 28, 28))."""
    from training.data import load_images
    _, labels, raw = load_images("tests/data/fashion_mnist", "test")
    return raw[:12], labels[:12].numpy()


@pytest.fixture(scope="module")
def x_real(images):
    return preprocess(images[0][0])                                   # (1, 28, 28)


# ---------------------------------------------------------------------------------------------
# Every method: shape, finiteness, target, memory.
# ---------------------------------------------------------------------------------------------

def test_registry_is_complete_and_documented():
    assert METHOD_NAMES[:7] == ["Saliency", "Integrated Gradients", "SmoothGrad", "Grad-CAM",
                                "Occlusion", "DeepLift", "Guided Backprop"]
    for name, spec in METHODS.items():
        assert spec.name == name and callable(spec.fn) and isinstance(spec.signed, bool)
        assert spec.description and "\n" not in spec.description and spec.reference.startswith("https://")


@pytest.mark.parametrize("method", METHOD_NAMES)
def test_map_is_finite_28x28_on_tiny_and_real_architecture(method, tiny, x_real):
    fashion = FashionCNN().eval()                        # the real architecture, random weights
    for model in (tiny, fashion):
        for x in (x_real, x_real[None]):                # (1, 28, 28) and (1, 1, 28, 28)
            a = explain.explain(model, x, method)
            assert a.shape == (28, 28) and a.dtype == np.float32 and np.isfinite(a).all()
            assert np.abs(a).max() > 0, f"{method} gave an all-zero map"
            if not METHODS[method].signed:
                assert (a >= 0).all()
        batch = torch.cat([x_real[None], x_real[None].flip(-1)])         # (2, 1, 28, 28)
        raw = METHODS[method].fn(model, batch, torch.tensor([0, 1]))     # the registry's own call shape
        assert isinstance(raw, torch.Tensor) and raw.shape == (2, 28, 28) and raw.dtype == torch.float32


@pytest.mark.parametrize("method", METHOD_NAMES)
def test_a_batch_gives_each_image_its_own_map_for_its_own_target(method, x_real):
    """explain_batch with a target per image equals explain image by image (Captum's batched API)."""
    model = FashionCNN(widths=(8, 8, 16)).eval()
    torch.manual_seed(1)
    batch = torch.cat([x_real[None], x_real[None].flip(-1), x_real[None].roll(3, -2)])   # (3, 1, 28, 28)
    targets = [2, 7, 4]
    maps = explain.explain_batch(model, batch, method, targets)
    assert maps.shape == (3, 28, 28)
    for i, t in enumerate(targets):
        np.testing.assert_allclose(maps[i], explain.explain(model, batch[i], method, t), rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("method", METHOD_NAMES)
def test_target_changes_the_map(method, tiny, x_real):
    logits = tiny(x_real[None])[0]
    top, bottom = int(logits.argmax()), int(logits.argmin())
    a_top, a_bottom = (explain.explain(tiny, x_real, method, t) for t in (top, bottom))
    assert not np.allclose(a_top, a_bottom), f"{method}: the same map for classes {top} and {bottom}"
    np.testing.assert_array_equal(explain.explain(tiny, x_real, method), a_top)   # None -> predicted
    np.testing.assert_array_equal(explain.explain(tiny, x_real, method, top), a_top)   # repeatable


def test_default_target_is_the_served_prediction(x_real):
    fashion = FashionCNN().eval()
    predicted = int(fashion.predict_proba(x_real[None]).argmax())
    np.testing.assert_array_equal(explain.explain(fashion, x_real, "Saliency"),
                                  explain.explain(fashion, x_real, "Saliency", predicted))


CALLS = 300


def _live_tensors() -> int:
    gc.collect()
    # Exact types: isinstance() on every gc object wakes lazy torch attributes and skews the count.
    return sum(1 for o in gc.get_objects() if type(o) in (torch.Tensor, nn.Parameter))


def _hooks(model: nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks)
               + len(getattr(m, "_backward_pre_hooks", {})) for m in model.modules())


@pytest.mark.parametrize("method", METHOD_NAMES)
def test_memory_stays_flat_over_many_calls(method, x_real):
    """Many calls: no hook, gradient, tensor or RSS growth. Checked by hand against two leaky
    variants (one keeping each call's graph: +2,400 tensors; one forgetting a hook): both fail."""
    model = TinyCNN(seed=3).eval()
    x = x_real.clone()
    for _ in range(10):                                 # warm-up: caches, allocator pools
        explain.explain(model, x, method)
    process = psutil.Process()
    tensors, rss = _live_tensors(), process.memory_info().rss
    for i in range(CALLS):
        explain.explain(model, x, method, i % 10)
    grown_mb = (process.memory_info().rss - rss) / 2**20
    kept = _live_tensors() - tensors
    assert kept <= 2, f"{method}: {kept} more tensors alive after {CALLS} calls"
    assert grown_mb < 20, f"{method}: RSS grew {grown_mb:.1f} MB over {CALLS} calls"
    assert _hooks(model) == 0 and _hooks(relu_safe(model)) == 0, f"{method} left hooks on the model"
    assert all(p.grad is None for p in model.parameters()), f"{method} left parameter gradients"
    assert x.grad is None and not x.requires_grad


def test_relu_safe_copy_matches_out_of_place_relus_and_follows_weight_changes(x_real):
    model = TinyCNN(seed=4).eval()
    reference = copy.deepcopy(model)
    for m in reference.modules():
        if isinstance(m, nn.ReLU):
            m.inplace = False
    for method in ("DeepLift", "Guided Backprop"):
        np.testing.assert_allclose(explain.explain(model, x_real, method, 2),
                                   explain.explain(reference, x_real, method, 2), atol=1e-6)
    before = explain.explain(model, x_real, "DeepLift", 2)
    with torch.no_grad():
        model.head[2].weight.mul_(-1)                    # new weights: the cached copy must follow
    assert not np.allclose(before, explain.explain(model, x_real, "DeepLift", 2))
    assert all(m.inplace for m in model.modules() if isinstance(m, nn.ReLU)), "caller's model changed"


# ---------------------------------------------------------------------------------------------
# Refusals and extreme inputs.
# ---------------------------------------------------------------------------------------------

def test_unknown_method_and_bad_targets_raise_clearly(tiny, x_real):
    with pytest.raises(ValueError, match="'Magic'.*known: Saliency"):
        explain.explain(tiny, x_real, "Magic")
    for bad in (10, -1, 1.5, True, "3"):
        with pytest.raises(ValueError, match="target"):
            explain.explain(tiny, x_real, "Saliency", bad)
    with pytest.raises(ValueError, match=r"\(2, 1, 28, 28\)"):
        explain.explain(tiny, torch.zeros(2, 1, 28, 28), "Saliency")


def test_grad_cam_without_last_conv_says_so(x_real):
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten(), nn.Linear(2 * 26 * 26, 10)).eval()
    with pytest.raises(ValueError, match="last_conv"):
        explain.explain(model, x_real, "Grad-CAM")
    assert np.isfinite(explain.explain(model, x_real, "Integrated Gradients")).all()


big = st.floats(-1e300, 1e300, allow_nan=False, allow_infinity=False) | st.sampled_from(
    [0.0, 1.0, 255.0, -1e300, 1e300, 5e-324, np.finfo(np.float64).max / 4])


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(arr=hnp.arrays(np.float64, hnp.array_shapes(min_dims=2, max_dims=2, min_side=1, max_side=40), elements=big),
       method=st.sampled_from(METHOD_NAMES), target=st.none() | st.integers(0, 9))
def test_explain_on_any_preprocessed_array_is_finite(arr, method, target, tiny):
    a = explain.explain(tiny, preprocess(arr), method, target)
    assert a.shape == (28, 28) and np.isfinite(a).all()


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(value=st.floats(-3e38, 3e38, allow_nan=False, allow_infinity=False), method=st.sampled_from(METHOD_NAMES))
def test_explain_on_extreme_raw_tensors_is_finite(value, method, tiny):
    x = torch.full((1, 28, 28), value, dtype=torch.float32)
    x[0, ::3, ::5] = -value                            # not constant: gradients have structure
    assert np.isfinite(explain.explain(tiny, x, method, 3)).all()


@pytest.mark.parametrize("poison", [np.nan, np.inf, -np.inf])
def test_non_finite_images_are_refused_before_explaining(poison):
    arr = np.random.default_rng(0).random((28, 28))
    arr[5, 5] = poison
    with pytest.raises(InvalidImageError):
        preprocess(arr)


# ---------------------------------------------------------------------------------------------
# Faithfulness: a known answer, deletion vs random order, randomisation.
# ---------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def region_case():
    look = np.random.default_rng(5).uniform(0.05, 1.0, (28, 28)).astype(np.float32)   # texture everywhere
    x = normalize(look)[None]                                                          # (1, 28, 28)
    model = RegionNet().eval()
    assert int(model(x[None]).argmax()) == 0
    return model, x


@pytest.mark.parametrize("method", METHOD_NAMES)
def test_known_answer_region_ranked_first_and_deletion_beats_random(method, region_case):
    model, x = region_case
    a = explain.explain(model, x, method, 0)
    n_region = int(region_mask().sum())
    top = pixel_order(a)[:n_region]
    inside = region_mask(dilate=1).ravel()[top].mean()
    assert inside >= 0.9, f"{method}: only {inside:.0%} of its top {n_region} pixels are in the region"
    curves = deletion_insertion(model, x, a, 0)
    rng = np.random.default_rng(0)
    random = [deletion_insertion(model, x, rng.random((28, 28)), 0) for _ in range(5)]
    assert curves["deletion_auc"] < min(r["deletion_auc"] for r in random) - 0.05
    assert curves["insertion_auc"] > max(r["insertion_auc"] for r in random) + 0.05


def test_many_maps_share_one_pass_and_give_each_maps_own_curves(region_case):
    """deletion_insertion_many (the dashboard's one pass for all chosen maps) against the curves built
    by hand, one image at a time: the top-k pixels of each map's own order blanked (deletion) or
    kept on a blank image (insertion)."""
    from explain import background_value, deletion_insertion_many
    from explain.faithfulness import pixel_order
    model, x = region_case
    rng = np.random.default_rng(3)
    maps = {"a": rng.random((28, 28)), "b": -rng.random((28, 28)), "flat": np.zeros((28, 28))}
    flat_x, blank = x.reshape(-1), torch.full((784,), background_value(model))

    def prob(image):
        with torch.no_grad():
            return float(model(image.view(1, 1, 28, 28)).softmax(-1)[0, 0])

    for steps in (1, 7):
        together = deletion_insertion_many(model, x, maps, 0, steps)
        assert list(together) == list(maps)
        for name, a in maps.items():
            order = torch.as_tensor(pixel_order(a))
            for j, k in enumerate(np.round(np.linspace(0, 1, steps + 1) * 784).astype(int)):
                first = torch.zeros(784, dtype=torch.bool)
                first[order[:k]] = True
                assert together[name]["deletion_curve"][j] == pytest.approx(prob(torch.where(first, blank, flat_x)), abs=1e-5)
                assert together[name]["insertion_curve"][j] == pytest.approx(prob(torch.where(first, flat_x, blank)), abs=1e-5)


def test_deletion_insertion_curves_are_well_formed(region_case):
    model, x = region_case
    out = deletion_insertion(model, x, np.zeros((28, 28)), 0, steps=14)
    assert set(out) == {"deletion_auc", "insertion_auc", "fractions", "deletion_curve", "insertion_curve"}
    assert len(out["fractions"]) == len(out["deletion_curve"]) == len(out["insertion_curve"]) == 15
    p = model(x[None]).softmax(-1)[0, 0].item()
    blank = model(torch.full((1, 1, 28, 28), background_value(model))).softmax(-1)[0, 0].item()
    # Nothing deleted = the image; everything deleted = the blank background; insertion the reverse.
    assert out["deletion_curve"][0] == pytest.approx(p, abs=1e-5)
    assert out["deletion_curve"][-1] == pytest.approx(blank, abs=1e-5)
    assert out["insertion_curve"][0] == pytest.approx(blank, abs=1e-5)
    assert out["insertion_curve"][-1] == pytest.approx(p, abs=1e-5)
    assert 0 <= out["deletion_auc"] <= 1 and 0 <= out["insertion_auc"] <= 1
    assert background_value(model) == pytest.approx((0 - MEAN) / STD)
