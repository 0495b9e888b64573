"""Give memory freed after a burst of requests back to the OS (glibc on Linux; a no-op elsewhere).

Why this exists: under many concurrent requests, glibc's malloc gives Gradio's worker threads
arenas of their own (up to 8 per core), and what they free stays inside those arenas, so the
process keeps its peak after every burst (bench/load.py measures it). Two glibc calls fix it: `mallopt(M_ARENA_MAX, n)` caps the
number of arenas, and `malloc_trim(0)` returns the free pages of every arena to the OS.
`IdleTrimmer` calls the latter once the app has been idle for a moment, never during a request.

    >>> import allocator
    >>> allocator.cap_arenas(2)                    # before the worker threads start
    >>> trimmer = allocator.IdleTrimmer(idle_s=2)  # then trimmer.touch() after each request
"""
from __future__ import annotations

import ctypes
import ctypes.util
import threading
import time

M_ARENA_MAX = -8   # glibc's mallopt parameter number (malloc.h)


def _glibc() -> ctypes.CDLL | None:
    """libc if it is glibc (it has malloc_trim), else None: musl, macOS and Windows lack both calls."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        _ = libc.malloc_trim, libc.mallopt   # AttributeError where they do not exist
        return libc
    except (OSError, AttributeError, TypeError):
        return None


_LIBC = _glibc()


def cap_arenas(n: int = 2) -> bool:
    """At most `n` malloc arenas for the process's threads; True if glibc accepted it."""
    return bool(_LIBC is not None and _LIBC.mallopt(M_ARENA_MAX, int(n)) == 1)


def trim() -> bool:
    """Return free heap pages to the OS; True if glibc released some."""
    return bool(_LIBC is not None and _LIBC.malloc_trim(0))


class IdleTrimmer:
    """Calls `trim()` once the app has had no request for `idle_s` seconds after the last `touch()`.

    A daemon thread that sleeps; trimming while requests run would only free pages that the next
    request allocates again, and it takes the arenas' locks.
    """

    def __init__(self, idle_s: float = 2.0):
        self.idle_s = idle_s
        self.trims = 0                         # how many times it trimmed (read by tests)
        self._last = 0.0
        self._pending = threading.Event()
        # Started by the first touch, not here: building the app (importing app.py) starts no thread.
        self._thread = threading.Thread(target=self._run, name="idle-trimmer", daemon=True)
        self._starting = threading.Lock()

    def touch(self) -> None:
        """A request just finished: trim after the next quiet `idle_s` seconds."""
        self._last = time.monotonic()
        if _LIBC is not None and not self._thread.is_alive():
            with self._starting:
                if not self._thread.is_alive():
                    self._thread.start()
        self._pending.set()

    def _run(self) -> None:
        while True:
            self._pending.wait()
            while True:
                self._pending.clear()         # touches so far are covered by this trim
                left = self._last + self.idle_s - time.monotonic()
                if left <= 0:
                    break
                time.sleep(left)              # a touch() meanwhile moves the deadline on
            trim()
            self.trims += 1
