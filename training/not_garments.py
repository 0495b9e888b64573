"""Assemble real images of what is not a garment, for the photo verdict's background: one command.

The photo detector's background model (modelrepo/verdict.py) learns what a photo that is *not* a
garment looks like to the photo network. Crops of the garment photos' own grounds teach it floors,
beds and walls; this folder adds objects, animals, plants, food and textures, which a visitor's
non-garment photo shows far more often (the "outlier exposure" of Hendrycks et al. 2019, "Deep
Anomaly Detection with Outlier Exposure", ICLR, arXiv:1812.04606: a model shown a broad sample of
outliers flags outliers it has not seen). The images come from Debian packages, the one image
source this project's machines reach besides PyPI (whose sample images are the reported natural set,
tests/data/natural, so they must not be used here):

- tuxpaint-stamps-default: photos and drawings of animals, plants, food, objects, vehicles (the
  `clothes` and `people` folders are left out: they are or wear garments);
- tuxpaint-data: its templates, full-frame photos of bark, rocks, waves, trees;
- gimp-data: its patterns, tiled (stone, wood, water, paper, ...; the `Fabric` folder is left out);
- gnome-backgrounds: its raster wallpapers.

Writes <out>/images/ (every image as PNG, stamps with their transparency, which the app composites on
white), <out>/composites/ (each stamp pasted on a ground drawn from the other images: an object on a
floor or a wall, as a photo shows it) and <out>/sources.json (packages, versions, licences, counts).
Each subfolder is one background Gaussian for training/fit_verdict.py --not-garments.

    python -m training.not_garments --out /tmp/not-garments          # apt-get download, about 260 MB
    python -m training.fit_verdict --model weights --not-garments /tmp/not-garments
"""
from __future__ import annotations

import argparse
import json
import random
import struct
import subprocess
from pathlib import Path

import numpy as np
from PIL import Image

PACKAGES = ("tuxpaint-stamps-default", "tuxpaint-data", "gimp-data", "gnome-backgrounds")
LEFT_OUT = {"stamps": ("clothes", "people"), "patterns": ("Fabric",)}
# Patterns are tiles of 50-256 px: tiled to at least this side, they read as a photo of the texture.
PATTERN_SIDE = 384
# A composite's side and the stamp's share of it: the range of sizes at which a phone photo frames an object.
GROUND_SIDES, STAMP_SHARE = (256, 640), (0.4, 0.8)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--out", required=True, help="folder to write (images/, composites/, sources.json)")
    p.add_argument("--cache", default=None, help="where the .deb files are downloaded and unpacked (default: <out>/.debs)")
    p.add_argument("--seed", type=int, default=0, help="seed of the composites")
    return p.parse_args(argv)


def download(cache: Path, packages=PACKAGES) -> dict[str, str]:
    """apt-get download each package into `cache` and unpack it into cache/root -> {package: version}."""
    cache.mkdir(parents=True, exist_ok=True)
    try:
        subprocess.run(["apt-get", "download", *packages], cwd=cache, check=True)
    except FileNotFoundError:
        raise SystemExit("apt-get not found: the images come from Debian's archive, so this step runs on a "
                         "Debian or Ubuntu machine; its output folder can then be copied anywhere") from None
    except subprocess.CalledProcessError as e:
        raise SystemExit(f"apt-get download failed (exit {e.returncode}): is the package index current "
                         "(apt-get update)?") from None
    versions = {}
    for deb in sorted(cache.glob("*.deb")):
        name = subprocess.run(["dpkg-deb", "-f", str(deb), "Package"], capture_output=True, text=True, check=True).stdout.strip()
        if name in packages:
            versions[name] = subprocess.run(["dpkg-deb", "-f", str(deb), "Version"], capture_output=True,
                                            text=True, check=True).stdout.strip()
            subprocess.run(["dpkg-deb", "-x", str(deb), str(cache / "root")], check=True)
    missing = set(packages) - set(versions)
    if missing:
        raise SystemExit(f"apt-get download gave no {sorted(missing)}")
    return versions


def sources(share: Path) -> list[tuple[str, Path]]:
    """[(name, path)] of every image kept, under an unpacked /usr/share; names say the package folder."""
    found = []
    stamps = share / "tuxpaint" / "stamps"
    found += [(f"stamps/{p.relative_to(stamps)}", p) for p in sorted(stamps.rglob("*.png"))
              if p.relative_to(stamps).parts[0] not in LEFT_OUT["stamps"]]
    found += [(f"templates/{p.name}", p) for p in sorted((share / "tuxpaint" / "templates").glob("*.jpg"))]
    patterns = share / "gimp" / "2.0" / "patterns"
    found += [(f"patterns/{p.relative_to(patterns)}", p) for p in sorted(patterns.rglob("*.pat"))
              if p.parent.name not in LEFT_OUT["patterns"]]
    found += [(f"wallpapers/{p.name}", p) for p in sorted((share / "backgrounds" / "gnome").glob("*.webp"))]
    return found


def read_pattern(path: Path, side: int = PATTERN_SIDE) -> Image.Image:
    """A GIMP pattern (.pat: a big-endian header of size, version, width, height, bytes per pixel,
    "GPAT", a name; then the pixels) tiled to at least `side`."""
    raw = path.read_bytes()
    header, _, w, h, depth = struct.unpack(">5I", raw[:20])
    if raw[20:24] != b"GPAT" or depth not in (1, 2, 3, 4):
        raise ValueError(f"{path}: not a GIMP pattern")
    pixels = np.frombuffer(raw[header:header + w * h * depth], np.uint8).reshape(h, w, depth)
    tile = Image.fromarray(pixels[..., 0] if depth <= 2 else pixels)
    reps = max(1, -(-side // max(w, h)))
    tiled = Image.new(tile.mode, (w * reps, h * reps))
    for i in range(reps):
        for j in range(reps):
            tiled.paste(tile, (i * w, j * h))
    return tiled


def read(path: Path) -> Image.Image:
    if path.suffix == ".pat":
        return read_pattern(path)
    with Image.open(path) as img:
        img.load()
        return img.copy()


def composite(stamp: Image.Image, ground: Image.Image, rng: random.Random) -> Image.Image:
    """`stamp` (with its transparency) pasted at a random size and place on a square cut of `ground`."""
    side = rng.randint(*GROUND_SIDES)
    ground = ground.convert("RGB")
    if ground.width < side or ground.height < side:
        ground = ground.resize((side, side))
    else:
        ground = ground.crop((0, 0, min(ground.width, 2 * side), min(ground.height, 2 * side))).resize((side, side))
    stamp = stamp.convert("RGBA")
    scale = rng.uniform(*STAMP_SHARE) * side / max(stamp.size)
    stamp = stamp.resize((max(1, int(stamp.width * scale)), max(1, int(stamp.height * scale))))
    ground.paste(stamp, (rng.randint(0, side - stamp.width), rng.randint(0, side - stamp.height)), stamp)
    return ground


def write(share: Path, out: Path, seed: int) -> dict[str, int]:
    """Write images/ and composites/ from an unpacked /usr/share -> counts per subfolder."""
    found = sources(share)
    if not found:
        raise SystemExit(f"{share}: no images of {PACKAGES} (unpacked?)")
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "composites").mkdir(exist_ok=True)
    stamps, grounds = [], []                 # read once, for the images and the composites alike
    for name, path in found:
        img = read(path)
        img.save(out / "images" / (name.replace("/", "__").rsplit(".", 1)[0] + ".png"))
        (stamps if name.startswith("stamps/") else grounds).append((path, img))
    rng = random.Random(seed)
    for k, (path, stamp) in enumerate(stamps):
        composite(stamp, rng.choice(grounds)[1], rng).save(out / "composites" / f"{k:04d}-{path.stem}.png")
    return {"images": len(found), "composites": len(stamps)}


def main(argv=None) -> None:
    args = parse_args(argv)
    out = Path(args.out)
    cache = Path(args.cache) if args.cache else out / ".debs"
    versions = download(cache)
    counts = write(cache / "root" / "usr" / "share", out, args.seed)
    meta = {"packages": versions, "left_out": LEFT_OUT, "seed": args.seed, "counts": counts,
            "licences": "each package's /usr/share/doc/<package>/copyright (tuxpaint: GPL-2; gimp-data: GPL-3+ "
                        "and CC licences; gnome-backgrounds: CC BY-SA 2.0/3.0 or CC BY 2.0 by image); the images "
                        "are read to fit statistics and are not redistributed"}
    (out / "sources.json").write_text(json.dumps(meta, indent=2) + "\n")
    print(f"[not_garments] {counts} from {versions} -> {out}")


if __name__ == "__main__":
    main()
