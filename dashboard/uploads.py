"""File -> image: the only place the dashboard opens a file a request names.

A request can name any path (Gradio passes `{"path": ...}` payloads to `preprocess=False`
handlers as they came), so a path is opened only when it lies inside Gradio's upload folder or the
app's own folder, and every refusal reads the same whether or not the file exists. Decoding uses an
allow-list of formats, checks the pixel count and the decoded size (bit depth included) on the
header, refuses animations, applies the EXIF rotation, and turns every failure into one sentence.

The app's own temporary files live under one folder per process (`AppFolder`, `process_folder`),
removed at exit and, for processes that died without cleaning, at the next start. Gradio's upload
folder is Gradio's: its `delete_cache` (app.py) sweeps it; the app only reads from it.
"""
from __future__ import annotations

import asyncio
import io
import os
import re
import shutil
import stat
import tempfile
import threading
import time
import warnings
from pathlib import Path
from typing import NamedTuple

import numpy as np
from PIL import Image, ImageOps

from imaging.preprocess import MAX_IMAGE_PIXELS, WORK_SIZE, InvalidImageError, Seen, look_and_mask, read_from_strokes

FORMATS = ("PNG", "JPEG", "GIF", "WEBP", "BMP", "TIFF")
# Bytes a decoded image may take in memory: a 40-megapixel 8-bit RGB photo fits, the same size
# at 16 bits per channel does not.
MAX_DECODED_BYTES = 128 * 2**20
BITS_PER_PIXEL = {"1": 1, "L": 8, "P": 8, "LA": 16, "PA": 16, "RGB": 24, "YCbCr": 24, "LAB": 24, "HSV": 24,
                  "RGBA": 32, "RGBX": 32, "RGBa": 32, "CMYK": 32, "La": 16, "I": 32, "F": 32,
                  "I;16": 16, "I;16L": 16, "I;16B": 16, "I;16N": 16}
MAX_ECHO = 60   # characters of a user's string repeated in a message
NOT_FOUND = "The uploaded file could not be found on the server; please upload it again."


def clip(text, limit: int = MAX_ECHO) -> str:
    """A user-given value as a message may quote it: repr, at most `limit` characters."""
    s = repr(text)
    return s if len(s) <= limit else s[:limit - 3] + "..."


# ---------------------------------------------------------------------------------------------
# Where files may come from
# ---------------------------------------------------------------------------------------------

def gradio_upload_folder() -> Path:
    """Where Gradio stores uploads and its cache (GRADIO_TEMP_DIR, else <tmp>/gradio)."""
    return Path(os.environ.get("GRADIO_TEMP_DIR") or Path(tempfile.gettempdir()) / "gradio").resolve()


APP_TEMP = "fashion-dashboard"       # under the system's temporary folder: one subfolder per process


def process_folder() -> Path:
    """This process's own temporary folder, <tmp>/fashion-dashboard/<pid> (`AppFolder` makes and removes it)."""
    return Path(tempfile.gettempdir()) / APP_TEMP / str(os.getpid())


class AppFolder:
    """The app's own temporary folder, `process_folder()`; stale ones removed at start."""

    def __init__(self, base: Path | None = None):
        self.base = Path(base) if base else process_folder().parent
        self.base.mkdir(parents=True, exist_ok=True)
        self._remove_stale()
        self.path = self.base / str(os.getpid())
        self.path.mkdir(exist_ok=True)

    def _remove_stale(self) -> None:
        for child in self.base.iterdir():
            if child.name.isdigit() and not _alive(int(child.name)):
                shutil.rmtree(child, ignore_errors=True)

    def cleanup(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def allowed_path(path, roots: list[Path]) -> Path:
    """`path` resolved, if it is a file inside one of `roots`; else the same refusal for every case."""
    try:
        resolved = Path(os.fspath(path)).resolve()
    except (TypeError, ValueError, OSError):
        raise InvalidImageError(NOT_FOUND) from None
    if not any(resolved.is_relative_to(root) for root in roots) or not resolved.is_file():
        raise InvalidImageError(NOT_FOUND)
    return resolved


SWEEP_SHARE_INVERSE = 50            # the janitor rests 50 times as long as its last sweep took


class FolderJanitor(threading.Thread):
    """Keeps one of the app's own folders (its output images, dashboard/image_files.py) under
    `max_bytes`, removing the oldest files first: each distinct image a visitor is shown is a file
    there, and nothing else would ever remove them before the process ends."""

    def __init__(self, folder: Path, max_bytes: int, every_s: float = 5.0):
        super().__init__(name="folder-janitor", daemon=True)
        self.folder, self.max_bytes, self.every_s = Path(folder), max_bytes, every_s

    def run(self) -> None:
        took = 0.0
        while True:
            # A sweep walks every file in the folder, which can hold a crowd's outputs (tens of
            # thousands of files), so it waits at least
            # SWEEP_SHARE_INVERSE times its own duration: at most 2% of a core.
            time.sleep(max(self.every_s, took * SWEEP_SHARE_INVERSE))
            start = time.thread_time()
            try:
                self.sweep()
            except OSError:
                pass          # a file removed under us: the next sweep sees the new state
            took = time.thread_time() - start

    def sweep(self) -> int:
        """Remove the oldest files until the folder fits; returns how many were removed.

        One lstat per file: the sweep runs every few seconds over a folder that holds every recent
        output, so its cost must stay small beside the requests. os.walk never follows a link.
        """
        files = []
        for root, _, names in os.walk(self.folder):
            for name in names:
                path = os.path.join(root, name)
                try:
                    st = os.lstat(path)
                except FileNotFoundError:
                    continue                      # removed meanwhile
                if stat.S_ISREG(st.st_mode):
                    files.append((st.st_mtime, st.st_size, path))
        total, removed = sum(size for _, size, _ in files), 0
        if total <= self.max_bytes:
            return 0
        for _, size, path in sorted(files):
            if total <= self.max_bytes:
                break
            Path(path).unlink(missing_ok=True)
            total, removed = total - size, removed + 1
        return removed


# ---------------------------------------------------------------------------------------------
# Decoding
# ---------------------------------------------------------------------------------------------

def too_large(pixels: int | None, dims: str = "", limit: str = f"{MAX_IMAGE_PIXELS:,} pixels") -> str:
    size = f"{dims}{pixels:,} pixels" if pixels else "too many pixels"
    return (f"The image is too large ({size}); the limit is {limit}, so a possible decompression bomb "
            f"is refused: please upload a smaller image.")


def open_image(source: Path | bytes) -> Image.Image:
    """Open and fully decode an allowed image file (or the bytes of one, as the API receives them),
    refusing bombs, animations and damaged files."""
    empty = len(source) == 0 if isinstance(source, bytes) else source.stat().st_size == 0
    if empty:
        raise InvalidImageError("The file is empty (0 bytes): it is not an image.")
    name = "the image" if isinstance(source, bytes) else source.name
    try:
        with warnings.catch_warnings():
            # PIL only warns between its limit and twice it; here every bomb is an error.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(source) if isinstance(source, bytes) else source, formats=FORMATS) as img:
                _check_header(img)
                if img.format == "JPEG":
                    # The decoder scales by 1/2..1/8 in the DCT: a phone photo decodes at about twice
                    # the working size instead of in full, most of its cost otherwise.
                    img.draft(img.mode, (2 * WORK_SIZE, 2 * WORK_SIZE))
                img.load()
                return ImageOps.exif_transpose(img) or img   # phone photos: apply the EXIF rotation
    except InvalidImageError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        # PIL refuses in Image.open, before the size is known to us; its message carries the count.
        count = re.search(r"\((\d+) pixels\)", str(e))
        raise InvalidImageError(too_large(int(count.group(1)) if count else None)) from None
    except Image.UnidentifiedImageError:
        raise InvalidImageError(f"This file is not an image that can be read ({', '.join(FORMATS)} "
                                f"expected).") from None
    except Exception as e:  # every decoder failure (OSError, SyntaxError, struct.error, ...) reads the same
        reason = (str(e).replace(str(source), name) if not isinstance(source, bytes) else str(e)) or type(e).__name__
        reason = reason[:200]
        raise InvalidImageError(f"The image file is damaged or truncated and cannot be decoded ({reason}).") from None


def _check_header(img: Image.Image) -> None:
    """Size, decoded bytes and frame count, from the header alone (nothing decoded yet)."""
    w, h = img.size
    if w * h > MAX_IMAGE_PIXELS:
        raise InvalidImageError(too_large(w * h, f"{w:,}x{h:,} pixels, "))
    decoded = w * h * BITS_PER_PIXEL.get(img.mode, 64) // 8
    if decoded > MAX_DECODED_BYTES:
        raise InvalidImageError(too_large(w * h, f"{w:,}x{h:,} pixels in mode {img.mode}, ",
                                          f"{MAX_DECODED_BYTES // 2**20} MiB once decoded"))
    frames = getattr(img, "n_frames", 1)
    if frames > 1:
        raise InvalidImageError(f"This is an animated image ({frames} frames): please upload a single still image.")


def editor_composite(value: dict):
    """A Sketchpad/ImageEditor value -> its composite (a file payload, array or image), or None."""
    composite = value.get("composite")
    if composite is None and value.get("layers"):
        composite = value["layers"][0]
    return composite


def carried(image) -> tuple:
    """(what an input carries: a file path, a PIL image, an array or None; whether it is a
    Sketchpad/ImageEditor value). A file payload carries its path, an editor value its composite."""
    editor = isinstance(image, dict) and ("composite" in image or "layers" in image)
    if editor:
        image = editor_composite(image)
    if isinstance(image, dict):
        image = image.get("path")
    return image, editor


def header_pixels(image, roots: list[Path]) -> int | None:
    """Pixels of the image an input carries (a file payload, a Sketchpad value's composite, the
    bytes of a file), read from its header alone; None when it carries no readable image inside
    `roots` (`decode` then says why)."""
    source, _ = carried(image)
    try:
        source = io.BytesIO(source) if isinstance(source, bytes) else allowed_path(source, roots)
        with Image.open(source, formats=FORMATS) as img:
            return img.size[0] * img.size[1]
    except (InvalidImageError, OSError, ValueError, Image.DecompressionBombError):
        return None


class Given(NamedTuple):
    """What the page keeps of a decoded input between events (a gr.State), and what the service
    answers: the Seen less its working image. A shorter tuple (look, photo[, mask]) reads as one
    with the rest None: a test image from the mistakes gallery is (look, False)."""
    look: np.ndarray
    photo: bool
    mask: np.ndarray | None = None
    material: np.ndarray | None = None

    @classmethod
    def of(cls, seen: Seen) -> "Given":
        return cls(seen.look, seen.photo, seen.mask, seen.material)

    @property
    def drawing(self) -> bool:
        """Read from a drawing's strokes: judged against garment drawings."""
        return read_from_strokes(self.mask, self.photo)


# An image as small as the model's input (a 28x28 upload) is decoded on the event loop, in less
# time than a hand-over to a worker thread costs; anything larger, a photo above all (segmenting
# one takes tens of milliseconds), in a worker thread, so that the loop keeps serving meanwhile.
DECODE_ON_LOOP_PIXELS = 64 * 64


async def decode_async(image, roots: list[Path], sketch: bool = False) -> Seen:
    """`decode` for a coroutine on the server's event loop (the Gradio endpoints and the inference API)."""
    pixels = header_pixels(image, roots)
    if pixels is not None and pixels <= DECODE_ON_LOOP_PIXELS:
        return decode(image, roots, sketch)
    return await asyncio.to_thread(decode, image, roots, sketch)


def decode(image, roots: list[Path], sketch: bool = False) -> Seen:
    """Any input the app accepts -> what preprocessing made of it (look (28, 28), mask, working image, photo).

    Args:
        image: a Gradio file payload ({"path": ...}), a Sketchpad value ({"composite": ...}), a
            PIL image, a numpy array, or the bytes of an image file (the inference API's body).
            A path is only opened inside `roots`.
        sketch: the input is a drawing, so "blank" means "draw something first".
    Raises:
        InvalidImageError: with a one-line message for the user.
    """
    image, editor = carried(image)
    sketch = sketch or editor
    empty = "Draw something first." if sketch else "No image: upload one, draw one or pick an example."
    if image is None:
        raise InvalidImageError(empty)
    if isinstance(image, bytes):
        image = open_image(image)
    elif isinstance(image, (str, os.PathLike)):
        image = open_image(allowed_path(image, roots))
    elif not isinstance(image, (Image.Image, np.ndarray)):
        raise InvalidImageError(f"Expected an uploaded image file, got {type(image).__name__}.")
    try:
        seen = look_and_mask(image)
    except InvalidImageError:
        raise
    except Exception as e:  # a preprocessing failure on a strange but valid file: still one sentence
        raise InvalidImageError(f"This image could not be processed ({type(e).__name__}).") from None
    if float(seen.look.max()) < 0.05:
        raise InvalidImageError(empty if sketch else "The image is blank (a single flat colour): there is "
                                                     "nothing to classify.")
    return seen
