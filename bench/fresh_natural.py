"""A second set of natural non-garment photos, which no choice of the project has seen: one command.

tests/data/natural shaped the photo verdict's design (docs/decision_log.md, sixteenth to eighteenth
decisions), so it no longer measures it cleanly. This set comes from Debian wallpaper packages that no
part of the project reads otherwise (training/not_garments.py uses other packages): every photograph
in them that shows no person and no garment, named below, chosen by looking at the images and
written down before any detector read them. Rendered art, logos drawn on photos and paintings are left
out. Like the gnome-backgrounds wallpapers among the background's images, they are mostly scenery
and close-ups of plants; few are objects.

    python bench/fresh_natural.py --out /tmp/natural-fresh      # apt-get download, about 160 MB
    python bench/verdict.py --fresh-natural /tmp/natural-fresh

Writes <out>/<name>.jpg (each at most 1024 px a side, as a phone upload would be) and
<out>/sources.json (packages, versions, licences, files).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as common  # noqa: E402,F401  (puts the repository root on sys.path)

from PIL import Image  # noqa: E402

from training.not_garments import download  # noqa: E402

PACKAGES = ("mate-backgrounds", "plasma-workspace-wallpapers")
# {package: (licence, [files under usr/share])}: the photographs without a person or a garment.
PHOTOS = {
    "mate-backgrounds": ("GPL-2+ (usr/share/doc/mate-backgrounds/copyright)",
                         [f"backgrounds/mate/nature/{n}.jpg" for n in
                          ("Aqua", "Blinds", "Dune", "FreshFlower", "Garden", "GreenMeadow", "LadyBird",
                           "RainDrops", "Storm", "TwoWings", "Wood", "YellowFlower")]),
    "plasma-workspace-wallpapers": ("GPL-2+ (usr/share/doc/plasma-workspace-wallpapers/copyright; each wallpaper's "
                                    "metadata.json names its author and licence)",
                                    [f"wallpapers/{n}" for n in
                                     ("BytheWater", "ColdRipple", "ColorfulCups", "DarkestHour", "EveningGlow",
                                      "FallenLeaf", "Grey", "OneStandsOut", "Path", "summer_1am")]),
}
MAX_SIDE = 1024


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--out", required=True, help="folder to write (<name>.jpg, sources.json)")
    p.add_argument("--cache", default=None, help="where the .deb files are downloaded and unpacked (default: <out>/.debs)")
    return p.parse_args(argv)


def image_file(share: Path, entry: str) -> Path:
    """A file, or for a Plasma wallpaper folder its largest image (contents/images/<W>x<H>.*)."""
    path = share / entry
    if path.is_file():
        return path
    sizes = sorted((path / "contents" / "images").glob("*x*.*"),
                   key=lambda p: int(p.stem.split("x")[0]) * int(p.stem.split("x")[1]))
    if not sizes:
        raise SystemExit(f"{path}: no image (was the package's layout changed?)")
    return sizes[-1]


def main(argv=None) -> None:
    args = parse_args(argv)
    out = Path(args.out)
    cache = Path(args.cache) if args.cache else out / ".debs"
    versions = download(cache, PACKAGES)
    share = cache / "root" / "usr" / "share"
    files = {}
    for package, (_, entries) in PHOTOS.items():
        for entry in entries:
            source = image_file(share, entry)
            name = Path(entry).stem.lower()
            with Image.open(source) as img:
                img = img.convert("RGB")
                img.thumbnail((MAX_SIDE, MAX_SIDE), Image.Resampling.LANCZOS)
                img.save(out / f"{name}.jpg", quality=92)
            files[name] = {"package": package, "file": str(source.relative_to(share))}
    (out / "sources.json").write_text(json.dumps(
        {"packages": versions, "licences": {p: lic for p, (lic, _) in PHOTOS.items()}, "files": files}, indent=2) + "\n")
    print(f"[fresh_natural] {len(files)} photos from {versions} -> {out}")


if __name__ == "__main__":
    main()
