"""One real-browser test: headless Chromium opens the running app, uploads an image, sees a prediction.

Then, in the same page: a file that is not an image (a message, the app keeps serving), a test-set
example click, and the sketchpad (empty: "Draw something first"; a drawing: classified).

Debian's chromium driven by Playwright (no browser download). The screenshots go to
tests/artifacts/ (git-ignored); with UPDATE_SCREENSHOT=1 the full-page one also replaces
docs/screenshot.png, the README's picture.

    pytest tests/test_browser.py -q
    UPDATE_SCREENSHOT=1 pytest tests/test_browser.py -q
"""
from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest
from PIL import Image

from conftest import REPO

playwright = pytest.importorskip("playwright.sync_api")
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = REPO / "tests" / "artifacts"
CLASS_NAMES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
               "Ankle boot")


@pytest.fixture(scope="module")
def garment_photo(tmp_path_factory) -> Path:
    """A test-set trouser as a user would upload it: dark garment on white, 10x larger, RGB."""
    from data import load_images
    _, labels, raw = load_images(str(REPO / "tests" / "data" / "fashion_mnist"), "test")
    look = raw[int((labels == 1).nonzero()[0, 0])]                                # the first Trouser
    photo = Image.fromarray(255 - look).resize((280, 280), Image.Resampling.BICUBIC).convert("RGB")
    path = tmp_path_factory.mktemp("browser") / "trousers.png"
    photo.save(path)
    return path


@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian's chromium is not installed")
def test_browser_upload_shows_prediction_and_maps(app_server, garment_photo, tmp_path):
    from playwright.sync_api import expect, sync_playwright
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True,
                                    args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(app_server.url, wait_until="domcontentloaded")
            page.locator("#upload input[type=file]").set_input_files(str(garment_photo))
            label = page.locator("#explain-label")
            expect(label).to_contain_text(re.compile("|".join(map(re.escape, CLASS_NAMES))), timeout=90_000)
            assert "Trouser" in label.inner_text()                  # the easiest class to get right
            maps = page.locator("#explain-maps img")
            expect(maps.first).to_be_visible(timeout=90_000)
            expect(page.locator("#explain-scores")).to_contain_text("Grad-CAM", timeout=30_000)
            page.wait_for_timeout(500)                                # let the last images paint
            page.screenshot(path=str(ARTIFACTS / "browser_prediction.png"), full_page=True)
            if os.environ.get("UPDATE_SCREENSHOT") == "1":
                shutil.copy(ARTIFACTS / "browser_prediction.png", REPO / "docs" / "screenshot.png")

            # A file that is not an image: a message in the page, and the app still answers.
            bad = tmp_path / "notes.png"
            bad.write_text("not a picture")
            page.locator("#upload button[aria-label='Remove Image']").click()
            page.locator("#upload input[type=file]").set_input_files(str(bad))
            expect(page.locator("#status")).to_contain_text("not an image", timeout=60_000)
            page.screenshot(path=str(ARTIFACTS / "browser_bad_input.png"), full_page=True)

            # A test-set example, one click: classified and explained like an upload.
            page.get_by_role("button", name="Sneaker", exact=True).click()
            expect(page.locator("#status")).to_contain_text("Classified", timeout=60_000)
            expect(label).to_contain_text(re.compile("|".join(map(re.escape, CLASS_NAMES))), timeout=60_000)

            # The sketchpad: an empty canvas is refused, a drawing is classified.
            page.get_by_role("tab", name="Draw").click()
            draw = page.get_by_role("button", name="Classify drawing")
            draw.click()
            expect(page.locator("#status")).to_contain_text("Draw something first", timeout=60_000)
            page.locator("#sketch button[aria-label='Brush']").click()
            page.mouse.click(5, 5)                                     # close the brush options
            box = page.locator("#sketch canvas").first.bounding_box()
            x0, y0, w, h = box["x"] + box["width"] / 2, box["y"] + box["height"] * 0.2, box["width"], box["height"]
            page.mouse.move(x0 - 0.15 * w, y0)                         # a rough pair of trousers
            page.mouse.down()
            for dx, dy in ((-0.15, 0), (0.15, 0), (0.15, 0.6), (0.03, 0.6), (0, 0.15), (-0.03, 0.6), (-0.15, 0.6),
                           (-0.15, 0)):
                page.mouse.move(x0 + dx * w, y0 + dy * h, steps=8)
            page.mouse.up()
            draw.click()
            expect(page.locator("#status")).to_contain_text("Classified", timeout=60_000)
            page.screenshot(path=str(ARTIFACTS / "browser_sketch.png"), full_page=True)
        finally:
            browser.close()
