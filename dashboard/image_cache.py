"""The one correction this app makes to Gradio (6.31): output images written to the cache atomically.

Gradio saves an output image in a folder named by the hash of its bytes and rewrites the file in
place each time (`processing_utils.save_pil_to_cache`: `Path.write_bytes`, which truncates first).
Two requests that produce the same image (the same example, the same attribution method) share
that path, so a client downloading it while the other request rewrites it receives an empty or
cut-off file. It reproduces on a real server: docs/gradio-image-cache-issue.md has the script and
the text of the upstream report. Here the file is written under a temporary name and renamed into
place, and an existing copy (the same bytes, by the folder's name) is only touched, as Gradio
already does for copied files (`save_file_to_cache`).

app.py's `launch()` calls `make_image_cache_atomic()`; importing this module changes nothing.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

from gradio import processing_utils


def save_pil_atomically(img, cache_dir: str, name: str = "image", format: str = "webp") -> str:
    """`processing_utils.save_pil_to_cache`, with the same arguments and result, written atomically."""
    data = processing_utils.encode_pil_to_bytes(img, format)
    folder = Path(cache_dir) / processing_utils.hash_bytes(data)
    folder.mkdir(exist_ok=True, parents=True)
    path = (folder / f"{name}.{format}").resolve()
    if path.exists():                 # a folder named by the hash of these bytes: the same image
        os.utime(path)                # handed out again: Gradio's cache sweep ages files by time
        return str(path)
    fd, staging = tempfile.mkstemp(dir=folder, prefix=f".{path.name}.")
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(staging, path)
    return str(path)


def make_image_cache_atomic() -> None:
    """Route Gradio's output-image saving through `save_pil_atomically`; calling it again changes nothing."""
    processing_utils.save_pil_to_cache = save_pil_atomically
