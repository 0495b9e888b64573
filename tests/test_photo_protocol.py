"""The photo protocol (docs/decision_log.md): choices are made on a selection part of the photo
train split, never on validation, which is read once per shipped model."""
from __future__ import annotations

from pathlib import Path

import pytest

from training.data import PHOTO_FIT, PHOTO_SELECTION, load_photos, photo_selection_split


def _photo_tree(root: Path, counts: dict[str, int], split: str = "train") -> None:
    for folder, n in counts.items():
        (root / split / folder).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            (root / split / folder / f"{folder}-{i:03d}.jpg").write_bytes(b"")


@pytest.fixture
def photo_root(tmp_path):
    _photo_tree(tmp_path, {"dress": 40, "pants": 25, "shoes": 11, "hat": 7})
    _photo_tree(tmp_path, {"dress": 9, "pants": 9, "shoes": 9}, split="validation")
    return tmp_path


def test_the_selection_split_never_holds_a_validation_photo(photo_root):
    fit, selection = photo_selection_split(photo_root)
    validation = {p for p, _ in load_photos(photo_root, "validation")}
    assert validation and not validation & {p for p, _ in fit + selection}
    assert all(p.parts[-3] == "train" for p, _ in fit + selection)


def test_fit_and_selection_partition_the_train_split_per_folder(photo_root):
    fit, selection = photo_selection_split(photo_root, fraction=0.2)
    assert not {p for p, _ in fit} & {p for p, _ in selection}
    assert sorted(fit + selection) == load_photos(photo_root, "train")
    per_folder = {name: sum(n == name for _, n in selection) for name in ("dress", "pants", "shoes", "hat")}
    assert per_folder == {"dress": 8, "pants": 5, "shoes": 2, "hat": 1}      # round(0.2 * n) in each folder


def test_the_split_is_seeded_and_stays_put_when_photos_are_added(photo_root):
    selection = photo_selection_split(photo_root)[1]
    assert photo_selection_split(photo_root)[1] == selection
    assert photo_selection_split(photo_root, seed=1)[1] != selection
    (photo_root / "train" / "dress" / "dress-new.jpg").write_bytes(b"")
    moved = set(selection) - set(photo_selection_split(photo_root)[1])
    assert len(moved) <= 1        # a new file displaces at most the one photo whose rank it takes


def test_load_photos_reads_the_carved_parts_by_name(photo_root):
    fit, selection = photo_selection_split(photo_root)
    assert load_photos(photo_root, PHOTO_FIT) == fit
    assert load_photos(photo_root, PHOTO_SELECTION) == selection
    assert load_photos(photo_root, PHOTO_SELECTION, folders=("shoes",)) == [s for s in selection if s[1] == "shoes"]


def test_the_natural_sets_share_no_package_with_the_background_nor_with_each_other():
    """A natural set measures the verdict only if none of its images could have shaped the background
    (training/not_garments.py's packages) or the other sets' choices."""
    import sys
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
    from fresh_natural import SETS
    from training.not_garments import PACKAGES
    packages = [set(s) for s in SETS.values()]
    assert all(not p & set(PACKAGES) for p in packages)
    assert not set.intersection(*packages)
    # The twentieth decision's bar needs at least the 20 images in the set it is read on.
    assert sum(len(files) for _, files in SETS["third"].values()) >= 20
