"""allocator.py: freed heap memory really goes back to the OS, and the idle trimmer fires once, when idle.

Real glibc, real threads, resident memory read from /proc: the mechanism the app relies on after
a burst of requests (bench/load.py measures it on the running app).
"""
from __future__ import annotations

import sys
import threading
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from dashboard import allocator  # noqa: E402

pytestmark = pytest.mark.skipif(allocator._LIBC is None, reason="needs glibc (Linux)")


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def fragment_heap(mib: int = 200) -> list:
    """What a burst leaves behind: many 2 KiB blocks allocated by worker threads, 1 in 100 still alive.

    The survivors pin the arenas' tops, so free() alone returns nothing to the OS.
    """
    kept: list = []

    def work():
        blocks = [bytearray(2048) for _ in range(mib * 512 // 4)]   # bytearray > 512 B: real malloc
        kept.extend(blocks[::100])

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return kept


def test_trim_returns_freed_pages_to_the_os():
    allocator.trim()
    kept = fragment_heap(200)
    before = rss_mib()
    released = allocator.trim()
    after = rss_mib()
    assert released
    assert before - after > 100, f"RSS {before:.0f} -> {after:.0f} MiB after malloc_trim"
    assert len(kept) > 0


def test_idle_trimmer_waits_for_quiet_then_trims_once():
    trimmer = allocator.IdleTrimmer(idle_s=0.3)
    for _ in range(5):              # requests 0.1 s apart: never quiet for 0.3 s
        trimmer.touch()
        time.sleep(0.1)
    assert trimmer.trims == 0
    time.sleep(1.0)
    assert trimmer.trims == 1
    time.sleep(0.6)                 # no new request: no new trim
    assert trimmer.trims == 1


def test_cap_arenas_is_accepted_by_glibc():
    assert allocator.cap_arenas(2) is True
