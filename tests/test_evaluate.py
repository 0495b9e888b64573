"""The headline number: the committed weights/ score what weights/evaluation/metrics.json says.

Where the full Fashion-MNIST test set sits beside the repository (../shared/data/fashion_mnist,
as on the development machine), the 10,000 images are evaluated again, through the serving
preprocessing, and the accuracy must equal the stored one (what the README and the model card
report). Elsewhere (a fresh clone, CI) the shipped 200-image slice of the same test set is used.

    pytest tests/test_evaluate.py -q        # ~1 min with the full test set, seconds without
"""
from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from training import evaluate
from training.data import load_images
from model import load_model

REPO = Path(__file__).resolve().parents[1]
WEIGHTS = REPO / "weights"
FULL = REPO.parent / "shared" / "data" / "fashion_mnist"
SLICE = REPO / "tests" / "data" / "fashion_mnist"
# The slice is 200 images of the test set: at the stored 95.6% the number right is binomial with
# standard deviation 2.9 images (1.5 points); 0.90 is 3.8 standard deviations below.
SLICE_MINIMUM = 0.90


@pytest.mark.slow     # the whole test split where ../shared has it: 10,000 images through the network
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


def test_mcnemar_counts_only_the_disagreements():
    ours = [True] * 10 + [False] * 2 + [True] * 50 + [False] * 5
    theirs = [False] * 10 + [True] * 2 + [True] * 50 + [False] * 5
    result = evaluate.mcnemar(ours, theirs)
    assert (result["ours_only"], result["theirs_only"]) == (10, 2)
    # Two-sided exact binomial: 2 * P(X <= 2) for X ~ Binomial(12, 1/2) = 2 * (1 + 12 + 66) / 4096.
    assert result["p_value"] == pytest.approx(2 * 79 / 4096)
    assert evaluate.mcnemar(ours, ours)["p_value"] == 1.0
    big = evaluate.mcnemar([True] * 3000, [False] * 3000)        # 2 ** 3000: exact integers, no overflow
    assert big["ours_only"] == 3000 and 0.0 <= big["p_value"] < 1e-300


@pytest.mark.parametrize("differences, p", [
    ([1.0, 3.0], 1 - 2 * math.atan(2.0) / math.pi),                # 1 degree of freedom: t = 2, Cauchy
    ([1.0, 2.0, 3.0], 1 - 12 ** 0.5 / 14 ** 0.5),                   # 2: P(|T| < t) = t / sqrt(2 + t^2), t = 12^0.5
    ([1.0, 2.0, 3.0, 6.0], 0.06913686926442872),                    # 3: scipy.stats.ttest_1samp
    ([0.5, -0.2, 0.9, 0.4, 0.1], 0.1415802635227843),               # 4: scipy.stats.ttest_1samp
])
def test_paired_t_p_matches_the_t_distribution(differences, p):
    assert evaluate.paired_t_p(differences) == pytest.approx(p, rel=1e-9)
    assert evaluate.paired_t_p([-d for d in differences]) == pytest.approx(p, rel=1e-9)   # two-sided


def test_paired_t_p_refuses_a_single_pair_and_reads_constant_differences():
    with pytest.raises(ValueError, match="at least 2"):
        evaluate.paired_t_p([0.5])
    assert evaluate.paired_t_p([0.0, 0.0]) == 1.0 and evaluate.paired_t_p([0.2, 0.2]) == 0.0


def test_the_evaluate_command_writes_evaluation_and_prints_the_accuracy(tmp_path):
    """`python -m training.evaluate`, as the README runs it: evaluation/ in --out, the last line the accuracy."""
    proc = subprocess.run([sys.executable, "-m", "training.evaluate", "--model", str(WEIGHTS), "--dataset", str(SLICE),
                           "--out", str(tmp_path)], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    written = json.loads((tmp_path / "evaluation" / "metrics.json").read_text())
    looks, labels, _ = load_images(str(SLICE), "test")
    accuracy = (evaluate.predict_probs(load_model(WEIGHTS), looks).argmax(1) == labels).float().mean().item()
    assert written["n"] == 200 and written["accuracy"] == pytest.approx(accuracy)
    assert proc.stdout.strip().splitlines()[-1] == f"test_accuracy={accuracy:.4f}"
