"""What the app tests share: the committed test slice as arrays and PNG files, and the classify call.

Imported by tests/test_app.py and tests/test_app_service.py (pytest finds the fixtures where they
are imported).
"""
from __future__ import annotations

import numpy as np
import pytest
from gradio_client import handle_file
from PIL import Image

from helpers import REPO

DATASET = REPO / "tests" / "data" / "fashion_mnist"
N_IMAGES = 20


@pytest.fixture(scope="module")
def test_images():
    """(images uint8 (N, 28, 28), labels) from the committed test slice: two of each class."""
    from training.data import load_images
    _, labels, raw = load_images(str(DATASET), "test")
    labels = labels.numpy()
    picks = np.concatenate([np.flatnonzero(labels == c)[:N_IMAGES // 10] for c in range(10)])
    return raw[picks], labels[picks]


@pytest.fixture(scope="module")
def image_files(test_images, tmp_path_factory):
    folder = tmp_path_factory.mktemp("images")
    paths = []
    for i, img in enumerate(test_images[0]):
        paths.append(folder / f"test-{i}.png")
        Image.fromarray(img).save(paths[-1])
    return paths


def top(label_value: dict) -> str:
    return label_value["label"]


def classify(client, path) -> dict:
    return client.predict(handle_file(str(path)), api_name="/classify")
