"""The service in process (weights fallback, locks, batching, a failing Hub), the start-up options
of a running app, the server's event loop, and output images as files written whole (dashboard/image_files.py).

    pytest tests/test_app_service.py -q
"""
from __future__ import annotations

import http.server
import json
import os
import shutil
import socket
import socketserver
import sys
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import app_inputs
from app_inputs import classify
from helpers import start_app, stop_app
from gradio_client import Client

# The shared fixtures (tests/app_inputs.py), made visible to pytest in this module.
image_files = app_inputs.image_files
test_images = app_inputs.test_images


# ---------------------------------------------------------------------------------------------
# Weights: the loader's fallback (in process), and what a running app reports (second server).
# ---------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def app_module():
    from dashboard import service
    return service


@pytest.fixture(scope="module")
def fallback(app_module) -> Path:
    """The folder the loader falls back to: the committed weights (APP_TEST_MODEL in development)."""
    return Path(os.environ.get("APP_TEST_MODEL") or app_module.COMMITTED_WEIGHTS)


@pytest.fixture
def broken_weights(tmp_path, fallback):
    src = fallback

    def make(kind: str) -> Path:
        folder = tmp_path / kind
        folder.mkdir()
        shutil.copy(src / "config.json", folder / "config.json")
        data = (src / "model.safetensors").read_bytes()
        config = json.loads((folder / "config.json").read_text())
        if kind == "truncated":
            data = data[: len(data) // 3]
        elif kind == "mismatch":
            config["widths"] = [16, 32, 64]
        elif kind == "unknown-arch":
            config["arch"] = "vision-transformer"
        (folder / "model.safetensors").write_bytes(data)
        (folder / "config.json").write_text(json.dumps(config))
        return folder
    return make


@pytest.mark.parametrize("kind, names", [("truncated", "model.safetensors"), ("mismatch", "model.safetensors"),
                                         ("unknown-arch", "config.json")])
def test_unusable_weights_fall_back_to_the_committed_ones(app_module, fallback, broken_weights, kind, names):
    folder = broken_weights(kind)
    loaded = app_module.load_weights(str(folder), fallback=fallback)
    assert loaded.fallback and loaded.folder == fallback
    assert str(folder / names) in loaded.source, loaded.source
    from model import load_model
    reference = load_model(fallback)
    x = torch.randn(2, 1, 28, 28)
    assert torch.equal(loaded.model(x), reference(x))
    if kind == "unknown-arch":
        assert "unknown architecture" in loaded.source


def test_the_service_runs_the_network_for_one_request_at_a_time(app_module, fallback, test_images, monkeypatch):
    """The locks' promise (dashboard/service.py): explainers attach hooks to the network as trained,
    so two explanations never run it at once, and the batcher runs one batch at a time.
    Every use of a network is made to last 50 ms here, so that without a lock concurrent requests
    overlap for certain, not by chance. (Without the lock and without the delay, two threads
    explaining at once gave the serial answers in 32 of 32 requests on a busy 2-core machine: the
    end-to-end test above alone cannot be relied on.)"""
    service = app_module.Service(app_module.load_weights(str(fallback), fallback=fallback))
    looks = [test_images[0][i] / 255.0 for i in range(2)]
    jobs = [(i, methods) for i in range(2) for methods in (["Grad-CAM", "Saliency"], ["Guided Backprop"], ["DeepLift"])]

    def run(job):
        i, methods = job
        _, t, maps, scores = service.explain(looks[i], methods)
        return t, {m: (s["deletion_auc"], s["insertion_auc"]) for m, s in scores.items()}

    serial = [run(job) for job in jobs]
    inside, most, count = {}, {}, threading.Lock()

    def slow(real, network):
        def one_at_a_time(*args, **kwargs):
            with count:
                inside[network] = inside.get(network, 0) + 1
                most[network] = max(most.get(network, 0), inside[network])
            try:
                time.sleep(0.05)
                return real(*args, **kwargs)
            finally:
                with count:
                    inside[network] -= 1
        return one_at_a_time

    explain_module = app_module.explain
    monkeypatch.setattr(explain_module, "explain", slow(explain_module.explain, "as trained"))
    monkeypatch.setattr(service.batcher, "fn", slow(service.batcher.fn, "serving"))
    with ThreadPoolExecutor(6) as pool:
        concurrent = list(pool.map(run, jobs))
    assert most == {"as trained": 1, "serving": 1}, f"requests ran a network at the same time: {most}"
    assert concurrent == serial


def test_batched_predictions_are_the_single_ones(app_module, fallback, test_images, monkeypatch):
    """Concurrent predictions share forward passes (dashboard/batcher.py) and each caller gets its own row:
    16 threads, each its own image, against the answers one at a time. The network is made slow so
    that requests do queue up behind it."""
    service = app_module.Service(app_module.load_weights(str(fallback), fallback=fallback))
    looks = [test_images[0][i] / 255.0 for i in range(16)]
    alone = [service.assess(look) for look in looks]
    real = service.batcher.fn
    monkeypatch.setattr(service.batcher, "fn", lambda x: (time.sleep(0.05), real(x))[1])
    service.batcher.batch_sizes.clear()
    with ThreadPoolExecutor(16) as pool:
        together = list(pool.map(service.assess, looks))
    assert max(service.batcher.batch_sizes) > 1, service.batcher.batch_sizes
    assert sum(service.batcher.batch_sizes) == len(looks)
    for a, b in zip(alone, together):
        np.testing.assert_allclose(a.probs, b.probs, atol=1e-5)
        assert a.in_distribution == b.in_distribution
        if a.ood_score is not None:
            assert abs(a.ood_score - b.ood_score) <= 1e-3 * max(1.0, abs(a.ood_score))


def test_a_failing_batch_fails_each_of_its_callers_and_the_next_batch_works():
    from dashboard.batcher import Batcher
    calls = []

    def fn(x):
        calls.append(len(x))
        if (x < 0).any():
            raise ValueError("negative input")
        return list(x.sum(dim=1))

    batcher = Batcher(fn)
    with pytest.raises(ValueError, match="negative input"):
        batcher(torch.full((1, 3), -1.0))
    assert float(batcher(torch.ones(1, 3))) == 3.0
    assert calls == [1, 1]


class _Hub(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_error(503, "Service Unavailable")

    do_HEAD = do_GET

    def log_message(self, *args):
        pass


@pytest.mark.parametrize("behaviour", ["hangs", "5xx"])
def test_a_failing_hub_does_not_hold_up_start_up(app_module, fallback, monkeypatch, behaviour):
    """The Hub as a local socket: one that never answers, one that answers 503 to everything."""
    import huggingface_hub.constants as hub_constants
    if behaviour == "hangs":
        server = socket.socket()
        server.bind(("127.0.0.1", 0))
        server.listen(8)                                   # accepts connections, never replies
        port, stop = server.getsockname()[1], server.close
    else:
        httpd = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _Hub)
        threading.Thread(target=httpd.serve_forever, daemon=True).start()
        port, stop = httpd.server_address[1], (lambda: (httpd.shutdown(), httpd.server_close()))
    monkeypatch.setattr(hub_constants, "ENDPOINT", f"http://127.0.0.1:{port}")
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", False)
    try:
        start = time.monotonic()
        loaded = app_module.load_weights("someone/fashion-mnist-cnn", fallback=fallback, hub_timeout=3.0)
        elapsed = time.monotonic() - start
    finally:
        stop()
    assert loaded.fallback and "someone/fashion-mnist-cnn" in loaded.source
    assert elapsed < 3.0 + 10.0, f"start-up waited {elapsed:.1f} s for the Hub"


def test_running_app_says_it_fell_back(broken_weights, tmp_path, image_files):
    folder = broken_weights("truncated")
    server = start_app(tmp_path, {"MODEL_ID": str(folder)})
    try:
        from gradio_client import Client
        c = Client(server.url, verbose=False)
        info = c.predict(api_name="/model_info")
        assert info["fallback"] is True and str(folder / "model.safetensors") in info["source"]
        assert classify(c, image_files[0])["label"]                  # serving the committed weights
        with urllib.request.urlopen(server.url + "config", timeout=10) as r:
            page = r.read().decode()
        assert "could not be used" in page and "model.safetensors" in page   # said in the UI
    finally:
        stop_app(server)


def _loopback_alias() -> str | None:
    """127.0.0.2: a loopback address other than the default one, where the system allows binding it."""
    try:
        with socket.socket() as probe:
            probe.bind(("127.0.0.2", 0))
        return "127.0.0.2"
    except OSError:
        return None


def test_host_and_hub_timeout_options(tmp_path, image_files):
    """--host: the app listens there and nowhere else; --hub-timeout 1: a Hub that never answers
    holds start-up up for one second, then the committed weights are served and the page says why."""
    host = _loopback_alias()
    if host is None:
        pytest.skip("this system cannot bind 127.0.0.2 (macOS without an alias)")
    hanging = socket.socket()
    hanging.bind(("127.0.0.1", 0))
    hanging.listen(8)                                          # accepts connections, never replies
    env = {"MODEL_ID": "someone/fashion-mnist-cnn", "HF_ENDPOINT": f"http://127.0.0.1:{hanging.getsockname()[1]}",
           "HF_HUB_OFFLINE": "0", "HF_HUB_CACHE": str(tmp_path / "hub"), "HUB_TIMEOUT": "300"}
    try:
        server = start_app(tmp_path, env, ["--hub-timeout", "1"], host=host)
    finally:
        hanging.close()
    try:
        port = server.url.rsplit(":", 1)[1].strip("/")
        with pytest.raises(OSError):                           # not on the default address
            urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5)
        c = Client(server.url, verbose=False)
        info = c.predict(api_name="/model_info")
        assert info["fallback"] is True, info["source"]
        # The command-line option wins over HUB_TIMEOUT=300: the Hub was given one second.
        assert "did not answer within 1 s" in info["source"], info["source"]
        assert classify(c, image_files[0])["label"]
    finally:
        stop_app(server)


@pytest.mark.skipif(sys.platform == "win32", reason="uvloop has no Windows build; requirements.txt skips it there")
def test_the_server_takes_the_fast_event_loop_and_http_parser_that_requirements_install():
    """uvicorn's "auto" choices, as Gradio's launch leaves them: uvloop and httptools when installed,
    asyncio and h11 otherwise (more server CPU per request)."""
    import uvicorn
    config = uvicorn.Config(app=lambda scope, receive, send: None, loop="auto", http="auto")
    config.load()
    assert config.http_protocol_class.__module__ == "uvicorn.protocols.http.httptools_impl"
    loop = config.get_loop_factory()()
    try:
        assert type(loop).__module__.startswith("uvloop"), type(loop)
    finally:
        loop.close()


def test_an_output_image_file_is_never_seen_half_written(tmp_path):
    """dashboard/image_files.py: two requests that produce the same image share its file; while one
    writes it, a download by the other must read the whole file, never a truncated one. Each round
    starts from an empty folder, so the file is created while two writers race and a reader polls."""
    from dashboard.image_files import png_file
    image = np.random.default_rng(0).integers(0, 255, (224, 224, 3), dtype=np.uint8)
    size = Path(png_file(image, tmp_path / "size")).stat().st_size
    bad = []
    for round_ in range(100):
        folder = tmp_path / str(round_)
        writers = [threading.Thread(target=png_file, args=(image, folder)) for _ in range(2)]
        for w in writers:
            w.start()
        path = folder / Path(png_file(image, tmp_path / "size")).name
        while any(w.is_alive() for w in writers):
            if path.exists() and (got := len(path.read_bytes())) != size:
                bad.append(got)
        for w in writers:
            w.join()
        assert path.stat().st_size == size and [p.name for p in folder.iterdir()] == [path.name]   # no staging file left
    assert not bad, f"{len(bad)} reads saw {sorted(set(bad))[:5]} bytes instead of {size}"


def test_the_app_hands_gradio_files_not_pixels(tmp_path):
    """The handlers turn arrays into files (Gradio copies a file into its cache whole) and leave a
    path or None alone; the same image is one file; Gradio's own components take those paths."""
    import gradio as gr
    from dashboard import image_files
    image = np.random.default_rng(1).integers(0, 255, (56, 56), dtype=np.uint8)
    shown = image_files.as_file(image)
    items = image_files.gallery_files([(image, "a"), (Image.fromarray(image), "b")])
    folder = image_files.output_folder()
    assert Path(shown).parent == folder and {Path(path) for path, _ in items} == {Path(shown)}
    assert [caption for _, caption in items] == ["a", "b"]
    assert np.array_equal(np.asarray(Image.open(shown)), image)
    assert image_files.as_file(None) is None and image_files.as_file(shown) == shown
    assert gr.Image(format="png").postprocess(shown).path == shown
    assert [i.image.path for i in gr.Gallery(format="png").postprocess(items).root] == [shown, shown]
    with pytest.raises(TypeError, match="uint8"):
        image_files.png_file(image.astype(np.float32), tmp_path)


def test_every_output_image_the_handlers_return_is_a_file(test_images):
    """What app.py hands the page's image components (the model's view, the maps, the outline, the
    neighbours, the consensus, the mistakes) is a path of dashboard/image_files.py's folder, never
    pixels that Gradio would rewrite in place."""
    import app
    from dashboard.image_files import output_folder
    folder = output_folder()
    is_file = lambda v: isinstance(v, str) and Path(v).parent == folder and Path(v).is_file()   # noqa: E731
    raw = test_images[0][0]
    view, _, gallery, _ = app.explain_image(raw, ["Saliency", "Grad-CAM"], progress=None)
    assert is_file(view) and len(gallery) == 2 and all(is_file(path) for path, _ in gallery)
    given, outline, _ = app.ui_decode(raw)
    assert is_file(outline)
    insight = app.ui_insight(given, ["Saliency"], None)
    assert insight[0] and all(is_file(path) for path, _ in insight[0]) and is_file(insight[4])
    # A gr.Gallery made in the handler has already had Gradio copy its files into Gradio's cache
    # (whole, by its public path); each copy is one of the PNGs written here, byte for byte.
    copies = [Path(item["image"]["path"]) for item in insight[2].value]
    assert copies and all(is_file(str(folder / c.name)) and c.read_bytes() == (folder / c.name).read_bytes()
                          for c in copies)
    mistakes, shown, _ = app.ui_mistakes("All", "All")
    assert len(mistakes) == len(shown) > 0 and all(is_file(path) for path, _ in mistakes)
