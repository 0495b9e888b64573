"""Tests for explain/faithfulness.py's rank correlation and randomisation test, explain/trust.py's
table and command line, and explain/render.py's overlays (split from test_explain.py).

    .venv/bin/python -m pytest tests/test_explain_trust.py -q
"""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import explain
from explain import trust
from explain import METHODS, common_scale, randomisation_test, render_overlay, share
from explain.faithfulness import cascade_layers, spearman
from explain_cases import TinyCNN
from model import FashionCNN, save_model
from imaging.preprocess import fashion_look, normalize, preprocess

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
        assert -1 <= r["class_rho"] <= 1 and r["class_passes"] == (r["class_rho"] < trust.CLASS_PASS_RHO)
        assert 0 <= r["road_morf_auc"] <= 1 and 0 <= r["road_lerf_auc"] <= 1
    assert 0 <= out["random_order"]["road_morf_auc"] <= 1
    agree = out["agreement"]
    assert agree["methods"] == ["Saliency", "Grad-CAM"] and np.shape(agree["spearman"]) == (2, 2)
    assert agree["spearman"][0][1] == agree["spearman"][1][0] and agree["top10_overlap"][0][0] == 1.0
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
