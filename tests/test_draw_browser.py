"""The Draw tab in a real Chromium: garments drawn with the mouse on the real Sketchpad are classified.

The brush is selected when the tab opens (and again after the canvas is cleared), so a first
stroke draws. Every class that can be drawn (tests/drawings.SHAPES) is drawn as an outline at the
default brush size and at a thin one, and filled at the default size, with page.mouse; the page's
top class must be right for at least MIN_RIGHT of them, and at most MAX_NOT_A_GARMENT of them (and of
the outlines) may be called not a garment.
The figures go to tests/artifacts/draw_browser.json. The page is drawn on once (the `drawn` fixture:
21 drawings, minutes on two busy cores); the tests read what it saw.

    pytest tests/test_draw_browser.py -q
"""
from __future__ import annotations

import json
import re

import numpy as np
import pytest
from playwright.sync_api import expect

from dashboard.service import DEFAULT_METHODS
from drawings import DETAILS, SHAPES
from helpers import ARTIFACTS, CHROMIUM, needs_chromium

MIN_RIGHT = 0.8
MAX_NOT_A_GARMENT = 0.2       # issue 30: at most a fifth of the drawings called not a garment
THIN = 3                      # the brush-size slider's value (a radius) for a thin pen; app.BRUSH_RADIUS is the default
FAST_METHODS = ("Saliency",)  # the maps drawn for each drawing: the label, not the maps, is under test
NOT_A_GARMENT = re.compile(r"not a garment", re.I)


def canvas_points(points, zoom: float, centre: tuple[float, float]) -> list[tuple[float, float]]:
    """A shape's 0..100 box -> screen pixels: into the 280x280 canvas with a 40 px margin (as
    tests/drawings.py draws it), then by the editor's zoom around the canvas centre."""
    return [(centre[0] + (40 + 2 * x - 140) * zoom, centre[1] + (40 + 2 * y - 140) * zoom) for x, y in points]


def fill_rows(points, step: float) -> list[tuple[tuple[float, float], tuple[float, float]]]:
    """Horizontal strokes every `step` pixels across the inside of a polygon (screen pixels)."""
    ys = [y for _, y in points]
    rows = []
    for y in np.arange(min(ys) + step / 2, max(ys), step):
        xs = sorted(x0 + (y - y0) * (x1 - x0) / (y1 - y0)
                    for (x0, y0), (x1, y1) in zip(points, points[1:] + points[:1])
                    if (y0 <= y < y1) or (y1 <= y < y0))
        rows += [((a, y), (b, y)) for a, b in zip(xs[::2], xs[1::2])]
    return rows


def stroke(page, line) -> None:
    page.mouse.move(*line[0])
    page.mouse.down()
    for point in line[1:]:
        page.mouse.move(*point, steps=8)
    page.mouse.up()


def draw(page, name: str, style: str, zoom: float, centre, brush: int) -> None:
    outline = canvas_points(SHAPES[name], zoom, centre)
    stroke(page, outline + outline[:1])
    if style == "filled":
        for row in fill_rows(outline, 1.5 * brush * zoom):   # rows a brush's width apart overlap
            stroke(page, list(row))
    for detail in DETAILS.get(name, ()):
        stroke(page, canvas_points(detail, zoom, centre))


@pytest.fixture(scope="module")
def drawn(app_server) -> list[dict]:
    """Every drawing made once on the real page: {class, style, brush, label, verdict} each."""
    from playwright.sync_api import sync_playwright
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True,
                                    args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        try:
            return draw_every_shape(app_server, browser.new_page(viewport={"width": 1400, "height": 1000}))
        finally:
            browser.close()


def draw_every_shape(app_server, page) -> list[dict]:
    page.goto(app_server.url, wait_until="domcontentloaded")
    page.get_by_role("tab", name="Draw").click()
    sketch = page.locator("#sketch")
    brush = sketch.get_by_role("button", name="Brush", exact=True)
    expect(brush).to_have_class(re.compile(r"\bhighlight\b"), timeout=60_000)     # the brush is the tool
    expect(sketch).not_to_contain_text("select the draw tool")
    classify, status = page.get_by_role("button", name="Classify drawing"), page.locator("#status")
    top = page.locator("#explain-label [data-testid=label-output-value]")
    zoom = float(re.search(r"(\d+)%", sketch.inner_text()).group(1)) / 100
    results = []
    for name in DEFAULT_METHODS:                 # only the fast maps: the label is under test, not the maps
        if name not in FAST_METHODS:
            page.get_by_label(name, exact=True).first.uncheck()
    sketch.get_by_role("button", name="Brush Size").click()
    slider = sketch.locator("input[type=range]").first
    default = int(slider.input_value())          # the app's brush (app.BRUSH_RADIUS), as the page has it
    page.mouse.click(5, 5)                       # close the brush options
    for size, styles in ((default, ("outline", "filled")), (THIN, ("outline",))):
        if size != default:
            sketch.get_by_role("button", name="Brush Size").click()
            slider.fill(str(size))
            page.mouse.click(5, 5)
        for name in SHAPES:
            for style in styles:
                # An empty canvas first: it clears the previous answer, so the next one is new.
                sketch.get_by_role("button", name="Clear canvas").click()
                expect(brush).to_have_class(re.compile(r"\bhighlight\b"), timeout=10_000)
                classify.click()
                expect(status).to_contain_text("Draw something first", timeout=60_000)
                expect(top).to_have_count(0, timeout=60_000)
                box = sketch.locator("canvas").first.bounding_box()
                draw(page, name, style, zoom, (box["x"] + box["width"] / 2, box["y"] + box["height"] / 2), size)
                classify.click()
                expect(status).to_contain_text("Classified", timeout=60_000)
                expect(top).to_have_count(1, timeout=90_000)
                verdict = page.locator("#explain-verdict").inner_text()
                results.append({"class": name, "style": style, "brush": size, "label": top.inner_text().strip(),
                                "verdict": verdict})
    page.screenshot(path=str(ARTIFACTS / "browser_drawings.png"), full_page=True)
    right = sum(r["label"] == r["class"] for r in results)
    called = sum(NOT_A_GARMENT.search(r["verdict"]) is not None for r in results)
    (ARTIFACTS / "draw_browser.json").write_text(json.dumps(
        {"drawings": len(results), "right": right, "share": right / len(results), "not_a_garment": called,
         "not_a_garment_share": called / len(results), "results": results}, indent=1))
    return results


@needs_chromium
def test_drawings_on_the_real_sketchpad_are_read(drawn):
    wrong = [(r["class"], r["style"], r["brush"], r["label"]) for r in drawn if r["label"] != r["class"]]
    assert 1 - len(wrong) / len(drawn) >= MIN_RIGHT, f"{len(drawn) - len(wrong)} of {len(drawn)} right; wrong: {wrong}"


@needs_chromium
def test_drawings_are_rarely_called_not_a_garment(drawn):
    """Issue 30's bar: at most MAX_NOT_A_GARMENT of the drawings are called not a garment (the drawings'
    detector, fitted on one shape set of tests/drawings.validation_drawings and thresholded on the
    other, judges them), nor of the outlines alone."""
    called = [(r["class"], r["style"], r["brush"]) for r in drawn if NOT_A_GARMENT.search(r["verdict"])]
    assert len(called) <= MAX_NOT_A_GARMENT * len(drawn), f"{len(called)} of {len(drawn)} called not a garment: {called}"
    outlines = [r for r in drawn if r["style"] == "outline"]
    assert sum(NOT_A_GARMENT.search(r["verdict"]) is not None for r in outlines) <= MAX_NOT_A_GARMENT * len(outlines), called
