"""The app's output images as files written whole: the handlers hand Gradio a finished PNG file
(a path, which gr.Image and gr.Gallery take as an output value) instead of pixels.

Gradio 6.31 saves an output image given as an array or a PIL image in place: `save_pil_to_cache`
truncates and rewrites the file named by the hash of its bytes each time. Two requests producing
the same image (the same example clicked by two visitors, the same mistake in the gallery) share
that file, and a client downloading it while the other request rewrites it gets an empty or cut-off
body (docs/gradio-image-cache-issue.md has the reproduction and the upstream report). A file path
takes the other road: Gradio copies it into its cache under a temporary name and renames it into
place. So each output image is written once as a PNG named by the hash of its bytes, under a
temporary name renamed into place, and its path is what the handler returns; the views keep
computing arrays, and app.py turns them into files where it hands them to the page.

The files live in the app's own folder (`output_folder()`, under `uploads.process_folder()`), not
in Gradio's: Gradio copies each into its cache and sweeps its copies itself (app.py's delete_cache).
app.py's FolderJanitor bounds this folder's size, oldest first.
"""
from __future__ import annotations

import hashlib
import io
import os
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image as PILImage

from dashboard.uploads import process_folder

OUTPUT_FOLDER = "outputs"     # under the process's own folder


def output_folder() -> Path:
    """Where `png_file` writes by default: <process folder>/outputs."""
    return process_folder() / OUTPUT_FOLDER


def png_file(image, folder: Path | None = None) -> str:
    """A uint8 array (H, W) or (H, W, 3|4), or a PIL image, as a PNG file written whole; its path.

    The name is the hash of the PNG's bytes, so the same image is written once and found again."""
    folder = Path(folder or output_folder())
    if not isinstance(image, PILImage.Image):
        array = np.asarray(image)
        if array.dtype != np.uint8:
            raise TypeError(f"an output image must be uint8, not {array.dtype}")
        image = PILImage.fromarray(array)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    data = buffer.getvalue()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{hashlib.sha256(data).hexdigest()[:32]}.png"
    if path.exists():                 # the same bytes: touched, so the folder's janitor sees it as recent
        os.utime(path)
        return str(path)
    fd, staging = tempfile.mkstemp(dir=folder, prefix=f".{path.name}.")
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(staging, path)
    return str(path)


def as_file(value):
    """An array or PIL image as `png_file`'s path; anything else (a path, None) as it is."""
    return png_file(value) if isinstance(value, (np.ndarray, PILImage.Image)) else value


def gallery_files(items):
    """Gallery items, (image, caption) pairs or images, with each array or PIL image as `png_file`'s path."""
    return [(as_file(v[0]), v[1]) if isinstance(v, (tuple, list)) else as_file(v) for v in items]
