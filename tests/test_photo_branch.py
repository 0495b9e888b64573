"""The photo branch with stages of its own (config photo_layers): photos meet the copies, every
other input the network as trained; saving, loading, fusing and config checks."""
from __future__ import annotations

import pytest
import torch

from model import FashionCNN, ModelConfig, check_config, count_parameters, load_model, save_model


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


def test_weights_saved_before_photo_layers_existed_still_load():
    model = load_model("weights")
    assert model.config.photo_layers == ()
