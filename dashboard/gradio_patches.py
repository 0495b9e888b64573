"""Two corrections to Gradio (6.x) internals that a crowd of visitors runs into, applied by app.py.

`lean_sessions`: for each new session Gradio builds the config of every block of the app, so
that a deep link (`gr.DeepLinkButton`) can later rebuild the page as the visitor left it. Every
API call that comes without a session (REST `/call`, curl, a new gradio_client) starts one, so on
this dashboard of some eighty blocks that copy was the largest Python cost of a cheap request and
a weight kept per session until thousands of sessions had passed (bench/results/server_profile.md).
The dashboard has no deep link, so a session starts with no configs; Gradio still records the
config of each component a handler updates (`SessionState.__setitem__`), which is all the page
needs.

`atomic_image_cache`: Gradio saves an output image under a folder named by the hash of its bytes,
rewriting the file in place each time. Two visitors who get the same map at once (the same
example, the same method) share that path: one request truncates the file while the other's
client is downloading it, which then receives nothing. The file is now written under a temporary
name and renamed into place, and an existing copy (the same bytes) is only touched, as Gradio
already does for copied files (`save_file_to_cache`).

Each patch checks that the Gradio installed is the one it was written against; both are idempotent.
"""
from __future__ import annotations

import inspect
import os
import re
import tempfile
from pathlib import Path

from gradio import processing_utils
from gradio.state_holder import SessionState


class _NoBlocks:
    """What SessionState.__init__ reads of the app, with no block to copy the config of."""

    def __init__(self, blocks):
        self.default_config = blocks.default_config
        self.blocks = {}


def lean_sessions() -> None:
    """Make new Gradio sessions start without the per-block config copies; idempotent."""
    init = SessionState.__init__
    if getattr(init, "lean", False):
        return
    # The attributes read from `blocks` must be the two _NoBlocks has; anything else needs a look.
    read = set(re.findall(r"(?<![\w.])blocks\.(\w+)", inspect.getsource(init)))
    if read != {"default_config", "blocks"}:
        raise RuntimeError("gradio.state_holder.SessionState changed: review dashboard/gradio_patches.py")

    def lean_init(self, blocks):
        init(self, _NoBlocks(blocks))

    lean_init.lean = True
    SessionState.__init__ = lean_init


def atomic_image_cache() -> None:
    """Make Gradio write each cached output image atomically, and reuse an existing copy."""
    save = processing_utils.save_pil_to_cache
    if getattr(save, "atomic", False):
        return
    if "write_bytes" not in inspect.getsource(save):
        raise RuntimeError("gradio.processing_utils.save_pil_to_cache changed: review dashboard/gradio_patches.py")

    def save_pil_atomically(img, cache_dir: str, name: str = "image", format: str = "webp") -> str:
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

    save_pil_atomically.atomic = True
    processing_utils.save_pil_to_cache = save_pil_atomically
