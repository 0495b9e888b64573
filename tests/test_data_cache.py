"""Two local dataset folders of the same name are read as themselves, whichever was read first.

datasets keys its cache of a local folder by the folder's name and layout: without
`modelrepo.hub.open_split`'s own cache per folder, a bench reading the full Fashion-MNIST after the
tests had read tests/data's slice got the slice's 200 images as "the test set".

    pytest tests/test_data_cache.py -q
"""
from __future__ import annotations

import shutil

import pyarrow.parquet as pq

from helpers import REPO
from training.data import load_images, open_split

SLICE = REPO / "tests" / "data" / "fashion_mnist"


def test_a_smaller_folder_of_the_same_name_is_not_served_the_slice(tmp_path):
    other = tmp_path / "fashion_mnist"
    shutil.copytree(SLICE, other)
    part = other / "fashion_mnist" / "test-00000-of-00001.parquet"
    pq.write_table(pq.read_table(part).slice(0, 7), part)
    n_slice = len(open_split(SLICE, "test"))
    assert n_slice > 7
    assert len(open_split(other, "test")) == 7
    assert len(load_images(other, "test")[1]) == 7
    assert len(open_split(SLICE, "test")) == n_slice
