"""Serving a crowd: the shared forward pass awaited from an event loop, where the API decodes an
upload, the output folder janitor's share of the CPU and the process's garbage-collector settings."""
from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

REPO = Path(__file__).resolve().parents[1]


def test_coroutines_share_forward_passes_and_each_gets_its_own_row():
    """Twelve coroutines on one event loop, each its own input, against a slow batch function:
    they share passes (no pass of one), each gets its own row, and the loop never blocks."""
    from dashboard.batcher import Batcher
    calls = []

    def fn(x):
        time.sleep(0.05)
        calls.append(len(x))
        return list(x.sum(dim=1))

    batcher = Batcher(fn)

    async def go():
        ticks = 0

        async def ticker():
            nonlocal ticks
            while True:
                await asyncio.sleep(0.005)
                ticks += 1
        beat = asyncio.create_task(ticker())
        out = await asyncio.gather(*(batcher.run(torch.full((1, 3), float(i))) for i in range(12)))
        beat.cancel()
        return out, ticks

    out, ticks = asyncio.run(go())
    assert [float(o) for o in out] == [3.0 * i for i in range(12)]
    assert sum(calls) == 12 and max(calls) > 1, calls
    assert ticks >= 5                 # the loop ran other coroutines while the batches ran


def test_inputs_of_several_tensors_are_batched_part_by_part():
    """A photo's input travels with its material: each part of a tuple is batched along its first
    dimension, and each caller gets the row of its own pair."""
    from dashboard.batcher import Batcher
    calls = []

    def fn(x, m):
        time.sleep(0.05)
        calls.append((len(x), len(m)))
        return list(x.sum(dim=1) * 10 + m[:, 0])

    batcher = Batcher(fn)

    async def go():
        return await asyncio.gather(*(batcher.run((torch.full((1, 3), float(i)), torch.full((1, 2), float(i % 5))))
                                      for i in range(12)))

    out = asyncio.run(go())
    assert [float(o) for o in out] == [30.0 * i + i % 5 for i in range(12)]
    assert all(a == b for a, b in calls) and sum(a for a, _ in calls) == 12 and max(a for a, _ in calls) > 1, calls


def test_a_failing_batch_fails_its_coroutines_too():
    from dashboard.batcher import Batcher

    def fn(x):
        if (x < 0).any():
            raise ValueError("negative input")
        return list(x.sum(dim=1))

    batcher = Batcher(fn)
    with pytest.raises(ValueError, match="negative input"):
        asyncio.run(batcher.run(torch.full((1, 3), -1.0)))
    assert float(asyncio.run(batcher.run(torch.ones(1, 3)))) == 3.0


def test_a_28x28_upload_is_decoded_on_the_event_loop_and_a_photo_in_a_worker_thread(tmp_path, monkeypatch):
    """uploads.decode_async, as the Gradio endpoints and the inference API call it: a file payload
    and the same files' bytes."""
    from dashboard import uploads
    from training.data import load_images
    small = tmp_path / "small.png"
    Image.fromarray(load_images(str(REPO / "tests/data/fashion_mnist"), "test")[2][0]).save(small)
    photo = tmp_path / "photo.jpg"
    Image.open(sorted((REPO / "examples" / "photos").glob("*t-shirt*.jpg"))[0]).save(photo)
    where = {}
    real = uploads.decode

    def recording(image, roots, sketch=False):
        where[image if isinstance(image, bytes) else image["path"]] = threading.get_ident()
        return real(image, roots, sketch)

    monkeypatch.setattr(uploads, "decode", recording)
    inputs = {"small": {"path": str(small)}, "photo": {"path": str(photo)},
              "small bytes": small.read_bytes(), "photo bytes": photo.read_bytes()}

    async def go():
        got = {k: await uploads.decode_async(v, [tmp_path]) for k, v in inputs.items()}
        return threading.get_ident(), got

    loop_thread, got = asyncio.run(go())
    key = {k: v if isinstance(v, bytes) else v["path"] for k, v in inputs.items()}
    assert where[key["small"]] == where[key["small bytes"]] == loop_thread
    assert loop_thread not in (where[key["photo"]], where[key["photo bytes"]])
    for k, seen in got.items():
        expected = real(inputs[k], [tmp_path])
        np.testing.assert_array_equal(seen.look, expected.look)
        assert seen.photo == expected.photo == k.startswith("photo")


def test_importing_the_app_starts_no_thread_and_leaves_the_collector_alone():
    """`import app` (Gradio's convention: `demo` at module level) builds the page only: no thread
    (the batchers and the idle trimmer start on first use), no frozen heap. `launch()` settles the
    heap (dashboard/process.settle_heap), and a first prediction starts the batcher's thread."""
    script = (
        "import gc, threading\n"
        "before = {t.name for t in threading.enumerate()}\n"
        "import app\n"
        "print(sorted({t.name for t in threading.enumerate()} - before), gc.get_freeze_count())\n"
        "app.SERVICE.predict(app.np.zeros((28, 28), app.np.float32))\n"
        "import dashboard.process; dashboard.process.settle_heap()\n"
        "print(sorted({t.name for t in threading.enumerate()} - before), gc.get_freeze_count(), gc.get_threshold()[0])\n")
    out = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=600,
                         env={**os.environ, "GRADIO_ANALYTICS_ENABLED": "False"})
    assert out.returncode == 0, out.stderr[-2000:]
    imported, used = out.stdout.strip().splitlines()[-2:]
    from dashboard.process import YOUNG_GENERATION
    assert imported == "[] 0"
    threads, frozen, young = used.rsplit(" ", 2)
    assert "batcher" in threads and int(frozen) > 100_000 and int(young) == YOUNG_GENERATION, used


def test_the_folder_janitor_rests_fifty_times_as_long_as_its_last_sweep_took(tmp_path):
    """A sweep made to cost 20 ms of the janitor's CPU: the next comes no sooner than one second later."""
    from dashboard.uploads import SWEEP_SHARE_INVERSE, FolderJanitor
    sweeps, done = [], threading.Event()

    class CostlySweeps(FolderJanitor):
        def sweep(self) -> int:
            if done.is_set():
                threading.Event().wait()           # after the test the janitor sleeps for good
            start = time.thread_time()
            while time.thread_time() - start < 0.02:
                pass
            sweeps.append(time.monotonic())
            return super().sweep()

    CostlySweeps(tmp_path, 10**9, every_s=0.01).start()
    time.sleep(2.5)
    done.set()
    gaps = np.diff(sweeps)
    assert len(sweeps) >= 2, sweeps
    assert gaps.min() >= 0.9 * 0.02 * SWEEP_SHARE_INVERSE, gaps
