"""A visitor's drawings of the classes that can be drawn recognisably, generated (nothing binary kept).

Each garment is a polygon on a 280x280 white canvas, as the Draw tab's sketchpad gives it: drawn as
an outline or filled, with a thin or a thick stroke, in black or in a colour, and with a little
hand-drawn wobble (seeded). T-shirt/top, Trouser, Pullover, Dress, Bag, Sneaker and Ankle boot have
shapes a visitor draws; Coat, Shirt and Sandal differ from them in details a sketch does not carry.

    python tests/drawings.py /tmp/drawings      # write the PNGs to look at them
"""
from __future__ import annotations

import sys
from itertools import product
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

CANVAS = 280
# Outlines in a 0..100 box (x, y), y downwards; scaled into the canvas with a margin.
SHAPES = {
    "T-shirt/top": [(30, 5), (70, 5), (98, 22), (88, 40), (75, 33), (75, 95), (25, 95), (25, 33), (12, 40), (2, 22)],
    "Trouser": [(28, 2), (72, 2), (80, 98), (58, 98), (50, 35), (42, 98), (20, 98)],
    "Pullover": [(30, 5), (70, 5), (92, 20), (100, 92), (86, 94), (76, 35), (76, 96), (24, 96), (24, 35),
                 (14, 94), (0, 92), (8, 20)],
    "Dress": [(38, 2), (62, 2), (64, 30), (90, 98), (10, 98), (36, 30)],
    "Bag": [(10, 35), (90, 35), (90, 95), (10, 95), (10, 35), (30, 35), (32, 10), (68, 10), (70, 35)],
    "Sneaker": [(2, 55), (40, 50), (58, 38), (74, 40), (98, 70), (98, 82), (2, 82)],
    "Ankle boot": [(20, 5), (55, 5), (58, 55), (96, 70), (98, 95), (5, 95), (8, 50)],
}
STYLES = {"outline": False, "filled": True}
STROKES = {"thin": 6, "thick": 14}
COLOURS = {"black": (0, 0, 0), "blue": (30, 60, 200)}
SEEDS = (0, 1)


def draw(points: list[tuple[float, float]], filled: bool, width: int, colour: tuple[int, int, int],
         seed: int) -> Image.Image:
    """One drawing: the polygon scaled into the canvas with a seeded wobble of a few pixels."""
    rng = np.random.default_rng(seed)
    margin = 40
    scale = (CANVAS - 2 * margin) / 100
    pts = [(margin + x * scale + rng.normal(0, 2), margin + y * scale + rng.normal(0, 2)) for x, y in points]
    img = Image.new("RGB", (CANVAS, CANVAS), "white")
    pen = ImageDraw.Draw(img)
    if filled:
        pen.polygon(pts, fill=colour)
    pen.line(pts + [pts[0]], fill=colour, width=width, joint="curve")
    return img


def drawings() -> list[tuple[str, str, Image.Image]]:
    """(class name, variant, image) for every shape, style, stroke, colour and seed."""
    out = []
    for (name, points), (style, filled), (stroke, width), (colour, rgb), seed in product(
            SHAPES.items(), STYLES.items(), STROKES.items(), COLOURS.items(), SEEDS):
        out.append((name, f"{style}-{stroke}-{colour}-{seed}", draw(points, filled, width, rgb, seed)))
    return out


if __name__ == "__main__":
    folder = Path(sys.argv[1])
    folder.mkdir(parents=True, exist_ok=True)
    for name, variant, image in drawings():
        image.save(folder / f"{name.replace('/', '-').replace(' ', '-').lower()}-{variant}.png")
    print(f"{len(drawings())} drawings in {folder}")
