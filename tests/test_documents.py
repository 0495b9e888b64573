"""training/documents.py: photographed pages of text, one background Gaussian of the photo verdict."""
import random

import numpy as np
from PIL import Image, ImageFilter

from training import documents


def test_pages_are_the_same_for_the_same_seed_and_differ_across_seeds():
    a, b, c = documents.pages(3, seed=1), documents.pages(3, seed=1), documents.pages(3, seed=2)
    assert [np.asarray(x).tobytes() for x in a] == [np.asarray(x).tobytes() for x in b]
    assert np.asarray(a[0]).tobytes() != np.asarray(c[0]).tobytes()


def test_a_page_is_a_photo_sized_rgb_image_with_marks_on_it():
    for img in documents.pages(6, seed=0):
        assert img.mode == "RGB" and max(img.size) <= documents.PHOTO_SIDE and min(img.size) >= 64
        # Text and the page's edges make strong local contrast, which a blank photo with the same
        # sensor noise (removed by the median filter) has not.
        gray = np.asarray(img.convert("L").filter(ImageFilter.MedianFilter(3)), np.float32)
        assert np.abs(np.diff(gray, axis=1)).max() > 40


def test_a_rendered_page_carries_the_repository_text_within_its_margins():
    rng = random.Random(0)
    page = documents.render_page(["word " * 40] * 50, rng)
    gray = np.asarray(page.convert("L"))
    assert (gray < 128).any()                                   # text was drawn
    inked_rows = np.nonzero((gray < 128).any(axis=1))[0]
    assert inked_rows.min() > 0 and inked_rows.max() < gray.shape[0] - 1
    assert documents.source_lines()                             # the repository's Markdown is read


def test_write_gives_a_folder_that_fit_verdict_reads_as_one_gaussian(tmp_path):
    from training.fit_verdict import not_garment_groups
    assert documents.write(tmp_path / "documents", 4, seed=0) == 4
    groups = not_garment_groups(tmp_path)
    assert list(groups) == ["documents"] and len(groups["documents"]) == 4
    assert Image.open(groups["documents"][0]).mode == "RGB"
