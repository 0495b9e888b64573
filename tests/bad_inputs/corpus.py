"""A corpus of hostile and awkward image files, written on demand (nothing binary is committed).

Each entry is one way an upload goes wrong in the wild: not an image, empty, truncated, a
decompression bomb, absurd header dimensions, animated, a GIF/JavaScript polyglot, formats outside
the allow-list, a TIFF without dimensions; plus unusual but valid encodings (16-bit grayscale,
CMYK JPEG, LAB TIFF, 32-bit float and integer TIFFs) that the app must classify like the 8-bit
original. tests/test_app.py sends every file through the running app's API.

    python tests/bad_inputs/corpus.py /tmp/corpus      # write the files to look at them
"""
from __future__ import annotations

import io
import struct
import sys
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

# name -> what the user must be told (a fragment of the app's message, case-insensitive).
REFUSED = {
    "not_an_image.png": "not an image",
    "zero_bytes.png": "empty (0 bytes)",
    "truncated.png": "damaged or truncated",
    "bomb_20000x20000.png": "too large (400,000,000 pixels)",
    "huge_header_65535x65535.gif": "too large (4,294,836,225 pixels)",
    "animated.gif": "animated image (3 frames)",
    "polyglot_gif_js.gif": "not an image",
    "blank_white.png": "blank",
    # Formats PIL can read but the app does not accept (allow-list): refused before any decoder runs.
    "image.qoi": "not an image that can be read",
    "image.dds": "not an image that can be read",
    "image.eps": "not an image that can be read",
    "tiff_without_dimensions.tif": "not an image that can be read",
}
# name -> valid but unusual: must be classified like the 8-bit original.
ACCEPTED = ("gray16.png", "cmyk.jpg", "lab.tif", "float32.tif", "int32.tif")


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def flat_png(width: int, height: int, value: int = 0) -> bytes:
    """A real, fully valid 8-bit grayscale PNG of one value, written row by row: tiny on disk,
    width x height bytes once decoded, and never decoded here."""
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)   # 8-bit grayscale
    z = zlib.compressobj(9)
    row = b"\x00" + bytes([value]) * width                            # filter byte + pixels
    body = b"".join(z.compress(row) for _ in range(height)) + z.flush()
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header) + _png_chunk(b"IDAT", body) + _png_chunk(b"IEND", b"")


def bomb_png(side: int = 20_000) -> bytes:
    """A real, fully valid grayscale PNG of side x side black pixels: ~0.4 MB on disk, 400 MB decoded."""
    return flat_png(side, side)


def huge_header_gif(side: int = 65_535) -> bytes:
    """A GIF whose header claims side x side pixels but carries one 1x1 frame."""
    screen = b"GIF89a" + struct.pack("<HHBBB", side, side, 0x80, 0, 0) + b"\x00\x00\x00\xff\xff\xff"
    frame = b"\x2c" + struct.pack("<HHHHB", 0, 0, 1, 1, 0) + b"\x02\x02\x44\x01\x00"
    return screen + frame + b"\x3b"


def _tiff_without_dimensions() -> bytes:
    """A little-endian TIFF whose only directory entry is the compression tag: no width, no height."""
    entries = struct.pack("<HHHII", 259, 3, 1, 1, 0)                    # Compression = none
    return b"II*\x00" + struct.pack("<I", 8) + struct.pack("<H", 1) + entries + struct.pack("<I", 0)


def write_corpus(folder: Path, garment: np.ndarray) -> dict[str, Path]:
    """Write every corpus file into `folder`; `garment` is a uint8 (28, 28) Fashion-MNIST image."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    big = Image.fromarray(garment).resize((280, 280), Image.Resampling.NEAREST)
    png = io.BytesIO()
    big.save(png, format="PNG")
    files = {
        "not_an_image.png": b"This is a text file with a .png name, not a picture.\n" * 20,
        "zero_bytes.png": b"",
        "truncated.png": png.getvalue()[: len(png.getvalue()) // 2],
        "bomb_20000x20000.png": bomb_png(),
        "huge_header_65535x65535.gif": huge_header_gif(),
        # Valid JavaScript and a GIF signature: the classic GIFAR-style polyglot.
        "polyglot_gif_js.gif": b"GIF89a/*\x00\x00\x00\x00*/=1;alert(document.domain);//" + b"\x00" * 64,
    }
    for name, data in files.items():
        (folder / name).write_bytes(data)
    frames = [Image.fromarray(np.roll(garment, k, axis=1)) for k in (0, 2, 4)]
    frames[0].save(folder / "animated.gif", save_all=True, append_images=frames[1:], duration=100, loop=0)
    Image.new("RGB", (120, 90), "white").save(folder / "blank_white.png")
    # 16-bit grayscale: the same picture on the 0..65535 scale (PIL writes mode I;16 as 16-bit PNG).
    Image.fromarray(garment.astype(np.uint16) * 257).save(folder / "gray16.png")
    big.convert("CMYK").save(folder / "cmyk.jpg", quality=95)
    # LAB: its lightness channel is the picture; 32-bit float and integer TIFFs on their own scales.
    lab = np.stack([big, np.full_like(big, 128), np.full_like(big, 128)], -1)
    Image.frombytes("LAB", big.size, lab.tobytes()).save(folder / "lab.tif")
    Image.fromarray(np.asarray(big, np.float32) / 255).save(folder / "float32.tif")
    Image.fromarray(np.asarray(big, np.int32) * 257).save(folder / "int32.tif")
    for fmt in ("QOI", "DDS", "EPS"):
        big.convert("RGB").save(folder / f"image.{fmt.lower()}", fmt)
    (folder / "tiff_without_dimensions.tif").write_bytes(_tiff_without_dimensions())
    return {name: folder / name for name in list(REFUSED) + list(ACCEPTED)}


if __name__ == "__main__":
    sample = np.load(Path(__file__).resolve().parents[2] / "weights/evaluation/samples.npz")["images"][0] \
        if len(sys.argv) < 3 else np.asarray(Image.open(sys.argv[2]).convert("L"))
    for path in write_corpus(Path(sys.argv[1]), sample).values():
        print(f"{path.stat().st_size:>9,}  {path}")
