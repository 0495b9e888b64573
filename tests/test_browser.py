"""One real-browser test: headless Chromium opens the running app, uploads an image, sees a prediction.

Then, in the same page: a file that is not an image (a message, the app keeps serving), a test-set
example click (the Sneaker example is classified Sneaker), the sketchpad (empty: "Draw something
first"; a drawing: classified), and every other tab with its content: Mistakes (the gallery, and a
selected mistake explained), Trust (the per-method table), Model (the test accuracy of metrics.json).
One screenshot per tab. The insight section under a prediction (nearest training images, the
contrast, the agreement line, the consensus), a click on a confusion-matrix cell and the training
curves of both runs are checked too, each with a screenshot of its own.

Debian's chromium driven by Playwright (no browser download). The screenshots go to
tests/artifacts/ (git-ignored); with UPDATE_SCREENSHOT=1 the full-page one also replaces
docs/screenshot.png, the README's picture, and the element ones (DOC_SCREENSHOTS) their copies in docs/.

    pytest tests/test_browser.py -q
    UPDATE_SCREENSHOT=1 pytest tests/test_browser.py -q
"""
from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import pytest
from PIL import Image
from playwright.sync_api import expect

from helpers import ARTIFACTS, REPO, needs_chromium
# The screenshots of single elements that docs/ keeps (UPDATE_SCREENSHOT=1 replaces them).
DOC_SCREENSHOTS = ("insight_neighbours.png", "insight_contrast.png", "confusion_click.png", "training_curves.png")
CLASS_NAMES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
               "Ankle boot")


@pytest.fixture(scope="module")
def garment_photo(tmp_path_factory) -> Path:
    """A test-set trouser as a user would upload it: dark garment on white, 10x larger, RGB."""
    from training.data import load_images
    _, labels, raw = load_images(str(REPO / "tests" / "data" / "fashion_mnist"), "test")
    look = raw[int((labels == 1).nonzero()[0, 0])]                                # the first Trouser
    photo = Image.fromarray(255 - look).resize((280, 280), Image.Resampling.BICUBIC).convert("RGB")
    path = tmp_path_factory.mktemp("browser") / "trousers.png"
    photo.save(path)
    return path


def shoot(page, name: str, *locators) -> None:
    """A screenshot of the page region spanning `locators`, into tests/artifacts/ (and docs/ when asked)."""
    sx, sy = page.evaluate("[window.scrollX, window.scrollY]")     # boxes are in the viewport's coordinates
    boxes = [{**box, "x": box["x"] + sx, "y": box["y"] + sy} for box in (loc.bounding_box() for loc in locators)]
    x0, y0 = min(b["x"] for b in boxes), min(b["y"] for b in boxes)
    x1, y1 = max(b["x"] + b["width"] for b in boxes), max(b["y"] + b["height"] for b in boxes)
    page.screenshot(path=str(ARTIFACTS / name), full_page=True,
                    clip={"x": x0 - 8, "y": y0 - 8, "width": x1 - x0 + 16, "height": y1 - y0 + 16})
    if os.environ.get("UPDATE_SCREENSHOT") == "1" and name in DOC_SCREENSHOTS:
        shutil.copy(ARTIFACTS / name, REPO / "docs" / name)


@needs_chromium
def test_browser_upload_shows_prediction_and_maps(app_server, garment_photo, tmp_path, page):
    from gradio_client import Client
    info = Client(app_server.url, verbose=False).predict(api_name="/model_info")
    metrics = json.loads((Path(info["folder"]) / "evaluation" / "metrics.json").read_text())
    page.goto(app_server.url, wait_until="domcontentloaded")
    page.locator("#upload input[type=file]").set_input_files(str(garment_photo))
    label = page.locator("#explain-label")
    top = label.locator("[data-testid=label-output-value]")       # the top class, not the top 3
    expect(top).to_have_text("Trouser", timeout=90_000)              # the easiest class to get right
    maps = page.locator("#explain-maps img")
    expect(maps.first).to_be_visible(timeout=90_000)
    expect(page.locator("#explain-scores")).to_contain_text("Grad-CAM", timeout=30_000)
    # Under the maps: the nearest training images (a trouser is like training trousers) and the
    # distance to each class; opened, the contrast with the runner-up, the agreement and the consensus.
    neighbours = page.locator("#explain-neighbours img")
    expect(neighbours).to_have_count(6, timeout=90_000)
    expect(page.locator("#explain-neighbours")).to_contain_text("Trouser 0.")
    expect(page.locator("#explain-class-distances")).to_contain_text("Trouser", timeout=30_000)
    page.get_by_text("Why this class and not another?").click()
    expect(page.locator("#explain-contrast img")).to_have_count(2, timeout=60_000)
    expect(page.locator("#explain-contrast")).to_contain_text("Evidence for Trouser over")
    expect(page.locator("#explain-agreement")).to_contain_text(re.compile(r"mean rank correlation -?\d\.\d\d"))
    expect(page.locator("#explain-consensus img")).to_be_visible()
    # ROAD per method and, the upload being segmented like a photo, each map's share inside the garment.
    road = page.locator("#explain-road")
    expect(road).to_contain_text("Grad-CAM", timeout=30_000)
    expect(road.get_by_role("gridcell", name=re.compile(r"^\d+%$")).first).to_be_visible()
    page.wait_for_timeout(500)                                # let the last images paint
    shoot(page, "insight_neighbours.png", page.locator("#explain-insight-neighbours"))
    shoot(page, "insight_contrast.png", page.locator("#explain-insight-contrast"))
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
    expect(top).to_have_text("Sneaker", timeout=60_000)
    expect(maps.first).to_be_visible(timeout=60_000)

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
    expect(top).to_have_text(re.compile("|".join(map(re.escape, CLASS_NAMES))), timeout=60_000)
    page.screenshot(path=str(ARTIFACTS / "browser_sketch.png"), full_page=True)

    # Mistakes: the gallery of misclassified test images; selecting one explains it.
    page.get_by_role("tab", name="Mistakes").click()
    mistakes = page.locator("#mistakes img")
    expect(mistakes.first).to_be_visible(timeout=60_000)
    assert mistakes.count() >= 10
    mistakes.first.click()
    expect(page.get_by_text(re.compile(r"Test image #\d+: true class"))).to_be_visible(timeout=60_000)
    expect(page.locator("#mistake-label [data-testid=label-output-value]")).to_have_text(
        re.compile("|".join(map(re.escape, CLASS_NAMES))), timeout=90_000)
    expect(page.locator("#mistake-maps img").first).to_be_visible(timeout=90_000)
    page.wait_for_timeout(500)
    page.screenshot(path=str(ARTIFACTS / "browser_mistakes.png"), full_page=True)

    # A click on the confusion matrix's Shirt row, T-shirt/top column: the mistakes of that cell.
    cm = metrics["confusion_matrix"]
    shirt, tshirt = CLASS_NAMES.index("Shirt"), CLASS_NAMES.index("T-shirt/top")
    rows = page.locator("#confusion").get_by_role("row")                  # the header, then a row per class
    rows.nth(1 + shirt).get_by_role("gridcell").nth(1 + tshirt).click()   # column 0 holds the class names
    expect(page.locator("#mistakes-count")).to_contain_text(f"{cm[shirt][tshirt]} of ", timeout=30_000)
    expect(page.locator("#mistakes-true input")).to_have_value("Shirt")
    expect(page.locator("#mistakes-pred input")).to_have_value("T-shirt/top")
    captions = page.locator("#mistakes .caption-label")
    expect(captions.first).to_contain_text("Shirt → T-shirt/top", timeout=30_000)
    assert all(c.startswith("Shirt → T-shirt/top") for c in captions.all_inner_texts())
    page.wait_for_timeout(500)
    shoot(page, "confusion_click.png", page.locator("#mistakes-true"), page.locator("#mistakes"),
          page.locator("#confusion"))

    # Trust: the explanation and one table row per method, plus the random-order baseline.
    page.get_by_role("tab", name="Trust").click()
    expect(page.locator("#trust-text")).to_contain_text("Measured over", timeout=30_000)
    trust = json.loads((Path(info["folder"]) / "evaluation" / "trust.json").read_text())
    table = page.get_by_role("grid", name="Per-method results over the test sample")
    rows = [*trust["methods"], "(random order)"]
    for name in rows:
        expect(table.get_by_role("gridcell", name=name, exact=True)).to_be_visible(timeout=30_000)
    expect(table.get_by_role("row")).to_have_count(1 + len(rows))      # the header and one per row
    page.wait_for_timeout(500)
    page.screenshot(path=str(ARTIFACTS / "browser_trust.png"), full_page=True)

    # Model: the test accuracy of the served weights, as metrics.json has it.
    page.get_by_role("tab", name="Model").click()
    expect(page.locator("#model-text")).to_contain_text(f"Test accuracy: {metrics['accuracy']:.2%}",
                                                        timeout=30_000)
    # The whole recipe's curves: the base run, then the photo layers with their selection-part accuracy.
    curves = page.locator("#training-curves")
    expect(curves).to_contain_text("Base run, Fashion-MNIST", timeout=30_000)
    expect(curves).to_contain_text("Then photo layers")
    expect(curves).to_contain_text("photo selection part (strict)")
    expect(page.locator("#training-note")).to_contain_text("held out no validation images")
    page.wait_for_timeout(1000)                               # the plots draw after they appear
    shoot(page, "training_curves.png", curves, page.locator("#training-note"))
    page.screenshot(path=str(ARTIFACTS / "browser_model.png"), full_page=True)


@needs_chromium
def test_a_visitor_behind_a_crowd_sees_their_place_and_the_wait(app_server, garment_photo, page):
    """The queue policy (app.py): when explanations are saturated, the page says where the visitor is in
    the queue and how long the wait is, then serves them. The crowd: explain requests with every
    method from API clients, more than the explain workers can take at once. The visitor has been
    served once before the crowd arrives: Gradio estimates a wait from the times it has measured."""
    import explain
    from gradio_client import Client, handle_file
    page.goto(app_server.url, wait_until="domcontentloaded")
    top = page.locator("#explain-label [data-testid=label-output-value]")
    page.get_by_role("button", name="Sneaker", exact=True).click()
    expect(top).to_have_text("Sneaker", timeout=90_000)
    crowd = Client(app_server.url, verbose=False)
    jobs = [crowd.submit(handle_file(str(garment_photo)), list(explain.METHODS), "predicted class",
                         api_name="/explain") for _ in range(12)]
    try:
        expect(page.get_by_role("button", name="Trouser", exact=True)).to_be_visible()
        page.wait_for_timeout(1000)                            # the crowd is queued
        page.get_by_role("button", name="Trouser", exact=True).click()
        # Gradio's status tracker over the result panel: "queue: 5/9 | 1.2/6.8s", the place in the
        # queue, the seconds waited and the expected wait.
        waiting = page.get_by_text(re.compile(r"queue: \d+/\d+ \| [\d.]+/[\d.]+s")).first
        expect(waiting).to_be_visible(timeout=60_000)
        page.screenshot(path=str(ARTIFACTS / "browser_queue.png"), full_page=True)
        expect(top).to_have_text("Trouser", timeout=180_000)
    finally:
        for job in jobs:
            job.result(timeout=300)                     # every crowd request is answered too
