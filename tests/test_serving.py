"""Serving a crowd: the shared forward pass awaited from an event loop, where the API decodes an
upload, the upload janitor's share of the CPU and the process's garbage-collector settings."""
from __future__ import annotations

import asyncio
import gc
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


@pytest.fixture(scope="module")
def app():
    """app.py imported in this process (the page is built, nothing is launched)."""
    import app as app_module
    return app_module


def test_a_28x28_upload_is_decoded_on_the_event_loop_and_a_photo_in_a_worker_thread(app, monkeypatch):
    from training.data import load_images
    folder = app.APP_FOLDER.path
    small = folder / "small.png"
    Image.fromarray(load_images(str(REPO / "tests/data/fashion_mnist"), "test")[2][0]).save(small)
    photo = folder / "photo.jpg"
    Image.open(sorted((REPO / "examples" / "photos").glob("*t-shirt*.jpg"))[0]).save(photo)
    where = {}
    real = app.input_of

    def recording(image, sketch=False):
        where[image["path"]] = threading.get_ident()
        return real(image, sketch)

    monkeypatch.setattr(app, "input_of", recording)

    async def go():
        got = {p: await app.input_of_async({"path": str(p)}) for p in (small, photo)}
        return threading.get_ident(), got

    loop_thread, got = asyncio.run(go())
    assert where[str(small)] == loop_thread
    assert where[str(photo)] != loop_thread
    for p, (look, is_photo) in got.items():
        expected_look, expected_photo = real({"path": str(p)})
        np.testing.assert_array_equal(look, expected_look)
        assert is_photo == expected_photo
    assert got[photo][1] and not got[small][1]


def test_the_app_takes_its_long_lived_objects_out_of_the_collector(app):
    from dashboard.process import YOUNG_GENERATION
    assert gc.get_threshold()[0] == YOUNG_GENERATION
    assert gc.get_freeze_count() > 100_000


def test_the_upload_janitor_rests_fifty_times_as_long_as_its_last_sweep_took(tmp_path):
    """A sweep made to cost 20 ms of the janitor's CPU: the next comes no sooner than one second later."""
    from dashboard.uploads import SWEEP_SHARE_INVERSE, UploadJanitor
    sweeps, done = [], threading.Event()

    def keep():
        if done.is_set():
            threading.Event().wait()               # after the test the janitor sleeps for good
        start = time.thread_time()
        while time.thread_time() - start < 0.02:
            pass
        sweeps.append(time.monotonic())
        return set()

    UploadJanitor(tmp_path, 10**9, keep=keep, every_s=0.01).start()
    time.sleep(2.5)
    done.set()
    gaps = np.diff(sweeps)
    assert len(sweeps) >= 2, sweeps
    assert gaps.min() >= 0.9 * 0.02 * SWEEP_SHARE_INVERSE, gaps
