"""The serving process's settings that must be in place before gradio and torch are imported.

app.py imports this module first; an environment variable already set wins over each default.
"""
from __future__ import annotations

import os

import allocator

# No usage analytics or version check, so start-up needs no network.
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
# Gradio's queue summarises its recent events with pandas for its monitoring page, by default
# after every event and over the last 10,000: a cost per request that grows with the app's age
# (bench/results/server_profile.md). Every 100 events over the last 1,000 keeps the page and drops the cost.
os.environ.setdefault("GRADIO_ANALYTICS_CACHE_FREQUENCY", "100")
os.environ.setdefault("GRADIO_ANALYTICS_MAX_EVENTS", "1000")
# OpenMP threads that sleep rather than spin between parallel regions. Requests run side by side
# on two cores, so a spinning thread burns the core another request needs
# (bench/results/server_profile.md).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

# Before any worker thread exists: few malloc arenas, so memory freed after a burst can go back
# to the OS. An explicit MALLOC_ARENA_MAX wins.
if "MALLOC_ARENA_MAX" not in os.environ:
    allocator.cap_arenas(2)
