"""Gradio sessions that do not copy every component's config up front.

For each new session Gradio (6.x) builds the config of every block of the app, so that a deep
link (`gr.DeepLinkButton`) can later rebuild the page as the visitor left it. Every API call that
comes without a session (REST `/call`, curl, a new gradio_client) starts one, so on this
dashboard of some eighty blocks that copy is the largest Python cost of a cheap request and a
weight kept per session until thousands of sessions have passed (bench/results/profile.md).

The dashboard has no deep link, so a session starts with no configs; Gradio still records the
config of each component a handler updates (`SessionState.__setitem__`), which is all the page
needs. `lean_sessions()` is applied once, before the app serves, and checks that the Gradio
installed is the one this was written against.
"""
from __future__ import annotations

import inspect
import re

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
        raise RuntimeError("gradio.state_holder.SessionState changed: review dashboard/sessions.py")

    def lean_init(self, blocks):
        init(self, _NoBlocks(blocks))

    lean_init.lean = True
    SessionState.__init__ = lean_init
