"""The headline number: the committed weights/ score what weights/evaluation/metrics.json says.

Where the full Fashion-MNIST test set sits beside the repository (../shared/data/fashion_mnist,
as on the development machine), the 10,000 images are evaluated again, through the serving
preprocessing, and the accuracy must equal the stored one (what the README and the model card
report). Elsewhere (a fresh clone, CI) the shipped 200-image slice of the same test set is used.

    pytest tests/test_evaluate.py -q        # ~1 min with the full test set, seconds without
"""
from __future__ import annotations

import json
from pathlib import Path

import evaluate
from data import load_images
from model import load_model

REPO = Path(__file__).resolve().parents[1]
WEIGHTS = REPO / "weights"
FULL = REPO.parent / "shared" / "data" / "fashion_mnist"
SLICE = REPO / "tests" / "data" / "fashion_mnist"
# The slice is 200 images of the test set: at the stored 95.6% the number right is binomial with
# standard deviation 2.9 images (1.5 points); 0.90 is 3.8 standard deviations below.
SLICE_MINIMUM = 0.90


def test_committed_weights_score_the_stored_test_accuracy():
    stored = json.loads((WEIGHTS / "evaluation" / "metrics.json").read_text())
    model = load_model(WEIGHTS)
    full = (FULL / "fashion_mnist").is_dir()
    looks, labels, _ = load_images(str(FULL if full else SLICE), "test")
    accuracy = (evaluate.predict_probs(model, looks).argmax(1) == labels).float().mean().item()
    if full:
        assert len(labels) == stored["n"] == 10_000
        assert abs(accuracy - stored["accuracy"]) <= 1e-4, (
            f"weights/ score {accuracy:.4f} on the full test set; metrics.json (and the README) say "
            f"{stored['accuracy']:.4f}")
    else:
        assert len(labels) == 200
        assert accuracy >= SLICE_MINIMUM, f"weights/ score {accuracy:.3f} on the shipped slice"
