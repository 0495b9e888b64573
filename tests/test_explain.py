"""Tests for explain/: every method in METHODS, rendering, faithfulness and the trust table.

Tiny models stand in for the trained network where a known answer is needed: `TinyCNN` (random,
seeded, in-place ReLUs like FashionCNN) and `RegionNet`, whose score depends only on one 8x8
region, so a faithful map must put that region first. One FashionCNN test runs the real
architecture (random weights) through every method. Real data: the committed test slice.

    .venv/bin/python -m pytest tests/test_explain.py -q        # about 30-60 s on 2 CPU cores
"""
from __future__ import annotations

import copy
import gc
import json

import numpy as np
import psutil
import pytest
import torch
import torch.nn as nn
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import explain
from explain import trust
from explain import (METHODS, common_scale, deletion_insertion, render_overlay, randomisation_test,
                     share)
from explain.faithfulness import cascade_layers, pixel_order, spearman
from explain.methods import background_value, relu_safe
from model import MEAN, STD, FashionCNN, save_model
from imaging.preprocess import InvalidImageError, fashion_look, normalize, preprocess

METHOD_NAMES = list(METHODS)
REGION = (slice(3, 11), slice(16, 24))          # 8x8, off-centre: a transposed map would miss it


class TinyCNN(nn.Module):
    """A 10-class CNN small enough for hundreds of calls; ReLUs in place, as in FashionCNN."""

    def __init__(self, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.stem = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2))
        self.last_conv = nn.Sequential(nn.Conv2d(4, 8, 3, padding=1), nn.ReLU(inplace=True))   # (B, 8, 14, 14)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(32, 10))

    def forward(self, x):
        return self.head(self.last_conv(self.stem(x)))


class RegionNet(nn.Module):
    """Class 0's score grows with the brightness inside REGION and ignores every other pixel.

    Positive conv weights and a fixed mask after the first conv: logits = (s, -s, 0) with
    s = mean of the last conv's activations, which only pixels in REGION (dilated by one pixel,
    the first conv's reach) can change.
    """

    def __init__(self):
        super().__init__()
        torch.manual_seed(1)
        self.conv1 = nn.Conv2d(1, 4, 3, padding=1, bias=False)
        self.last_conv = nn.Sequential(nn.Conv2d(4, 4, 3, padding=1, bias=False), nn.ReLU())
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.fc = nn.Linear(4, 3, bias=False)
        with torch.no_grad():
            self.conv1.weight.abs_().mul_(0.5)
            self.last_conv[0].weight.abs_().mul_(0.5)
            self.fc.weight.copy_(torch.tensor([[1.0] * 4, [-1.0] * 4, [0.0] * 4]) * 20)
        mask = torch.zeros(1, 1, 28, 28)
        mask[0, 0, REGION[0], REGION[1]] = 1
        self.register_buffer("mask", mask)

    def forward(self, x):
        return self.fc(self.pool(self.last_conv(torch.relu(self.conv1(x)) * self.mask)))


def region_mask(dilate: int = 0) -> np.ndarray:
    m = np.zeros((28, 28), bool)
    m[REGION[0].start - dilate:REGION[0].stop + dilate, REGION[1].start - dilate:REGION[1].stop + dilate] = True
    return m


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


def test_spearman_matches_known_values():
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    # Ties averaged: ranks (0, 1.5, 1.5, 3) and (0, 2.5, 2.5, 1): covariance 1.5 / variance 4.5.
    assert spearman([1, 2, 2, 3], [1, 3, 3, 2]) == pytest.approx(1 / 3)
    assert spearman([1, 1, 1], [1, 2, 3]) == 0.0


def test_randomisation_lowers_the_correlation_and_leaves_the_model_alone(tiny, images):
    x = preprocess(images[0][3])
    target = int(tiny(x[None]).argmax())
    state = {k: v.clone() for k, v in tiny.state_dict().items()}
    result = randomisation_test(tiny, x, target, ["Saliency", "Integrated Gradients"])
    assert [name for name, _ in cascade_layers(tiny)] == ["head", "last_conv", "stem"]
    for method, rhos in result.items():
        assert len(rhos) == 3 and all(-1 <= r <= 1 for r in rhos)
        assert rhos[-1] < 0.9, f"{method}: fully randomised map still correlates {rhos[-1]:.2f}"
    for k, v in tiny.state_dict().items():
        assert torch.equal(v, state[k]), f"randomisation_test changed the caller's {k}"
    # The same model on both sides gives rho = 1: the drop above comes from the randomisation.
    assert spearman(explain.explain(tiny, x, "Saliency", target), explain.explain(tiny, x, "Saliency", target)) == 1.0


def test_precompute_trust_and_write_trust(tmp_path, images):
    raw, labels = images
    model = FashionCNN(widths=(8, 8, 16), photo_norms=True).eval()      # its photo layers are not a cascade step
    out = trust.precompute_trust(model, raw, labels, methods=["Saliency", "Grad-CAM"], n=3,
                                   n_randomisation=2, n_sensitivity=1, steps=7)
    json.dumps(out)                                                      # JSON-ready
    assert out["methods"] == ["Saliency", "Grad-CAM"] and out["n_images"] == 3 and len(out["fractions"]) == 8
    for method in out["methods"]:
        r = out[method]
        assert 0 <= r["deletion_auc"] <= 1 and 0 <= r["insertion_auc"] <= 1
        assert len(r["mean_deletion_curve"]) == 8 and len(r["randomisation_curve"]) == 4
        assert r["cascade_layers"] == ["head", "stage3", "stage2", "stage1"]
        assert r["randomisation_rho"] == r["randomisation_curve"][-1] and r["latency_ms"] > 0
        assert np.isfinite([r["infidelity"], r["sensitivity"]]).all()
    # write_trust on a folder in train.py's layout, with the model saved as the app loads it.
    save_model(model, tmp_path)
    (tmp_path / "evaluation").mkdir()
    np.savez_compressed(tmp_path / "evaluation" / "samples.npz", index=np.arange(3), label=labels[:3],
                        pred=labels[:3], images=raw[:3])
    path = trust.write_trust(tmp_path, methods=["Occlusion"], n=1, n_randomisation=0, n_sensitivity=0, steps=4)
    assert path == tmp_path / "evaluation" / "trust.json"
    written = json.loads(path.read_text())
    assert written["methods"] == ["Occlusion"] and written["n_images"] == 1 and written["Occlusion"]["sensitivity"] is None
    assert written["Occlusion"]["randomisation_rho"] is None and written["Occlusion"]["randomisation_curve"] == []


def test_trust_command_line_on_a_tiny_model_folder(tmp_path, images):
    """`python -m explain.trust <folder>` as documented: every method, every measure (sensitivity
    and the randomisation test included), trust.json written and the table printed."""
    import subprocess
    import sys
    from pathlib import Path
    raw, labels = images
    torch.manual_seed(0)
    save_model(FashionCNN(widths=(4, 8, 8)).eval(), tmp_path)
    (tmp_path / "evaluation").mkdir()
    np.savez_compressed(tmp_path / "evaluation" / "samples.npz", index=np.arange(4), label=labels[:4],
                        pred=labels[:4], images=raw[:4])
    proc = subprocess.run([sys.executable, "-m", "explain.trust", str(tmp_path), "--n", "2", "--n-randomisation", "1",
                           "--n-sensitivity", "1", "--steps", "4", "--threads", "1"],
                          cwd=Path(__file__).resolve().parents[1], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    written = json.loads((tmp_path / "evaluation" / "trust.json").read_text())
    assert written["methods"] == METHOD_NAMES and written["n_images"] == 2
    for name in METHOD_NAMES:
        r = written[name]
        assert 0 <= r["deletion_auc"] <= 1 and 0 <= r["insertion_auc"] <= 1, name
        assert np.isfinite([r["infidelity"], r["sensitivity"], r["randomisation_rho"]]).all(), name
        assert name in proc.stdout
    assert proc.stdout.strip().splitlines()[-1] == f"wrote {tmp_path / 'evaluation' / 'trust.json'}"


# ---------------------------------------------------------------------------------------------
# Rendering.
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("size", [224, 100])
def test_render_overlay_shape_dtype_and_diverging_colours(size):
    look = np.full((28, 28), 0.5, np.float32)
    a = np.zeros((28, 28), np.float32)
    a[:, :14] = -1.0                                       # left half lowers the score
    a[:, 14:] = 1.0                                        # right half raises it
    a[14:, :] = 0.0                                        # bottom half: no attribution
    rgb = render_overlay(look, a, 1.0, signed=True, size=size)
    assert rgb.shape == (size, size, 3) and rgb.dtype == np.uint8
    left, right, zero = (rgb[size // 4, size // 8].astype(int), rgb[size // 4, 7 * size // 8].astype(int),
                         rgb[3 * size // 4, size // 2].astype(int))
    assert left[2] > left[0] + 50, f"negative should be blue, got {left}"
    assert right[0] > right[2] + 50, f"positive should be red, got {right}"
    assert zero[0] == zero[1] == zero[2], f"zero attribution should leave the gray input, got {zero}"
    unsigned = render_overlay(look, np.abs(a), 1.0, signed=False, size=size)
    np.testing.assert_array_equal(unsigned[size // 4, size // 8], unsigned[size // 4, 7 * size // 8])


def test_render_overlay_is_crisp_and_scale_saturates():
    look = np.random.default_rng(0).random((28, 28))
    a = np.random.default_rng(1).normal(size=(28, 28))
    rgb = render_overlay(look, a, common_scale([a]), signed=True, size=224)
    blocks = rgb.reshape(28, 8, 28, 8, 3)
    assert (blocks == blocks[:, :1, :, :1]).all(), "each model pixel should be one flat 8x8 square"
    np.testing.assert_array_equal(render_overlay(look, a * 10, 10 * common_scale([a]), True),
                                  render_overlay(look, a, common_scale([a]), True))
    with pytest.raises(ValueError, match="shape"):
        render_overlay(look, np.zeros((14, 14)), 1.0, True)


def test_common_scale_is_robust_and_positive():
    maps = [np.zeros((28, 28)), np.ones((28, 28))]
    maps[1][0, 0] = 1e6                                     # one outlier does not set the scale
    assert common_scale(maps) == pytest.approx(1.0)
    assert common_scale([np.zeros((28, 28))]) > 0
    assert common_scale([np.full((28, 28), np.nan)]) > 0
    s = share(np.array([[1.0, -3.0]]))
    assert np.abs(s).sum() == pytest.approx(1.0) and s[0, 1] == pytest.approx(-0.75)


def test_colorbar_is_an_image():
    bar = explain.colorbar(0.5, signed=True)
    assert bar.ndim == 3 and bar.shape[2] == 3 and bar.dtype == np.uint8
    assert bar[2, 2, 2] > bar[2, 2, 0] and bar[2, -3, 0] > bar[2, -3, 2]   # blue left, red right


def test_real_image_overlay_end_to_end(images):
    look = fashion_look(images[0][1])
    model = FashionCNN().eval()
    x = normalize(look)[None]
    maps = {m: explain.explain(model, x, m) for m in ("Integrated Gradients", "Occlusion")}
    scale = common_scale([share(a) for a in maps.values()])
    for method, a in maps.items():
        rgb = render_overlay(look, share(a), scale, METHODS[method].signed)
        assert rgb.shape == (224, 224, 3) and rgb.std() > 0
