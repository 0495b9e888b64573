"""training/product_style.py: Fashion-MNIST garments dressed as shop uploads, read from the train split only."""
import numpy as np

from helpers import REPO
from imaging.preprocess import look_and_mask
from training.product_style import product_upload, train_uploads

SLICE = REPO / "tests" / "data" / "fashion_mnist"


def test_a_product_upload_is_a_dark_garment_enlarged_on_white_that_the_app_reads_as_a_photo():
    raw = np.zeros((28, 28), np.uint8)
    raw[4:24, 8:20] = 200                                             # a light garment on black, as Fashion-MNIST
    img = product_upload(raw, np.random.default_rng(0))
    a = np.asarray(img)
    assert img.mode == "RGB" and min(img.size) >= 28 * 6
    assert (a[0, 0] == 255).all() and a.min() < 100                   # white ground, dark garment
    assert look_and_mask(img).photo


def test_train_uploads_are_seeded():
    first, again = train_uploads(str(SLICE), 3, seed=0), train_uploads(str(SLICE), 3, seed=0)
    assert len(first) == 3 and all(np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(first, again))
    other = train_uploads(str(SLICE), 3, seed=1)
    assert not all(np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(first, other))
