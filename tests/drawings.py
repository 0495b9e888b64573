"""A visitor's drawings of the classes that can be drawn recognisably, generated (nothing binary kept).

Each garment is a polygon on a 280x280 white canvas, as the Draw tab's sketchpad gives it: drawn as
an outline, filled, or filled by scribbling, with a thin or a thick stroke, in black or in a colour,
and with a little hand-drawn wobble (seeded). T-shirt/top, Trouser, Pullover, Dress, Bag, Sneaker
and Ankle boot have shapes a visitor draws; Coat, Shirt and Sandal differ from them in details a
sketch does not carry.
Shoes are seen from the side, the sneaker's toe low at the left and its collar high at the heel,
as Fashion-MNIST shows them; a bag's handle is a stroke over its body, never filled.

`drawings()` is the reported set (bench/drawings.py): `SHAPES`, `SEEDS`. `validation_drawings()`
is a second set: two other drawings of each class (`VALIDATION_SETS`), other seeds and a stronger
jitter (each drawing stretched or squeezed, its corners wobbling more); its variants end with the
shape set they were drawn from (`shapes0`, `shapes1`), so a choice can be checked on shapes it did not
see. Preprocessing parameters are chosen on that set only, so the reported figure is not fitted to
the shapes it is measured on.

    python tests/drawings.py /tmp/drawings      # write the PNGs to look at them
    python tests/drawings.py /tmp/validation-drawings --validation    # the validation set, a folder per class
                                                  # (what python -m training.fit_verdict --drawings reads)
"""
from __future__ import annotations

import sys
from itertools import product
from pathlib import Path

import numpy as np
from PIL import Image, ImageChops, ImageDraw

CANVAS = 280
# Outlines in a 0..100 box (x, y), y downwards; scaled into the canvas with a margin.
SHAPES = {
    "T-shirt/top": [(30, 5), (70, 5), (98, 22), (88, 40), (75, 33), (75, 95), (25, 95), (25, 33), (12, 40), (2, 22)],
    "Trouser": [(28, 2), (72, 2), (80, 98), (58, 98), (50, 35), (42, 98), (20, 98)],
    "Pullover": [(30, 5), (70, 5), (92, 20), (100, 92), (86, 94), (76, 35), (76, 96), (24, 96), (24, 35),
                 (14, 94), (0, 92), (8, 20)],
    "Dress": [(38, 2), (62, 2), (64, 30), (90, 98), (10, 98), (36, 30)],
    "Bag": [(8, 38), (92, 38), (96, 95), (4, 95)],
    "Sneaker": [(2, 80), (4, 68), (22, 62), (42, 55), (56, 45), (72, 40), (86, 42), (98, 44), (98, 82), (2, 82)],
    "Ankle boot": [(20, 5), (55, 5), (58, 55), (96, 70), (98, 95), (5, 95), (8, 50)],
}
# Open strokes drawn over the shape in both styles (a visitor fills a bag's body, not its handle).
DETAILS = {"Bag": [[(28, 38), (28, 16), (36, 6), (64, 6), (72, 16), (72, 38)]]}
# The same classes drawn two other ways, for choosing parameters: a V-neck, wide legs, a slimmer
# pullover, a dress with short sleeves, a shoulder bag with an arched strap, a running shoe, a boot
# with a longer toe; a boxy tee, slim jeans, a roomy pullover, a sleeveless dress, a tote, a low
# sneaker with a flat collar, a Chelsea boot.
VALIDATION_SETS = (
    ({"T-shirt/top": [(35, 3), (50, 15), (65, 3), (95, 15), (100, 35), (80, 38), (78, 30), (78, 97), (22, 97),
                      (22, 30), (20, 38), (0, 35), (5, 15)],
      "Trouser": [(25, 2), (75, 2), (88, 98), (56, 98), (50, 30), (44, 98), (12, 98)],
      "Pullover": [(32, 3), (68, 3), (85, 12), (95, 90), (84, 92), (74, 30), (74, 97), (26, 97), (26, 30),
                   (16, 92), (5, 90), (15, 12)],
      "Dress": [(35, 2), (65, 2), (75, 10), (68, 18), (64, 35), (85, 98), (15, 98), (36, 35), (32, 18), (25, 10)],
      "Bag": [(5, 45), (95, 45), (95, 95), (5, 95)],
      "Sneaker": [(0, 75), (6, 62), (30, 56), (50, 48), (62, 40), (78, 36), (92, 38), (100, 50), (100, 80), (2, 82)],
      "Ankle boot": [(22, 2), (58, 2), (60, 52), (92, 64), (100, 84), (100, 95), (10, 95), (12, 70), (16, 40)]},
     {"Bag": [[(20, 45), (28, 18), (50, 8), (72, 18), (80, 45)]]}),
    ({"T-shirt/top": [(30, 2), (42, 8), (58, 8), (70, 2), (100, 12), (96, 32), (80, 30), (80, 98), (20, 98),
                      (20, 30), (4, 32), (0, 12)],
      "Trouser": [(30, 2), (70, 2), (74, 98), (56, 98), (50, 28), (44, 98), (26, 98)],
      "Pullover": [(30, 0), (70, 0), (88, 8), (100, 80), (100, 95), (86, 95), (78, 30), (78, 98), (22, 98),
                   (22, 30), (14, 95), (0, 95), (0, 80), (12, 8)],
      "Dress": [(32, 2), (40, 2), (44, 10), (56, 10), (60, 2), (68, 2), (68, 30), (80, 98), (20, 98), (32, 30)],
      "Bag": [(10, 40), (90, 40), (98, 96), (2, 96)],
      "Sneaker": [(0, 78), (4, 64), (18, 60), (34, 56), (46, 48), (60, 44), (78, 44), (90, 40), (100, 42),
                  (100, 86), (2, 86)],
      "Ankle boot": [(25, 2), (62, 2), (64, 48), (80, 56), (96, 66), (100, 80), (100, 96), (4, 96), (6, 60),
                     (12, 40)]},
     {"Bag": [[(30, 40), (35, 10), (65, 10), (70, 40)]]}),
)
# An outline; the shape filled (a paint program's bucket); the shape filled by scribbling back and
# forth inside the outline with the same pen (all the Draw tab's brush can do), lines SCRIBBLE_STEP
# pen widths apart, so narrow gaps stay between them.
STYLES = ("outline", "filled", "scribbled")
SCRIBBLE_STEP = 1.5
STROKES = {"thin": 6, "thick": 14}
COLOURS = {"black": (0, 0, 0), "blue": (30, 60, 200)}
SEEDS = (0, 1)
VALIDATION_SEEDS, VALIDATION_JITTER = (100, 101, 102, 103, 104, 105), 0.15
WOBBLE = 2.0                   # px at the canvas: a steady hand
SHAPE_SET = "shapes"           # the validation variants' last part: shapes0, shapes1


def draw(points: list[tuple[float, float]], style: str, width: int, colour: tuple[int, int, int],
         seed: int, details: list[list[tuple[float, float]]] = (), jitter: float = 0.0) -> Image.Image:
    """One drawing in a STYLES style: the polygon (and open detail strokes) scaled into the canvas
    with a seeded wobble of a few pixels; `jitter` > 0 also stretches it by a factor of about
    exp(+-jitter) across or along and wobbles it more."""
    assert style in STYLES, f"unknown style {style!r}, expected one of {STYLES}"
    rng = np.random.default_rng(seed)
    margin = 40
    stretch = np.exp(rng.normal(0, jitter)) if jitter else 1.0
    sx, sy = (np.array([min(stretch, 1.0), min(1 / stretch, 1.0)]) * (CANVAS - 2 * margin) / 100)
    ox, oy = (CANVAS - 100 * sx) / 2, (CANVAS - 100 * sy) / 2
    wobble = WOBBLE * (1 + 10 * jitter)

    def wobbled(line):
        return [(ox + x * sx + rng.normal(0, wobble), oy + y * sy + rng.normal(0, wobble)) for x, y in line]

    pts = wobbled(points)
    img = Image.new("RGB", (CANVAS, CANVAS), "white")
    pen = ImageDraw.Draw(img)
    if style == "filled":
        pen.polygon(pts, fill=colour)
    elif style == "scribbled":
        img.paste(colour, mask=scribble(pts, width))
    pen.line(pts + [pts[0]], fill=colour, width=width, joint="curve")
    for line in details:
        pen.line(wobbled(line), fill=colour, width=width, joint="curve")
    return img


def scribble(points: list[tuple[float, float]], width: int) -> Image.Image:
    """A mask ("L", canvas size) of a zigzag across the polygon's box, kept inside the polygon."""
    xs, ys = zip(*points)
    step = SCRIBBLE_STEP * width
    rows = np.arange(min(ys), max(ys) + step, step)
    zigzag = [(min(xs) if k % 2 == 0 else max(xs), float(y)) for k, y in enumerate(rows)]
    lines, inside = Image.new("L", (CANVAS, CANVAS), 0), Image.new("L", (CANVAS, CANVAS), 0)
    ImageDraw.Draw(lines).line(zigzag, fill=255, width=width, joint="curve")
    ImageDraw.Draw(inside).polygon(points, fill=255)
    return ImageChops.multiply(lines, inside)


def drawings(seeds: tuple[int, ...] = SEEDS, jitter: float = 0.0, shapes: dict = SHAPES,
             details: dict = DETAILS) -> list[tuple[str, str, Image.Image]]:
    """(class name, variant, image) for every shape, style, stroke, colour and seed."""
    out = []
    for (name, points), style, (stroke, width), (colour, rgb), seed in product(
            shapes.items(), STYLES, STROKES.items(), COLOURS.items(), seeds):
        image = draw(points, style, width, rgb, seed, details.get(name, ()), jitter)
        out.append((name, f"{style}-{stroke}-{colour}-{seed}", image))
    return out


def validation_drawings() -> list[tuple[str, str, Image.Image]]:
    """The validation set: every shape of VALIDATION_SETS, jittered, with VALIDATION_SEEDS; each
    variant ends with `-shapes<k>`, k the index of its shape set in VALIDATION_SETS."""
    return [(name, f"{variant}-{SHAPE_SET}{k}", image) for k, (shapes, details) in enumerate(VALIDATION_SETS)
            for name, variant, image in drawings(VALIDATION_SEEDS, VALIDATION_JITTER, shapes, details)]


def slug(name: str) -> str:
    """A class name as a file or folder name: "T-shirt/top" -> "t-shirt-top"."""
    return name.replace('/', '-').replace(' ', '-').lower()


if __name__ == "__main__":
    folder = Path(sys.argv[1])
    folder.mkdir(parents=True, exist_ok=True)
    if "--validation" in sys.argv[2:]:
        made = validation_drawings()
        for name, variant, image in made:
            (folder / slug(name)).mkdir(exist_ok=True)
            image.save(folder / slug(name) / f"{variant}.png")
    else:
        made = drawings()
        for name, variant, image in made:
            image.save(folder / f"{slug(name)}-{variant}.png")
    print(f"{len(made)} drawings in {folder}")
