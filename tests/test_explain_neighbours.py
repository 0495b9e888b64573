"""Tests for explain/neighbours.py: the nearest-training-images index, its files and its checks.

The shipped index (weights/neighbours.*) is tested on the committed test slice (real images the
index never saw); building, saving and every refusal on small indexes built in a temporary folder.

    .venv/bin/python -m pytest tests/test_explain_neighbours.py -q
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest
import torch

from explain.neighbours import (DEFAULT_K, INDEX_FILE, MAX_INDEX_BYTES, META_FILE, NeighbourIndex,
                                NeighbourIndexError, build_index, embed)
from helpers import REPO
from model import FashionCNN, load_model, save_model
from modelrepo.ood import as_input

SLICE = REPO / "tests" / "data" / "fashion_mnist"


@pytest.fixture(scope="module")
def slice_train():
    from training.data import load_images
    looks, labels, _ = load_images(str(SLICE), "train")
    return looks, labels


@pytest.fixture(scope="module")
def slice_test():
    from training.data import load_images
    looks, labels, _ = load_images(str(SLICE), "test")
    return looks, labels


@pytest.fixture
def small_folder(tmp_path, slice_train):
    """A folder with a small random FashionCNN and an index of 8 slice images per class."""
    torch.manual_seed(0)
    model = FashionCNN(widths=(8, 8, 16)).eval()
    save_model(model, tmp_path)
    index = build_index(model, *slice_train, per_class=8)
    index.save(tmp_path)
    return tmp_path, model, index


def test_shipped_index_fits_the_weights_and_the_size_budget():
    model = load_model(REPO / "weights")
    index = NeighbourIndex.load(REPO / "weights", model)
    assert (REPO / "weights" / INDEX_FILE).stat().st_size <= MAX_INDEX_BYTES
    assert index.label_names == model.label_names and index.features.shape[1] == model.head[-1].in_features
    counts = torch.bincount(index.labels, minlength=10)
    assert (counts == counts[0]).all() and counts[0] >= 1000, f"not class-balanced: {counts.tolist()}"


def test_shipped_index_neighbours_of_unseen_test_images_mostly_share_their_label(slice_test):
    """The committed slice's 200 test images: 1-NN label = true label for at least 90% (the full test
    set's figure, with its interval, is in bench/results/neighbours.md)."""
    looks, labels = slice_test
    model = load_model(REPO / "weights")
    index = NeighbourIndex.load(REPO / "weights", model)
    found = index.search(embed(model, as_input(model, looks)), k=DEFAULT_K)
    assert found.labels.shape == (len(labels), DEFAULT_K) and found.looks.shape == (len(labels), DEFAULT_K, 28, 28)
    assert (found.distances[:, 1:] >= found.distances[:, :-1] - 1e-6).all(), "neighbours not nearest first"
    accuracy = (found.labels[:, 0] == labels).float().mean().item()
    assert accuracy >= 0.90, f"1-NN accuracy {accuracy:.2%} on the committed test slice"
    # The per-class distances agree with the search: the nearest class's distance is the first neighbour's.
    per_class = index.class_distances(embed(model, as_input(model, looks[:5])))
    assert torch.allclose(per_class.amin(1), found.distances[:5, 0], atol=1e-5)
    assert (per_class.argmin(1) == found.labels[:5, 0]).all()


def test_an_index_image_finds_itself_first_and_shows_its_own_look(small_folder, slice_train):
    folder, model, index = small_folder
    looks, labels = slice_train
    loaded = NeighbourIndex.load(folder, model)
    rows = loaded.source_index[:4]
    found = loaded.search(embed(model, as_input(model, looks[rows])), k=3)
    assert (found.source_index[:, 0] == rows).all()
    assert (found.distances[:, 0] < 2e-3).all()                              # float16 features
    assert (found.labels[:, 0] == labels[rows]).all()
    expected = (looks[rows] * 255).round().to(torch.uint8)
    assert torch.equal(found.looks[:, 0], expected)
    assert torch.bincount(loaded.labels).tolist() == [8] * 10


def test_k_out_of_range_is_refused(small_folder):
    _, model, index = small_folder
    q = index.features[:1]
    for k in (0, len(index) + 1, 2.5, True):
        with pytest.raises(ValueError, match="k must be"):
            index.search(q, k)


def test_an_index_of_other_weights_is_refused(small_folder):
    folder, model, _ = small_folder
    torch.manual_seed(1)
    save_model(FashionCNN(widths=(8, 8, 16)).eval(), folder)               # new weights, old index
    with pytest.raises(NeighbourIndexError, match="other weights"):
        NeighbourIndex.load(folder, model)


def test_an_index_of_another_architecture_is_refused(small_folder):
    folder, _, _ = small_folder
    (folder / "model.safetensors").unlink()                                # no hash to compare against
    with pytest.raises(NeighbourIndexError, match="do not fit this model"):
        NeighbourIndex.load(folder, FashionCNN(widths=(8, 8, 32)))


@pytest.mark.parametrize("damage", ["missing", "truncated", "oversized", "wrong shape", "bad meta", "not unit"])
def test_damaged_index_files_are_refused_with_the_reason(small_folder, damage):
    folder, model, index = small_folder
    tensors, meta = folder / INDEX_FILE, folder / META_FILE
    if damage == "missing":
        tensors.unlink()
    elif damage == "truncated":
        tensors.write_bytes(tensors.read_bytes()[:1000])
    elif damage == "oversized":
        with open(tensors, "ab") as f:
            f.truncate(MAX_INDEX_BYTES + 1)
    elif damage == "wrong shape":
        m = json.loads(meta.read_text())
        m["shapes"]["labels"] = [3]
        meta.write_text(json.dumps(m))
    elif damage == "bad meta":
        meta.write_text("[1, 2")
    elif damage == "not unit":
        from safetensors.torch import save_file
        broken = {"features": torch.zeros_like(index.features).half(), "labels": index.labels.to(torch.uint8),
                  "looks": index.looks, "source_index": index.source_index.int()}
        save_file(broken, str(tensors))
    with pytest.raises(NeighbourIndexError) as caught:
        NeighbourIndex.load(folder, model)
    assert str(folder) in str(caught.value)


def test_build_command_writes_a_loadable_index(tmp_path):
    torch.manual_seed(0)
    model = FashionCNN(widths=(8, 8, 16)).eval()
    save_model(model, tmp_path)
    proc = subprocess.run([sys.executable, "-m", "explain.neighbours", "build", "--model", str(tmp_path),
                           "--dataset", str(SLICE), "--per-class", "5"],
                          cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "50 images" in proc.stdout
    index = NeighbourIndex.load(tmp_path, load_model(tmp_path))
    assert len(index) == 50 and json.loads((tmp_path / META_FILE).read_text())["weights_sha256"]
    shutil.rmtree(tmp_path)
