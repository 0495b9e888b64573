"""model.py: the network, save/load through the Hub format, and the one preprocessing path.

    pytest tests/test_model.py
"""
import io
import json
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from PIL import Image

from model import CLASS_NAMES, MEAN, STD, FashionCNN, WeightsError, count_parameters, load_model, save_model
from modelrepo.folder import open_model
from imaging.preprocess import fashion_look, InvalidImageError, preprocess, to_array


SLICE = "tests/data/fashion_mnist"


@pytest.fixture(scope="module")
def test_images() -> np.ndarray:
    """Real Fashion-MNIST test images (200, 28, 28) uint8 from the shipped slice."""
    from training.data import load_images
    return load_images(SLICE, "test")[2]


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return FashionCNN().eval()


def test_output_shape_and_finite(model):
    logits = model(torch.randn(4, 1, 28, 28))
    assert logits.shape == (4, len(CLASS_NAMES))
    assert torch.isfinite(logits).all()
    probs = model.predict_proba(torch.randn(4, 1, 28, 28))
    assert torch.allclose(probs.sum(1), torch.ones(4), atol=1e-5)


def test_every_parameter_gets_a_gradient():
    model = FashionCNN().train()
    model(torch.randn(8, 1, 28, 28)).logsumexp(1).sum().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing, f"parameters without gradient: {missing}"


def test_size_budget(model):
    # The accuracy issue allows at most 1M parameters.
    assert count_parameters(model) <= 1_000_000


def test_save_load_roundtrip_identical(tmp_path, model):
    save_model(model, tmp_path)
    assert {"config.json", "model.safetensors"} <= {p.name for p in tmp_path.iterdir()}
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["label_names"] == list(CLASS_NAMES) and config["mean"] == MEAN and config["std"] == STD
    x = torch.randn(3, 1, 28, 28)
    loaded = load_model(tmp_path)
    assert torch.equal(model(x), loaded(x))
    # The model folder's loader (what the app and a Hub user call) agrees.
    assert torch.equal(model(x), open_model(tmp_path).model(x))


def test_load_refuses_pickles_and_names_the_file(tmp_path, model):
    save_model(model, tmp_path)
    (tmp_path / "model.safetensors").rename(tmp_path / "pytorch_model.bin")
    with pytest.raises(WeightsError, match=r"model\.safetensors.*pickled checkpoints are refused"):
        load_model(tmp_path)


@pytest.mark.parametrize("damage", ["truncate", "garbage", "config_mismatch", "unknown_arch", "bad_json"])
def test_load_damaged_weights_gives_clear_error(tmp_path, model, damage):
    save_model(model, tmp_path)
    weights, config = tmp_path / "model.safetensors", tmp_path / "config.json"
    if damage == "truncate":
        weights.write_bytes(weights.read_bytes()[:1000])
    elif damage == "garbage":
        weights.write_bytes(b"not a safetensors file at all" * 10)
    elif damage == "config_mismatch":
        config.write_text(json.dumps(json.loads(config.read_text()) | {"widths": [16, 32, 64]}))
    elif damage == "unknown_arch":
        config.write_text(json.dumps(json.loads(config.read_text()) | {"arch": "vit-huge"}))
    else:
        config.write_text("{not json")
    expected_file = "config.json" if damage in ("unknown_arch", "bad_json") else "model.safetensors"
    with pytest.raises(WeightsError, match=expected_file):
        load_model(tmp_path)


def test_unreachable_hub_repo_is_a_clear_error(monkeypatch, tmp_path):
    # huggingface_hub reads HF_ENDPOINT and HF_HUB_CACHE once, at import: setting the environment
    # here would change nothing, so its constants are patched. The port was free a moment ago and
    # nothing listens on it: every connection is refused at once.
    import huggingface_hub.constants as hub_constants
    from helpers import free_port
    monkeypatch.setattr(hub_constants, "ENDPOINT", f"http://127.0.0.1:{free_port()}")
    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", False)
    start = time.monotonic()
    with pytest.raises(WeightsError, match="could not download 'someone/fashion-cnn'"):
        open_model("someone/fashion-cnn")
    # A refused connection is an answer: no waiting for hub.DEFAULT_TIMEOUT_S, no retry loop.
    assert time.monotonic() - start < 10


def test_the_dataset_is_a_local_folder_as_is_or_a_clear_error_when_the_hub_is_unreachable(monkeypatch, tmp_path):
    from modelrepo import hub
    import huggingface_hub.constants as hub_constants
    from helpers import free_port
    from training.data import load_images
    folder = hub.resolve_dataset_dir(SLICE)
    assert folder == Path(SLICE) and len(load_images(folder, "test")[1]) > 0
    monkeypatch.setattr(hub_constants, "ENDPOINT", f"http://127.0.0.1:{free_port()}")
    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", False)
    with pytest.raises(hub.HubError, match=f"could not download '{hub.HUB_DATASET}' from the Hub"):
        hub.resolve_dataset_dir()


# --- preprocessing -----------------------------------------------------------------------------

def garment(h=300, w=200, dark_on_light=True, box=(60, 50, 240, 150)) -> np.ndarray:
    """A synthetic product photo: a gray garment rectangle on a white (or black) background."""
    img = np.full((h, w), 255 if dark_on_light else 0, np.uint8)
    y0, x0, y1, x1 = box
    img[y0:y1, x0:x1] = 80 if dark_on_light else 200
    return img


def check_valid(x: torch.Tensor) -> np.ndarray:
    """A model input: shape, dtype, finite, pixels in [0, 1] once un-normalised. Returns the look."""
    assert x.shape == (1, 28, 28) and x.dtype == torch.float32
    assert torch.isfinite(x).all()
    look = x * STD + MEAN
    assert look.min() >= -1e-5 and look.max() <= 1 + 1e-5
    return look[0].numpy()


def the_look(x: torch.Tensor) -> np.ndarray:
    return (x * STD + MEAN)[0].numpy()


# The 8-bit original every other encoding of garment() is compared with: its look has the garment
# at 0.69 (255 - 80) on black, 15 of 28 columns wide. An encoding that loses the content (an
# all-black look) differs from it by 0.37 on average; the same pixels by another path (16-bit
# block averaging, float shrink) differ by at most 0.025 (one column of rounding), so 0.05.
SAME_LOOK_MEAN_ABS = 0.05
VISIBLE = 0.5                     # every non-constant garment below keeps a pixel this bright


# name -> (a way to build the garment, whether it holds the same pixels as the 8-bit original)
KINDS = {
    "gray": (lambda: Image.fromarray(garment()), True),                          # grayscale, white background
    "rgb": (lambda: Image.fromarray(garment()).convert("RGB"), True),
    "light-on-dark": (lambda: Image.fromarray(garment(dark_on_light=False)), False),
    "inverted": (lambda: Image.fromarray(255 - garment()), True),
    "tiny": (lambda: Image.fromarray(garment(8, 6, box=(1, 1, 7, 5))), False),
    "huge": (lambda: Image.fromarray(garment(4000, 3000, box=(500, 400, 3500, 2600))), False),
    "cmyk": (lambda: Image.fromarray(garment()).convert("CMYK"), True),
    "16-bit": (lambda: Image.fromarray((garment().astype(np.uint16) * 257)).convert("I;16"), True),
    "32-bit-int": (lambda: Image.fromarray(garment().astype(np.int32) * 257), True),
    "float32-mode-F": (lambda: Image.fromarray(garment().astype(np.float32) / 255), True),
    "numpy-float": (lambda: garment().astype(np.float32) / 255, True),
    "numpy-uint16": (lambda: garment().astype(np.uint16) * 257, True),
    "tensor-CHW": (lambda: torch.from_numpy(garment()).float()[None] / 255, True),
}


@pytest.mark.parametrize("name", list(KINDS))
def test_preprocess_accepts_all_kinds_of_images(name):
    make, same_as_8bit = KINDS[name]
    look = check_valid(preprocess(make()))
    assert look.max() > VISIBLE, f"{name}: the garment was lost (look max {look.max():.3f})"
    if same_as_8bit:
        original = the_look(preprocess(Image.fromarray(garment())))
        diff = float(np.abs(look - original).mean())
        assert diff < SAME_LOOK_MEAN_ABS, f"{name}: look differs from the 8-bit original by {diff:.3f} on average"


def test_a_constant_image_gives_a_black_look():
    look = check_valid(preprocess(Image.fromarray(np.full((50, 50), 128, np.uint8))))
    assert look.max() == 0


def test_rgba_transparent_background_becomes_dark():
    rgba = np.zeros((100, 80, 4), np.uint8)
    rgba[20:80, 20:60] = (40, 40, 40, 255)           # an opaque dark garment, transparent elsewhere
    look = fashion_look(Image.fromarray(rgba, "RGBA"))
    assert look[0, 0] == 0 and look[14, 14] > 0.5     # background black, garment light


def test_preprocess_brings_photos_to_the_fashion_mnist_look():
    # Off-centre dark garment (aspect 3:2) on white: it comes out light-on-dark, centred, longest side 28.
    photo = garment(400, 400, box=(10, 250, 190, 370))   # 180 tall x 120 wide, top-right corner
    look = fashion_look(Image.fromarray(photo).convert("RGB"))
    ys, xs = np.nonzero(look > 0.5)
    assert look[0, 0] == 0 and look.max() > 0.5
    assert ys.max() - ys.min() + 1 == 28                         # longest edge fills the frame
    assert abs((xs.max() - xs.min() + 1) - 28 * 120 / 180) <= 1   # aspect kept
    assert abs((xs.min() + xs.max()) / 2 - 13.5) <= 1            # centred


def test_fashion_mnist_images_pass_unchanged_up_to_a_shift(test_images):
    for raw in test_images[:50]:
        look = fashion_look(raw)
        diff = min(np.abs(np.roll(look, (dy, dx), (0, 1)) - raw / 255.0).mean()
                   for dy in range(-2, 3) for dx in range(-2, 3))
        assert diff < 0.02


@pytest.mark.parametrize("bad, message", [
    ("a string", "expected an image"),
    (np.array(["a", "b"]), "not an image"),
    (np.zeros((0, 10)), "no pixels"),
    (np.zeros((2, 3, 4, 5)), "not an image"),
    (np.full((10, 10), np.nan), "NaN"),
    (np.zeros((8000, 8000), np.uint8), "40,000,000-pixel limit"),
])
def test_non_images_give_a_clear_error(bad, message):
    with pytest.raises(InvalidImageError, match=message):
        preprocess(bad)


def test_extreme_float_range_is_scaled_not_lost():
    a = np.zeros((20, 20))
    a[5:15, 5:15], a[0, 0] = 1e308, -1e308          # hi - lo overflows float64
    work = to_array(a)                                # the scaling step, before any segmentation
    assert np.isfinite(work).all() and work[10, 10] > 0.99 and abs(work[1, 1] - 0.5) < 1e-6   # the square is still there
    assert np.isfinite(fashion_look(a)).all()


# Above preprocess.MAX_IMAGE_PIXELS (40,000,000) and below Pillow's own refusals (a warning above
# 89,478,485 pixels, an error above twice that): only the app's own check can stop these.
OVER_APP_LIMIT = (7500, 6000)                            # 45,000,000 pixels
APP_LIMIT_MESSAGE = "larger than the 40,000,000-pixel limit"


def flat_png(size) -> io.BytesIO:
    from bad_inputs.corpus import flat_png
    return io.BytesIO(flat_png(*size, value=200))


def refuse_to_decode(img: Image.Image) -> Image.Image:
    """Any pixel access (load, asarray, resize, convert) fails the test: the size check comes first."""
    def load(*_):
        pytest.fail(f"the {img.width}x{img.height} image was decoded before its size was checked")
    img.load = load
    return img


@pytest.mark.parametrize("size", [OVER_APP_LIMIT, (20000, 20000)], ids=["45-megapixel", "400-megapixel"])
def test_decompression_bomb_is_refused_before_decoding(monkeypatch, size):
    # Pillow's own guard is lifted so that the file opens (lazily: the header only), whatever its
    # size: what refuses it must be preprocess's check, not Image.open.
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)
    img = refuse_to_decode(Image.open(flat_png(size)))
    with pytest.raises(InvalidImageError, match=APP_LIMIT_MESSAGE):
        preprocess(img)


def test_the_apps_pixel_limit_is_reached_below_pillows():
    # Pillow's guard left as it is: a 45-megapixel flat image opens without warning, so the app's
    # limit is the only thing between it and a full decode.
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        img = Image.open(flat_png(OVER_APP_LIMIT))
    assert img.size == OVER_APP_LIMIT
    with pytest.raises(InvalidImageError, match=APP_LIMIT_MESSAGE):
        preprocess(refuse_to_decode(img))
    with pytest.raises(InvalidImageError, match=APP_LIMIT_MESSAGE):      # an image already in memory
        preprocess(Image.new("L", OVER_APP_LIMIT, 200))
    w, h = OVER_APP_LIMIT
    with pytest.raises(InvalidImageError, match=APP_LIMIT_MESSAGE):      # a numpy array
        preprocess(np.full((h, w), 200, np.uint8))
    # Just under the limit is accepted (flat: an all-black look, no error).
    check_valid(preprocess(np.full((6000, 6000), 200, np.uint8)))


# Hostile input: arbitrary arrays, sizes, dtypes and values never crash and never give a non-finite tensor.
arrays = hnp.arrays(
    dtype=st.sampled_from([np.uint8, np.uint16, np.int32, np.float32, np.float64, np.bool_]),
    shape=st.one_of(hnp.array_shapes(min_dims=2, max_dims=2, min_side=1, max_side=64),
                    st.tuples(st.integers(1, 40), st.integers(1, 40), st.sampled_from([1, 3, 4]))),
    elements={"allow_nan": True, "allow_infinity": True},
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(arrays)
def test_preprocess_never_crashes_on_arbitrary_arrays(a):
    try:
        x = preprocess(a)
    except InvalidImageError as e:
        assert str(e)                                   # a clear error, never an empty one
        return
    check_valid(x)


def test_batchnorm_folding_keeps_outputs_and_refuses_saving(tmp_path, test_images):
    # Trained BN statistics (not the identity init) so that folding has something to fold.
    weights = Path(__file__).resolve().parents[1] / "weights"
    trained, fused = load_model(weights), load_model(weights, fuse=True)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in fused.modules())
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in trained.modules())
    x = torch.stack([preprocess(im) for im in test_images[:64]])
    with torch.no_grad():
        assert torch.allclose(trained(x), fused(x), atol=1e-4)
        assert torch.equal(trained.predict_proba(x).argmax(1), fused.predict_proba(x).argmax(1))
    with pytest.raises(RuntimeError, match="folded"):
        save_model(fused, tmp_path)


def test_photo_norms_answer_photos_and_leave_every_other_answer_alone(tmp_path):
    """With photo_norms, forward() is the network without them; for_photos() is the same network
    with the photo BatchNorm in place of its own; both survive saving; the fused form has none."""
    from model import ModelConfig, check_config
    torch.manual_seed(0)
    plain = FashionCNN().eval()
    both = FashionCNN(photo_norms=True).eval()
    assert count_parameters(both) == count_parameters(plain) + sum(2 * bn.num_features for bn in plain.norms())
    assert count_parameters(both) <= 1_000_000
    both.load_state_dict(plain.state_dict(), strict=False)
    for bn in both.photo_norms:                       # photo statistics unlike the network's own
        bn.running_mean.uniform_(-1, 1), bn.running_var.uniform_(0.5, 2), bn.weight.data.uniform_(0.5, 1.5)
    x = torch.randn(4, 1, 28, 28)
    with torch.no_grad():
        assert torch.equal(both(x), plain(x))
        photo = both.for_photos()
        assert not photo.config.photo_norms and count_parameters(photo) == count_parameters(plain)
        by_hand = FashionCNN().eval()
        by_hand.load_state_dict(plain.state_dict())
        for bn, p in zip(by_hand.norms(), both.photo_norms):
            bn.load_state_dict(p.state_dict())
        assert torch.equal(photo(x), by_hand(x)) and not torch.allclose(photo(x), plain(x), atol=1e-3)
        save_model(both, tmp_path)
        loaded = load_model(tmp_path)
        assert loaded.config.photo_norms and torch.equal(loaded(x), plain(x))
        assert torch.equal(loaded.for_photos()(x), photo(x))
    assert plain.for_photos() is plain
    fused = load_model(tmp_path, fuse=True)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in fused.modules())
    with pytest.raises(RuntimeError, match="folded"):
        fused.for_photos()
    with pytest.raises(ValueError, match="photo_norms must be true or false"):
        check_config(ModelConfig(photo_norms="yes"))


def test_temperature_from_config_scales_the_served_probabilities(tmp_path, model):
    plain = FashionCNN(flip_tta=False).eval()
    hot = FashionCNN(flip_tta=False, temperature=2.0).eval()
    plain.load_state_dict(model.state_dict()), hot.load_state_dict(model.state_dict())
    save_model(hot, tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["temperature"] == 2.0
    loaded = load_model(tmp_path)
    assert loaded.config.temperature == 2.0
    x = torch.randn(4, 1, 28, 28)
    logits = plain(x)
    assert torch.allclose(loaded.predict_proba(x), (logits / 2).softmax(-1), atol=1e-6)
    assert torch.allclose(plain.predict_proba(x), logits.softmax(-1), atol=1e-6)
