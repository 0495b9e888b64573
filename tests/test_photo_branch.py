"""The photo branch with stages of its own (config photo_layers): photos meet the copies, every
other input the network as trained; saving, loading, fusing and config checks; train.py
--photo-layers as a user runs it."""
from __future__ import annotations

import json

import pytest
import torch

from model import FashionCNN, ModelConfig, check_config, count_parameters, load_model, save_model
from modelrepo.card import served_parameters
from training.adapt import balanced_indices
from training_support import SLICE, offline_env, photo_folder_at, run_cli


def _start() -> FashionCNN:
    torch.manual_seed(0)
    return FashionCNN().eval()


def _perturb(module: torch.nn.Module) -> None:
    with torch.no_grad():
        for p in module.parameters():
            p.add_(0.1 * torch.randn_like(p))


def test_photos_meet_the_copied_stages_and_every_other_input_the_trained_network(tmp_path):
    start = _start()
    model = FashionCNN(photo_norms=True, photo_layers=("stage3", "head")).eval()
    model.load_state_dict(start.state_dict(), strict=False)
    for bn, photo in zip(model.norms(), model.photo_norms):
        photo.load_state_dict(bn.state_dict())
    for child in ("stage3", "head"):
        getattr(model, f"photo_{child}").load_state_dict(getattr(start, child).state_dict())
    assert count_parameters(model) == count_parameters(start) + sum(2 * bn.num_features for bn in start.norms()) \
        + count_parameters(start.stage3) + count_parameters(start.head)
    x = torch.randn(4, 1, 28, 28)
    with torch.no_grad():
        assert torch.equal(model.for_photos()(x), start(x))          # the copies start as the stages
        _perturb(model.photo_stage3)
        photo = model.for_photos()
        assert torch.equal(model(x), start(x)) and not torch.allclose(photo(x), start(x), atol=1e-3)
        assert photo.config.photo_layers == () and count_parameters(photo) == count_parameters(start)
        save_model(model, tmp_path)
        loaded = load_model(tmp_path)
        assert loaded.config.photo_layers == ("stage3", "head")
        assert torch.equal(loaded(x), start(x)) and torch.equal(loaded.for_photos()(x), photo(x))
    fused = load_model(tmp_path, fuse=True)
    assert not any(name.startswith("photo_") for name, _ in fused.named_children())
    assert torch.allclose(fused(x), start(x), atol=1e-4)


@pytest.mark.parametrize("layers, message", [
    (("stage9",), "photo_layers must name"),
    (("head", "stage3"), "photo_layers must name"),         # out of order
    (("stage3", "stage3"), "photo_layers must name"),
])
def test_the_config_refuses_photo_layers_it_cannot_build(layers, message):
    with pytest.raises(ValueError, match=message):
        check_config(ModelConfig(photo_norms=True, photo_layers=layers))
    with pytest.raises(ValueError, match="photo_layers needs photo_norms"):
        check_config(ModelConfig(photo_layers=("stage3",)))


def test_weights_saved_before_photo_layers_existed_still_load(tmp_path):
    """A config.json written before `photo_layers` existed (no such key) loads as photo BatchNorm alone."""
    save_model(FashionCNN(photo_norms=True).eval(), tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    del config["photo_layers"]
    (tmp_path / "config.json").write_text(json.dumps(config))
    model = load_model(tmp_path)
    assert model.config.photo_norms and model.config.photo_layers == ()


def test_train_py_photo_layers_train_the_copies_on_fit_and_keep_every_tensor_of_the_start(tmp_path):
    """--photo-norms --photo-layers stage3 head: the copies start as the start's stages and move;
    every tensor the start had is kept bit for bit (so every non-photo answer is the start's);
    metrics.json and the card say what trained on what and how many parameters an input meets."""
    start, out = tmp_path / "start", tmp_path / "branch"
    save_model(_start(), start)
    photos = photo_folder_at(tmp_path / "photos")
    run_cli("--dataset", SLICE, "--init-from", str(start), "--photo-norms", "--photo-layers", "stage3", "head",
            "--photo-balance", "--photo-train", str(photos), "--epochs", "3", "--batch-size", "4", "--lr", "0.05",
            "--out", str(out), "--no-progress", "--trust-images", "0", env=offline_env(tmp_path))
    begin, tuned = load_model(start), load_model(out)
    assert tuned.config.photo_layers == ("stage3", "head") and tuned.config.photo_norms
    before, after = begin.state_dict(), tuned.state_dict()
    assert all(torch.equal(after[k], v) for k, v in before.items())
    assert not torch.equal(after["photo_head.3.weight"], before["head.3.weight"])       # the copy trained
    assert not any(k.startswith(("photo_stage1", "photo_stage2")) for k in after)         # only those named
    metrics = json.loads((out / "evaluation/metrics.json").read_text())
    assert (metrics["photo_trained_on"], metrics["photo_scored_each_epoch_on"]) == ("fit", "selection")
    assert metrics["photo_layers"] == ["stage3", "head"] and metrics["photo_balance"] is True
    card = (out / "README.md").read_text()
    assert "and photos' own copy of stage3, head (copied from the start) were trained" in card
    served, stored = served_parameters(tuned), count_parameters(tuned)
    assert served == count_parameters(begin) == count_parameters(tuned.for_photos()) < stored
    assert f"{served:,} per input; {stored:,} stored" in card


def test_photo_layers_and_balance_need_photo_norms(tmp_path):
    for extra, message in ((["--photo-layers", "stage3"], "--photo-layers and --photo-balance need --photo-norms"),
                           (["--photo-balance"], "--photo-layers and --photo-balance need --photo-norms"),
                           (["--photo-norms", "--init-from", "weights", "--photo-train", "p", "--photo-layers",
                             "stage9"], "invalid choice: 'stage9'")):
        proc = run_cli("--dataset", SLICE, *extra, "--out", str(tmp_path / "m"), check=False)
        assert proc.returncode == 2 and message in proc.stderr


def test_balance_draws_every_folder_about_as_often_as_the_largest():
    folders = ["t-shirt"] * 6 + ["outwear"] * 2 + ["dress"] * 3 + ["shoes"] * 5
    counts = torch.bincount(balanced_indices(folders), minlength=len(folders)).tolist()
    # Each photo of a folder the same number of times: round(6 / its count), the folder's share evened out.
    assert counts == [1] * 6 + [3] * 2 + [2] * 3 + [1] * 5
