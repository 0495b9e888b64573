"""strokes.py through the served path: a visitor's drawings, outlined, filled or scribbled over, in
any ink, get the garment's class from the shipped model (weights/); photos and flat cards keep the
photo path.

The drawings are tests/drawings.py's, generated on the Draw tab's 280x280 canvas.
"""
from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image, ImageDraw

from imaging import strokes
from dashboard.uploads import decode
from model import load_model
from imaging.preprocess import fashion_look, normalize, to_array

from helpers import REPO
from drawings import COLOURS, DETAILS, SHAPES, STROKES, STYLES, draw, drawings

BAR = 0.8                       # issue #18: at least 80% of the drawings, in each style
# Shapes the shipped weights misread with every pen (bench/results/drawings.md: drawn sneakers are read
# as ankle boots). Kept as a known limitation that the tests see: each must still be misread, so the
# day one is read right this fails and the list is corrected.
MISREAD = {"Sneaker"}


@pytest.fixture(scope="module")
def model():
    return load_model(REPO / "weights", fuse=True)


def classify(model, look: np.ndarray) -> str:
    x = normalize(look, model.config.mean, model.config.std)[None, None]     # (1, 1, 28, 28)
    return model.label_names[int(model.predict_proba(x).argmax())]


def sketchpad(image: Image.Image) -> dict:
    """What the Draw tab sends: the strokes on a transparent canvas, as a Sketchpad value."""
    rgb = np.asarray(image.convert("RGB"))
    rgba = np.dstack([rgb, np.where((rgb < 255).any(-1), 255, 0).astype(np.uint8)])
    return {"background": None, "layers": [], "composite": rgba}


def drawn(name: str, style: str, stroke: str = "thick", colour=(0, 0, 0), seed: int = 0) -> Image.Image:
    return draw(SHAPES[name], style, STROKES[stroke], colour, seed, DETAILS.get(name, ()))


@pytest.mark.parametrize("name", list(SHAPES))
def test_an_outline_and_the_filled_shape_get_the_same_class(model, name):
    # And the shape filled by scribbling. Through the app's own decoding of a Sketchpad value, then
    # the shipped model. Agreement is strokes.py's job and holds for every pen; whether the agreed
    # class is right is the model's, counted against the bar in test_drawings_are_recognised: here
    # each shape must be read right with at least one of the two pens.
    agreed = {}
    for stroke, colour in [("thin", COLOURS["black"]), ("thick", COLOURS["blue"])]:
        looks = [decode(sketchpad(drawn(name, style, stroke, colour)), roots=[])[0] for style in STYLES]
        classes = {style: classify(model, look) for style, look in zip(STYLES, looks)}
        assert len(set(classes.values())) == 1, f"{name}, {stroke}: {classes}"
        agreed[stroke] = classes[STYLES[0]]
    if name in MISREAD:
        assert name not in agreed.values(), f"{name} is read right now ({agreed}): take it out of MISREAD"
    else:
        assert name in agreed.values(), f"{name}: read as {agreed}"


def test_the_photo_path_alone_fails_the_check_above(model):
    # Without strokes.py a drawing took segment.photo_look: an outline came out as a thin loop, the
    # filled shape as a silhouette, and their classes differed. The check above must see that.
    from imaging import segment
    differ = 0
    for name in SHAPES:
        looks = [segment.photo_look(to_array(drawn(name, style)))[0] for style in ("outline", "filled")]
        outline, filled = (classify(model, look) for look in looks)
        differ += outline != filled
    assert differ >= 2


@pytest.mark.parametrize("brush", [6, 14])
def test_a_brush_drawing_on_the_sketchpad_is_read(model, brush):
    # The path tests/test_browser.py draws with the Draw tab's brush (a rough pair of trousers), as a
    # canvas renders it: anti-aliased (drawn at 4x, then shrunk), black on a transparent ground.
    scale, side = 4, 280
    x0, y0 = side / 2, side * 0.2
    path = [(x0 + dx * side, y0 + dy * side) for dx, dy in ((-0.15, 0), (0.15, 0), (0.15, 0.6), (0.03, 0.6),
                                                           (0, 0.15), (-0.03, 0.6), (-0.15, 0.6), (-0.15, 0))]
    big = Image.new("L", (side * scale,) * 2, 0)
    ImageDraw.Draw(big).line([(x * scale, y * scale) for x, y in path], fill=255, width=brush * scale, joint="curve")
    rgba = np.zeros((side, side, 4), np.uint8)
    rgba[..., 3] = np.asarray(big.resize((side, side), Image.Resampling.LANCZOS))
    look, mask = decode({"composite": rgba}, roots=[])[:2]
    assert mask is not None and strokes.drawn_garment(to_array(rgba)) is not None, "not read as a drawing"
    assert classify(model, look) == "Trouser"


def test_drawings_are_recognised(model):
    rows = [(variant.split("-")[0], classify(model, fashion_look(image)) == name)
            for name, variant, image in drawings()]
    for style in STYLES:
        right = [r for s, r in rows if s == style]
        assert np.mean(right) >= BAR, f"{style}: {np.mean(right):.1%} of {len(right)} recognised"


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max((a | b).sum(), 1))


def _jpeg(image: Image.Image, quality: int) -> Image.Image:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=quality)
    return Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")


@pytest.mark.parametrize("kind", ["orange", "light-green", "grey", "jpeg", "on-cream-paper"])
def test_any_ink_on_a_plain_ground_is_read_the_same(model, kind):
    black = drawn("Ankle boot", "outline")
    reference = strokes.drawn_garment(to_array(black))
    if kind == "jpeg":
        image = _jpeg(black, 60)
    elif kind == "on-cream-paper":
        a = np.asarray(black).astype(np.float32)
        image = Image.fromarray(np.where(a > 128, (250, 240, 215), (120, 40, 40)).astype(np.uint8))
    else:
        ink = {"orange": (255, 140, 0), "light-green": (120, 230, 120), "grey": (128, 128, 128)}[kind]
        image = drawn("Ankle boot", "outline", colour=ink)
    mask = strokes.drawn_garment(to_array(image))
    assert mask is not None, f"{kind}: not read as a drawing"
    assert _iou(mask, reference) > 0.95, f"{kind}: garment IoU {_iou(mask, reference):.3f} with the black drawing"
    assert classify(model, fashion_look(image)) == "Ankle boot"


@pytest.mark.parametrize("stroke", list(STROKES))
def test_an_outline_left_open_is_closed(model, stroke):
    closed = drawn("T-shirt/top", "outline", stroke=stroke)
    gap = closed.copy()
    ImageDraw.Draw(gap).rectangle((130, 200, 145, 250), fill="white")   # 15 px out of the hem
    assert np.asarray(gap).min(-1)[200:251, 130:146].min() == 255, "the gap was not cut"
    a, b = (strokes.drawn_garment(to_array(image)) for image in (closed, gap))
    assert _iou(a, b) > 0.9, f"IoU {_iou(a, b):.3f} between the open outline's garment and the closed one's"
    assert classify(model, fashion_look(gap)) == "T-shirt/top"


@pytest.mark.parametrize("name", list(SHAPES))
def test_a_scribbled_shape_is_the_filled_shape(name):
    # Scribbling leaves narrow gaps between the pen's lines; they are filled, not kept as holes.
    filled, scribbled = (strokes.drawn_garment(to_array(drawn(name, style))) for style in ("filled", "scribbled"))
    assert _iou(filled, scribbled) > 0.95, f"{name}: IoU {_iou(filled, scribbled):.3f}"


@pytest.mark.parametrize("style", STYLES)
def test_a_bags_handle_stays_open(style):
    mask = strokes.drawn_garment(to_array(drawn("Bag", style)))

    def px(v: float) -> int:
        """tests/drawings.py's 0..100 box -> the working image (the canvas's 280 px shrunk to 256)."""
        return round((40 + 2 * v) * 256 / 280)

    # Inside the handle (x 40..60, y 15..30) nothing; the body (x 20..80, y 50..90) all garment.
    assert not mask[px(15):px(30), px(40):px(60)].any(), "the handle's inside was filled"
    assert mask[px(50):px(90), px(20):px(80)].all(), "the bag's body was not filled"


def test_photos_and_flat_cards_keep_the_photo_path():
    photos = sorted((REPO / "examples" / "photos").glob("*.jpg"))
    assert len(photos) >= 5
    for path in photos:
        with Image.open(path) as img:
            assert strokes.drawing_look(to_array(img.convert("RGB"))) is None, path.name
    card = np.full((300, 200), 255, np.uint8)
    card[60:240, 50:150] = 80                                     # a flat grey rectangle on white
    assert strokes.drawing_look(to_array(card)) is None
    noisy = np.clip(to_array(drawn("Dress", "filled")) + np.random.default_rng(0).normal(0, 0.05, (256, 256, 3)), 0, 1)
    assert strokes.drawing_look(noisy.astype(np.float32)) is None, "a noisy ground is a photo's"


def test_the_look_is_the_fashion_mnist_form():
    look, mask = strokes.drawing_look(to_array(drawn("Trouser", "outline")))
    assert look.shape == (28, 28) and look.dtype == np.float32 and 0 <= look.min() and look.max() <= 1
    ys, xs = np.nonzero(look)
    assert np.ptp(ys) + 1 == 28 and abs((xs.min() + xs.max()) / 2 - 13.5) <= 1      # fitted, centred
    assert look[0].max() < look[14].max(), "brightest inside, dark at the edge"
    assert mask.shape == (256, 256) and mask.dtype == bool
