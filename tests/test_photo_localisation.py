"""explain/photo_localisation.py: the share of each map inside the garment mask over a photo split,
written into trust.json beside what is there. Real photos (examples/photos), the shipped weights.

    pytest tests/test_photo_localisation.py -q
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

from explain.photo_localisation import main, photo_localisation, segmented_photos
from model import load_model

REPO = Path(__file__).resolve().parents[1]


def photo_split(tmp_path: Path) -> Path:
    """Two example photos in the split layout (a folder per class) and a file that is not an image."""
    split = tmp_path / "validation"
    for name in ("0098b991-pants.jpg", "00003aeb-t-shirt.jpg"):
        (split / name.split("-", 1)[1][:-4]).mkdir(parents=True, exist_ok=True)
        shutil.copy(REPO / "examples" / "photos" / name, split / name.split("-", 1)[1][:-4] / name)
    (split / "pants" / "notes.jpg").write_text("not a picture")
    return split


def test_each_method_gets_a_share_of_its_map_inside_the_garment(tmp_path):
    photos, skipped = segmented_photos(photo_split(tmp_path))
    assert len(photos) == 2 and skipped == 1
    assert all(look.shape == (28, 28) and mask.dtype == bool and 0 < mask.mean() < 1 for _, look, mask in photos)
    result = photo_localisation(load_model(REPO / "weights"), photos, methods=("Grad-CAM", "Saliency"))
    assert result["n_photos"] == 2
    assert result["mean_mask_area"] == np.mean([mask.mean() for _, _, mask in photos])
    for m in ("Grad-CAM", "Saliency"):
        assert result["methods"][m]["n"] == 2 and 0 <= result["methods"][m]["mean_inside"] <= 1


def test_the_command_adds_its_key_to_trust_json_and_keeps_the_rest(tmp_path):
    folder = tmp_path / "weights"
    shutil.copytree(REPO / "weights", folder, ignore=shutil.ignore_patterns("neighbours.*"))
    before = json.loads((folder / "evaluation" / "trust.json").read_text())
    assert main([str(folder), "--photos", str(photo_split(tmp_path)), "--threads", "1"]) == 0
    after = json.loads((folder / "evaluation" / "trust.json").read_text())
    assert {k: v for k, v in after.items() if k != "photo_localisation"} == \
        {k: v for k, v in before.items() if k != "photo_localisation"}
    assert after["photo_localisation"]["n_photos"] == 2 and after["photo_localisation"]["not_segmented_as_photos"] == 1
