"""The serving process's settings: those that must be in place before gradio and torch are
imported, and `settle_heap`, for when the app is built.

app.py imports this module first; an environment variable already set wins over each default.
"""
from __future__ import annotations

import gc
import os

from dashboard import allocator

# No usage analytics or version check, so start-up needs no network.
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
# OpenMP threads that sleep rather than spin between parallel regions. Requests run side by side
# on two cores, so a spinning thread burns the core another request needs
# (bench/results/server_profile.md).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

# Before any worker thread exists: few malloc arenas, so memory freed after a burst can go back
# to the OS. An explicit MALLOC_ARENA_MAX wins.
if "MALLOC_ARENA_MAX" not in os.environ:
    allocator.cap_arenas(2)

# Python's cyclic collector runs after every 700 new container objects by default: a few
# requests' worth under a crowd, and its passes showed in a profile of a classify burst (`perf`).
# Requests make no reference cycles worth collecting sooner.
YOUNG_GENERATION = 10_000


def settle_heap() -> None:
    """Once the app is built: its objects (the page, the networks, the libraries), which live as
    long as the process, are frozen out of the collector, which would otherwise walk them again at
    each full collection; and the young generation is collected less often."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(YOUNG_GENERATION, *gc.get_threshold()[1:])
