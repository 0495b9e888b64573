"""train.py --fit-ood: the out-of-distribution detector fitted into a model folder, its score chosen on
validation and its threshold set there, on real data (the shipped slice and the example photos).

    pytest tests/test_fit_ood.py
"""
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from model import load_model
from modelrepo import ood
from modelrepo.folder import open_model
from training.data import load_images, split_train_val
from training.fit_ood import auroc
from training_support import ROOT, SLICE, offline_env, photo_folder_at, run_cli

SMALL = ["--ood-proxy-size", "30", "--ood-bootstrap", "20"]     # a proxy and a bootstrap of seconds


@pytest.fixture(scope="module")
def fitted(tmp_path_factory) -> Path:
    """The committed weights (without their detector) in a folder of their own, fitted on the slice
    and the example photos."""
    folder = tmp_path_factory.mktemp("fit") / "model"
    folder.mkdir()
    for name in ("config.json", "model.safetensors"):
        shutil.copy(ROOT / "weights" / name, folder / name)
    photos = photo_folder_at(tmp_path_factory.mktemp("photos"))
    run_cli("--fit-ood", "--model", str(folder), "--dataset", SLICE, "--val-size", "100", "--photo-train", str(photos),
            *SMALL, env=offline_env(folder.parent))
    return folder


def test_the_detector_and_its_record_are_written_beside_the_weights_and_read_back(fitted):
    record = json.loads((fitted / "evaluation/ood.json").read_text())
    opened = open_model(str(fitted))
    assert opened.detector is not None, opened.detector_error
    assert opened.detector.score_name == record["chosen"] and opened.detector.threshold == record["threshold"]
    assert (fitted / "model.safetensors").read_bytes() == (ROOT / "weights/model.safetensors").read_bytes()
    assert record["command"].startswith("python train.py --fit-ood --model")
    # 400 slice images left after the hold-out of 100, and the seven example photos with a class.
    p = record["protocol"]
    assert (p["fit_images"], p["photo_fit_images"], p["validation_images"]) == (400, 7, 100)
    assert set(p["proxy_families"].values()) == {30}


def test_the_threshold_passes_the_kept_share_of_validation(fitted):
    model = load_model(fitted)
    detector = ood.OODDetector.load(fitted, model)
    looks = load_images(SLICE, "train")[0]
    val_idx = split_train_val(len(looks), 100, 0)[1]
    passed = ~detector.flag(ood.detector_scores(detector, model, looks[val_idx]))
    assert int(passed.sum()) in (95, 96)                         # the 95% quantile of 100 scores


def test_the_choice_follows_its_rule_on_the_proxy(fitted):
    """The best mean proxy AUROC, or a simpler score whose deficit is within the bootstrap's noise."""
    record = json.loads((fitted / "evaluation/ood.json").read_text())
    table, chosen = record["validation"], record["chosen"]
    assert list(table) == list(ood.SCORES)
    best = max(table, key=lambda n: table[n]["mean_auroc"])
    leads = record["protocol"]["lead_of_best_ci95"]
    assert chosen == best or leads[chosen][0] <= 0
    assert all(leads[n][0] > 0 for n in ood.SCORES[:ood.SCORES.index(chosen)])   # no simpler one was tied


def test_auroc_counts_ties_as_half():
    a, b = torch.tensor([0.0, 1.0, 2.0]), torch.tensor([1.0, 3.0])
    assert auroc(a, b) == pytest.approx((1 + 0.5 + 3) / 6)      # b=1: above 0, tied with 1; b=3: above all
    assert auroc(b, b) == 0.5


def test_a_training_run_with_fit_ood_ends_with_its_detector(tmp_path):
    out = tmp_path / "m"
    proc = run_cli("--dataset", SLICE, "--epochs", "1", "--val-size", "100", "--batch-size", "64", "--out", str(out),
                   "--no-progress", "--trust-images", "0", "--fit-ood", *SMALL, env=offline_env(tmp_path))
    assert proc.stdout.strip().splitlines()[-1].startswith("test_accuracy=")
    opened = open_model(str(out))
    assert opened.detector is not None, opened.detector_error
    record = json.loads((out / "evaluation/ood.json").read_text())
    assert record["protocol"]["photo_fit_images"] == 0 and np.isfinite(record["threshold"])


def test_fit_ood_options_that_cannot_work_together_say_so(tmp_path):
    for extra, message in ((["--fit-ood", "--eval-only", "--model", "weights"], "--eval-only and --fit-ood"),
                           (["--model", "weights"], "--model needs --eval-only or --fit-ood")):
        proc = run_cli("--dataset", SLICE, *extra, "--out", str(tmp_path / "x"), check=False)
        assert proc.returncode == 2 and message in proc.stderr
    proc = run_cli("--fit-ood", "--model", str(tmp_path / "none"), "--dataset", SLICE, check=False)
    assert proc.returncode == 2 and proc.stderr.startswith("error:") and "Traceback" not in proc.stderr
