"""Adapting a trained network to photos, through train.py as a user runs it: joint training with
photos, WiSE-FT averaging and its choice on validation, and the photo BatchNorm layers (adapt.py),
trained by the same epoch loop as the base run.

    pytest tests/test_adapt.py
"""
import copy
import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from training import adapt, loop
from training import evaluate
import train
from training.config import setup_runtime
from training.data import load_images, split_train_val
from model import load_model
from imaging.preprocess import normalize
from training_support import ROOT, SLICE, offline_env, photo_folder_at, run_cli, train_slice


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    out = tmp_path_factory.mktemp("run") / "model"
    return out, train_slice(out)


@pytest.fixture(scope="module")
def photo_folder(tmp_path_factory) -> Path:
    return photo_folder_at(tmp_path_factory.mktemp("photos"))


def test_joint_training_mixes_photos_in_and_reports_them(photo_folder, tmp_path):
    out = tmp_path / "model"
    run_cli("--dataset", SLICE, "--epochs", "1", "--val-size", "100", "--batch-size", "64", "--out", str(out),
            "--no-progress", "--trust-images", "0", "--photo-train", str(photo_folder), "--photos", str(photo_folder),
            "--photo-share", "0.25", env=offline_env(tmp_path))
    photos = json.loads((out / "evaluation/metrics.json").read_text())["photos"]
    assert photos["n"] == 7 and photos["split"] == "validation"                # the hat is left out
    assert set(photos["per_folder"]) == {"dress", "longsleeve", "outwear", "pants", "shirt", "shoes", "t-shirt"}
    weighted = sum(f["strict"] * f["n"] for f in photos["per_folder"].values()) / photos["n"]
    assert photos["strict_accuracy"] == pytest.approx(weighted)
    assert sum(sum(row.values()) for row in photos["confusion"].values()) == 7
    epoch = json.loads((out / "training_history.json").read_text())[0]
    # 400 training images left by the hold-out: 6 full batches of 64, each with 16 photos (a quarter) added
    assert epoch["images"] == 6 * (64 + 16)
    assert epoch["photo_val_strict"] == pytest.approx(photos["strict_accuracy"], abs=1e-6)
    card = (out / "README.md").read_text()
    assert f"{photos['strict_accuracy']:.1%} / {photos['coarse_accuracy']:.1%} (n=7)" in card
    assert "and on segmented phone photos of garments of those classes." in card


def test_photos_are_read_upright_as_the_app_shows_them(tmp_path):
    """A phone stores a photo on its side with EXIF Orientation 6 ("rotate 90 clockwise to view"):
    training and the photo metrics must see what the app's visitor sees."""
    from PIL import Image

    from training.data import load_photo_looks
    folder = tmp_path / "validation" / "pants"
    folder.mkdir(parents=True)
    with Image.open(ROOT / "examples" / "photos" / "0098b991-pants.jpg") as img:
        upright = img.convert("RGB")
    upright.save(folder / "a_upright.jpg", quality=95)
    exif = Image.Exif()
    exif[0x0112] = 6
    upright.rotate(90, expand=True).save(folder / "b_tagged.jpg", quality=95, exif=exif.tobytes())
    upright.rotate(90, expand=True).save(folder / "c_untagged.jpg", quality=95)
    looks = load_photo_looks(tmp_path, "validation")[0].numpy()
    assert np.abs(looks[1] - looks[0]).mean() < 0.02                   # the same look, up to JPEG rounding
    assert np.abs(looks[2] - looks[0]).mean() > 5 * np.abs(looks[1] - looks[0]).mean()   # the tag made it


def test_wise_keeps_the_average_of_the_start_and_the_fine_tune(trained, tmp_path):
    """--wise a (WiSE-FT): the kept weights are (1 - a) * start + a * what the same fine-tune ends with;
    BatchNorm statistics are averaged too; integer buffers (BatchNorm's batch counts) are the fine-tune's."""
    start = trained[0]
    common = ["--dataset", SLICE, "--init-from", str(start), "--epochs", "1", "--val-size", "0", "--temperature", "0.7",
              "--ema", "0", "--amp", "off", "--batch-size", "100", "--no-progress", "--trust-images", "0"]
    finals = []
    for a in ("1", "0.25"):
        cfg = train.parse_config([*common, "--wise", a, "--out", str(tmp_path / a)])
        finals.append(train.train(cfg, setup_runtime(cfg.runtime)).model.state_dict())
    tuned, wise = finals
    begin = load_model(start).state_dict()
    moved = [k for k, v in tuned.items() if v.is_floating_point() and not torch.equal(v, begin[k])]
    assert any(k.endswith("running_mean") for k in moved) and any(k.endswith("weight") for k in moved)
    for k, v in wise.items():
        expected = 0.75 * begin[k] + 0.25 * tuned[k] if v.is_floating_point() else tuned[k]
        torch.testing.assert_close(v, expected.to(v.dtype), rtol=1e-5, atol=1e-6)


def test_wise_needs_a_start_weights_in_range_and_validation_to_choose(tmp_path):
    for extra in (["--wise", "0.5"], ["--wise", "1.5", "--init-from", "weights"], ["--wise", "0.5", "2"]):
        proc = run_cli("--dataset", SLICE, *extra, "--out", str(tmp_path / "m"), check=False)
        assert proc.returncode == 2 and "--wise takes weights in [0, 1] and needs --init-from" in proc.stderr
    proc = run_cli("--dataset", SLICE, "--init-from", "weights", "--wise", "0.5", "1", "--val-size", "0",
                   "--out", str(tmp_path / "m"), check=False)
    assert proc.returncode == 2 and "several --wise weights are chosen on validation" in proc.stderr


def test_wise_chooses_its_weight_on_validation_by_the_photo_bars_then_accuracy(trained, photo_folder, monkeypatch):
    """choose_wise between a trained start and an untrained network (the average's accuracy falls as a
    grows): every score in its table is that average's own, and the choice follows its rule."""
    from training.data import load_photo_looks
    from model import FashionCNN, config_dict
    start = load_model(trained[0])
    torch.manual_seed(0)
    untrained = FashionCNN(**config_dict(start))
    xv, yv = load_images(SLICE, "test")[:2]
    photos = load_photo_looks(photo_folder, "validation")
    kept, table = adapt.choose_wise(start, untrained, [0.0, 0.5, 1.0], xv, yv)
    rows = table["candidates"]
    assert [r["wise"] for r in rows] == [0.0, 0.5, 1.0]
    for r in rows:
        alone = adapt.weight_average(start, copy.deepcopy(untrained), r["wise"])
        assert r["val_accuracy"] == (evaluate.predict_probs(alone, xv).argmax(1) == yv).float().mean().item()
    assert rows[0]["val_accuracy"] > rows[2]["val_accuracy"] + 0.1           # trained vs untrained
    assert table["chosen"]["wise"] == 0.0                                   # no photos: validation accuracy alone
    assert all(torch.equal(v, start.state_dict()[k]) for k, v in kept.state_dict().items() if v.is_floating_point())

    monkeypatch.setattr(evaluate, "PHOTO_STRICT_BAR", 1.01)                  # no weight can meet the bars
    rows = adapt.choose_wise(start, untrained, [0.0, 0.5, 1.0], xv, yv, photos)[1]["candidates"]
    assert not any(r["meets_photo_bars"] for r in rows) and all(len(r["photo_val_per_folder"]) == 7 for r in rows)
    chosen = adapt.choose_wise(start, untrained, [0.0, 0.5, 1.0], xv, yv, photos)[1]["chosen"]
    assert chosen["photo_val_strict"] == max(r["photo_val_strict"] for r in rows)
    monkeypatch.setattr(evaluate, "PHOTO_STRICT_BAR", 0.0)
    monkeypatch.setattr(evaluate, "PHOTO_FOLDER_BAR", -1.0)                  # every weight meets them
    chosen = adapt.choose_wise(start, untrained, [0.0, 0.5, 1.0], xv, yv, photos)[1]["chosen"]
    assert chosen["wise"] == 0.0 and chosen["meets_photo_bars"]


def test_several_wise_weights_keep_the_chosen_average_and_say_so(trained, tmp_path):
    """metrics.json records the table and reports the kept average's validation accuracy; the card
    names the chosen weight and the ones it was chosen among."""
    out = tmp_path / "m"
    run_cli("--dataset", SLICE, "--init-from", str(trained[0]), "--epochs", "1", "--val-size", "100",
            "--batch-size", "64", "--wise", "0.5", "1", "--out", str(out), "--no-progress", "--trust-images", "0",
            env=offline_env(tmp_path))
    m = json.loads((out / "evaluation/metrics.json").read_text())
    chosen = m["wise"]["chosen"]
    assert [r["wise"] for r in m["wise"]["candidates"]] == [0.5, 1.0]
    assert chosen["val_accuracy"] == max(r["val_accuracy"] for r in m["wise"]["candidates"])
    assert m["val_accuracy"] == chosen["val_accuracy"]
    card = (out / "README.md").read_text()
    a = chosen["wise"]
    assert f"({1 - a:g} start + {a:g} fine-tuned, WiSE-FT; the weight chosen on validation among 0.5, 1)" in card


def test_photo_norms_train_only_the_photo_batchnorm(trained, photo_folder, tmp_path):
    """--photo-norms: every tensor of the start is kept exactly (so every Fashion-MNIST answer is the
    start's); the photo BatchNorm layers start as copies of the network's own and move; the photo
    metrics are those of for_photos()."""
    start, out = trained[0], tmp_path / "pn"
    run_cli("--dataset", SLICE, "--init-from", str(start), "--photo-norms", "--photo-train", str(photo_folder),
            "--photos", str(photo_folder), "--epochs", "3", "--batch-size", "4", "--lr", "0.05", "--out", str(out),
            "--no-progress", "--trust-images", "0", env=offline_env(tmp_path))
    begin, tuned = load_model(start), load_model(out)
    assert tuned.config.photo_norms and not begin.config.photo_norms
    before, after = begin.state_dict(), tuned.state_dict()
    assert all(torch.equal(after[k], v) for k, v in before.items())
    own = [n for n, m in begin.named_modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert len(own) == len(tuned.photo_norms)
    moved = [i for i, n in enumerate(own)
             if not torch.equal(after[f"photo_norms.{i}.running_mean"], before[f"{n}.running_mean"])]
    assert len(moved) == len(own)                          # every photo layer saw the photos' statistics
    m, m0 = (json.loads((d / "evaluation/metrics.json").read_text()) for d in (out, start))
    assert m["confusion_matrix"] == m0["confusion_matrix"]
    from training.data import load_photo_looks
    looks, allowed, _ = load_photo_looks(photo_folder, "validation")
    hits = allowed.gather(1, evaluate.predict_probs(tuned.for_photos(), looks).argmax(1, keepdim=True))
    assert m["photos"]["strict_accuracy"] == pytest.approx(hits.float().mean().item())
    assert "only BatchNorm layers of its own for segmented photos were trained, on segmented photos:" in (
        out / "README.md").read_text()


def test_fmnist_share_mixes_held_in_fashion_mnist_images_into_the_photo_batches(trained, photo_folder, tmp_path,
                                                                                monkeypatch):
    """--fmnist-share 0.5: half of each photo-norm batch is Fashion-MNIST training images, never one
    of the validation split; the other half photos (seen before augmentation, as the batch is built)."""
    from training.data import load_photo_looks
    cfg = train.parse_config(["--dataset", SLICE, "--init-from", str(trained[0]), "--photo-norms", "--photo-train",
                              str(photo_folder), "--epochs", "3", "--batch-size", "4", "--val-size", "100",
                              "--fmnist-share", "0.5", "--amp", "off", "--no-progress", "--out", str(tmp_path / "mix")])
    seen, real = [], loop.augment          # the one epoch loop augments every batch it trains on
    monkeypatch.setattr(loop, "augment", lambda x, *a: (seen.append(x.clone()), real(x, *a))[1])
    adapt.train_photo_norms(cfg, setup_runtime(cfg.runtime))
    all_looks = load_images(SLICE, "train")[0]
    train_idx, val_idx = split_train_val(len(all_looks), 100, cfg.data.seed)
    norm = lambda looks: normalize(looks[:, None]).flatten(1)          # noqa: E731  (as adapt normalises)
    photos = norm(load_photo_looks(photo_folder, "train")[0])
    held_in, held_out = norm(all_looks[train_idx]), norm(all_looks[val_idx])

    def found(row, pool) -> bool:
        return bool((pool - row).abs().amax(1).lt(1e-6).any())

    assert len(seen) == 3 and all(len(x) == 4 for x in seen)
    for x in seen:
        rows = x.flatten(1)
        assert all(found(r, photos) for r in rows[:2]) and all(found(r, held_in) for r in rows[2:])
        assert not any(found(r, held_out) for r in rows)


def test_photo_norms_need_a_start_and_photos(tmp_path):
    for extra in (["--photo-norms", "--photo-train", "p"], ["--photo-norms", "--init-from", "weights"],
                  ["--photo-norms", "--init-from", "weights", "--photo-train", "p", "--wise", "0.5"]):
        proc = run_cli("--dataset", SLICE, *extra, "--out", str(tmp_path / "m"), check=False)
        assert proc.returncode == 2 and "--photo-norms needs --init-from and --photo-train" in proc.stderr
