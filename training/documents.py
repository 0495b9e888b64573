"""Pages of text as a phone photographs them: one more kind of thing that is not a garment.

A page is a flat, pale rectangle with dark marks, which the photo segmentation outlines like a folded
shirt on a bed; the background images of training/not_garments.py (objects, animals, plants,
textures) hold no page. These pages are rendered from this repository's own Markdown (nothing
downloaded, the same on every machine) and then photographed: a paper tone, a font size, a tilt on a
table or a close-up that fills the frame, uneven light, blur and sensor noise, each drawn at random.

    python -m training.documents --out /tmp/not-garments/documents      # what training.not_garments writes
"""
from __future__ import annotations

import argparse
import random
import textwrap
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

REPO = Path(__file__).resolve().parents[1]
# How many pages: enough for one Gaussian of the photo network's features to be estimated.
PAGES = 300
# A page's width in px, and its height over its width (A4 and US letter are 1.29-1.41).
PAGE_WIDTHS, PAGE_RATIO = (480, 900), (1.25, 1.45)
# Font size as a share of the page's width: from a heading down to small print.
FONT_SHARE = (0.018, 0.05)
# The photo's longest side: what a phone upload is shrunk to before the app reads it.
PHOTO_SIDE = 512


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--out", required=True, help="folder to write the pages to (<k>.png)")
    p.add_argument("--pages", type=int, default=PAGES)
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


def source_lines() -> list[str]:
    """Prose lines of the repository's Markdown, without tables, code or blank lines."""
    lines = []
    for path in sorted([REPO / "README.md", *(REPO / "docs").glob("*.md")]):
        if path.is_file():
            lines += [ln.strip("#*> ") for ln in path.read_text(encoding="utf-8").splitlines()
                      if ln.strip() and not ln.lstrip().startswith(("|", "```", "    "))]
    if not lines:
        raise SystemExit(f"{REPO}: no Markdown to render pages from")
    return lines


def render_page(lines: list[str], rng: random.Random) -> Image.Image:
    """One page of text: paper tone, margins and font size drawn at random, lines wrapped to fit."""
    width = rng.randint(*PAGE_WIDTHS)
    height = int(width * rng.uniform(*PAGE_RATIO))
    paper = tuple(rng.randint(lo, 255) for lo in (225, 220, 200))
    page = Image.new("RGB", (width, height), paper)
    draw = ImageDraw.Draw(page)
    size = max(8, int(width * rng.uniform(*FONT_SHARE)))
    font = ImageFont.load_default(size=size)
    margin, ink = int(width * rng.uniform(0.05, 0.12)), rng.randint(0, 70)
    chars = max(10, int((width - 2 * margin) / (0.55 * size)))     # a proportional font's mean advance
    y, start = margin, rng.randrange(len(lines))
    for line in lines[start:] + lines[:start]:
        for row in textwrap.wrap(line, chars) or [""]:
            if y + size > height - margin:
                return page
            draw.text((margin, y), row, fill=(ink, ink, ink), font=font)
            y += int(size * rng.uniform(1.2, 1.6))
        y += size // 2
    return page


def photograph(page: Image.Image, rng: random.Random, np_rng: np.random.Generator) -> Image.Image:
    """The page as a phone sees it: tilted on a table, or a close-up of part of it; then light, blur, noise."""
    if rng.random() < 0.5:
        table = tuple(rng.randint(40, 200) for _ in range(3))
        page = page.rotate(rng.uniform(-12, 12), resample=Image.Resampling.BICUBIC, expand=True, fillcolor=table)
        pad = int(max(page.size) * rng.uniform(0.05, 0.3))
        ground = Image.new("RGB", (page.width + 2 * pad, page.height + 2 * pad), table)
        ground.paste(page, (pad + rng.randint(-pad, pad) // 2, pad + rng.randint(-pad, pad) // 2))
        page = ground
    else:
        w, h = page.size
        cw, ch = int(w * rng.uniform(0.4, 0.9)), int(h * rng.uniform(0.3, 0.8))
        x0, y0 = rng.randint(0, w - cw), rng.randint(0, h - ch)
        page = page.rotate(rng.uniform(-4, 4), resample=Image.Resampling.BICUBIC, fillcolor=page.getpixel((0, 0)))
        page = page.crop((x0, y0, x0 + cw, y0 + ch))
    page.thumbnail((PHOTO_SIDE, PHOTO_SIDE), Image.Resampling.LANCZOS)
    page = page.filter(ImageFilter.GaussianBlur(rng.uniform(0.0, 1.5)))
    a = np.asarray(page, np.float32)
    h, w = a.shape[:2]
    # Uneven light: a linear ramp in a random direction, from a shadowed side to a lit one.
    angle = rng.uniform(0, 2 * np.pi)
    ramp = np.cos(angle) * np.linspace(-1, 1, w)[None, :] + np.sin(angle) * np.linspace(-1, 1, h)[:, None]
    a = a * (1 - rng.uniform(0.0, 0.35) * (ramp[..., None] + 1) / 2)
    a = a + np_rng.normal(0, rng.uniform(1, 6), a.shape)
    photo = Image.fromarray(np.clip(a, 0, 255).astype(np.uint8))
    return photo.convert("L").convert("RGB") if rng.random() < 0.25 else photo


def pages(n: int = PAGES, seed: int = 0) -> list[Image.Image]:
    """`n` photographed pages, the same for the same seed."""
    rng, np_rng, lines = random.Random(seed), np.random.default_rng(seed), source_lines()
    return [photograph(render_page(lines, rng), rng, np_rng) for _ in range(n)]


def write(out: Path, n: int = PAGES, seed: int = 0) -> int:
    out.mkdir(parents=True, exist_ok=True)
    for k, img in enumerate(pages(n, seed)):
        img.save(out / f"{k:04d}.png")
    return n


def main(argv=None) -> None:
    args = parse_args(argv)
    print(f"[documents] {write(Path(args.out), args.pages, args.seed)} pages -> {args.out}")


if __name__ == "__main__":
    main()
