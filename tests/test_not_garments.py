"""training/not_garments.py: the non-garment images of the photo verdict's background, on a small
unpacked tree of the same layout as the Debian packages (the download itself needs apt and 215 MB)."""
import struct

import numpy as np
import pytest
import torch
from PIL import Image

from helpers import REPO
from model import load_model
from training import not_garments
from imaging.material import MATERIAL
from training.fit_verdict import not_garment_groups, routed_photo_inputs


def write_pattern(path, pixels: np.ndarray, name: bytes = b"stone") -> None:
    h, w, depth = pixels.shape
    header = struct.pack(">5I", 24 + len(name) + 1, 1, w, h, depth) + b"GPAT" + name + b"\0"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(header + pixels.astype(np.uint8).tobytes())


def test_a_gimp_pattern_is_read_and_tiled(tmp_path):
    pixels = np.arange(2 * 3 * 3).reshape(2, 3, 3) * 9
    write_pattern(tmp_path / "p.pat", pixels)
    img = not_garments.read_pattern(tmp_path / "p.pat", side=7)
    assert img.size == (9, 6)                                        # 3 tiles across a 3-wide, 2-high tile
    a = np.asarray(img)
    assert (a[:2, :3] == pixels).all() and (a[4:6, 6:9] == pixels).all()
    (tmp_path / "bad.pat").write_bytes(b"\0" * 40)
    with pytest.raises(ValueError, match="not a GIMP pattern"):
        not_garments.read_pattern(tmp_path / "bad.pat")


@pytest.fixture(scope="module")
def model():
    return load_model(REPO / "weights")


@pytest.fixture
def share(tmp_path):
    """An unpacked /usr/share holding one kept and one left-out file of each kind."""
    root = tmp_path / "share"
    rng = np.random.default_rng(0)
    for folder in ("animals/birds", "clothes"):
        (root / "tuxpaint/stamps" / folder).mkdir(parents=True)
        rgba = np.zeros((120, 90, 4), np.uint8)
        rgba[20:100, 20:70] = (200, 40, 40, 255)                      # an opaque object on transparency
        Image.fromarray(rgba).save(root / "tuxpaint/stamps" / folder / "thing.png")
    (root / "tuxpaint/templates").mkdir(parents=True)
    Image.fromarray(rng.integers(0, 255, (300, 400, 3), dtype=np.uint8)).save(root / "tuxpaint/templates/rocks.jpg")
    write_pattern(root / "gimp/2.0/patterns/Stone/granite.pat", rng.integers(0, 255, (64, 64, 3)))
    write_pattern(root / "gimp/2.0/patterns/Fabric/burlap.pat", rng.integers(0, 255, (64, 64, 3)))
    return root


def test_the_folders_of_garments_and_people_are_left_out(share, tmp_path):
    names = [name for name, _ in not_garments.sources(share)]
    assert names == ["stamps/animals/birds/thing.png", "templates/rocks.jpg", "patterns/Stone/granite.pat"]


def test_write_gives_one_folder_per_background_gaussian_that_fit_verdict_reads(share, tmp_path, model):
    out = tmp_path / "out"
    counts = not_garments.write(share, out, seed=0)
    assert counts == {"images": 3, "composites": 1}
    composite = Image.open(next((out / "composites").glob("*.png")))
    assert composite.mode == "RGB" and not_garments.GROUND_SIDES[0] <= composite.width <= not_garments.GROUND_SIDES[1]
    stamp = Image.open(out / "images" / "stamps__animals__birds__thing.png")
    assert stamp.mode == "RGBA"                                       # the app composites it on white, as an upload
    groups = not_garment_groups(out)
    assert sorted(groups) == ["composites", "images"] and len(groups["images"]) == 3
    x, material = routed_photo_inputs(model, groups["images"] + groups["composites"])
    assert x.ndim == 4 and tuple(x.shape[1:]) == (1, 28, 28) and len(x) <= 4 and torch.isfinite(x).all()
    assert material.shape == (len(x), MATERIAL) and torch.isfinite(material).all()
    with pytest.raises(SystemExit, match="no subfolder of images"):
        not_garment_groups(tmp_path / "share" / "gimp")
