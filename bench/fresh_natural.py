"""Natural non-garment photos that no choice of the project has seen, from Debian packages: one command per set.

tests/data/natural shaped the photo verdict's design (docs/decision_log.md, sixteenth to eighteenth
decisions), so it no longer measures it cleanly. Each set here comes from Debian packages that no
other part of the project reads (training/not_garments.py uses other packages): every photograph in
them that shows no person and no garment, named below, chosen by looking at the images and written
down before any detector read them. Rendered art, logos drawn on photos and paintings are left out.

- `second` (nineteenth decision): wallpapers of mate-backgrounds and plasma-workspace-wallpapers,
  mostly scenery and close-ups of plants.
- `third` (twentieth decision): the sample photos of opencv-doc (objects on tables, fruit, animals,
  buildings, books, a page of text; of each stereo or flow pair, one) and the photographs of
  lomiri-wallpapers-16.04. Once the second set had shaped a choice, this is the clean measure.

    python bench/fresh_natural.py --out /tmp/natural-fresh                  # second, about 160 MB of .deb
    python bench/fresh_natural.py --set third --out /tmp/natural-third      # about 110 MB of .deb
    python bench/verdict.py --fresh-natural /tmp/natural-fresh --third-natural /tmp/natural-third

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

# {set: {package: (licence, [files under usr/share])}}: the photographs without a person or a garment.
SETS = {
    "second": {
        "mate-backgrounds": ("GPL-2+ (usr/share/doc/mate-backgrounds/copyright)",
                             [f"backgrounds/mate/nature/{n}.jpg" for n in
                              ("Aqua", "Blinds", "Dune", "FreshFlower", "Garden", "GreenMeadow", "LadyBird",
                               "RainDrops", "Storm", "TwoWings", "Wood", "YellowFlower")]),
        "plasma-workspace-wallpapers": ("GPL-2+ (usr/share/doc/plasma-workspace-wallpapers/copyright; each wallpaper's "
                                        "metadata.json names its author and licence)",
                                        [f"wallpapers/{n}" for n in
                                         ("BytheWater", "ColdRipple", "ColorfulCups", "DarkestHour", "EveningGlow",
                                          "FallenLeaf", "Grey", "OneStandsOut", "Path", "summer_1am")]),
    },
    "third": {
        "opencv-doc": ("Apache-2.0 AND BSD-3-Clause (usr/share/doc/opencv-doc/copyright, Files: *)",
                       [f"doc/opencv-doc/examples/data/{n}" for n in
                        ("aero1.jpg", "aloeL.jpg", "apple.jpg", "baboon.jpg", "blox.jpg", "board.jpg",
                         "box_in_scene.png", "building.jpg", "butterfly.jpg", "chicky_512.png", "ela_original.jpg",
                         "fruits.jpg", "home.jpg", "leuvenA.jpg", "licenseplate_motion.jpg", "orange.jpg",
                         "right.jpg", "smarties.png", "squirrel_cls.jpg", "stuff.jpg", "text_defocus.jpg")]),
        "lomiri-wallpapers-16.04": ("CC-BY-4.0 or CC-BY-SA-4.0 by image (usr/share/doc/lomiri-wallpapers-16.04/copyright)",
                                    [f"backgrounds/{n}.jpg" for n in
                                     ("Bridge_by_Sander_Klootwijk", "Dragonfly_by_Bolly", "Picture_0B_by_freespace",
                                      "Picture_1A_by_freespace", "Wine_by_Jakkub_Mede",
                                      "aitzgorri_by_Aitzol_Berasategi", "analogpattern_by_Peter_Nerlich",
                                      "free_by_Peter_Nerlich", "friends_by_Aitzol_Berasategi",
                                      "greentock_by_Peter_Nerlich", "life_by_Aitzol_Berasategi",
                                      "picosdeeuropa_by_Aitzol_Berasategi", "seeding_by_Clements_Engelhardt",
                                      "sunset_by_Aitzol_Berasategi")]),
    },
}
MAX_SIDE = 1024


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--set", choices=tuple(SETS), default="second", help="which set")
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
    photos = SETS[args.set]
    versions = download(cache, tuple(photos))
    share = cache / "root" / "usr" / "share"
    files = {}
    for package, (_, entries) in photos.items():
        for entry in entries:
            source = image_file(share, entry)
            name = Path(entry).stem.lower()
            with Image.open(source) as img:
                img = img.convert("RGB")
                img.thumbnail((MAX_SIDE, MAX_SIDE), Image.Resampling.LANCZOS)
                img.save(out / f"{name}.jpg", quality=92)
            files[name] = {"package": package, "file": str(source.relative_to(share))}
    (out / "sources.json").write_text(json.dumps(
        {"set": args.set, "packages": versions, "licences": {p: lic for p, (lic, _) in photos.items()}, "files": files}, indent=2) + "\n")
    print(f"[fresh_natural] {args.set}: {len(files)} photos from {versions} -> {out}")


if __name__ == "__main__":
    main()
