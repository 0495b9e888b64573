"""An outsider's attacks on the running app and on the weights loader, each refused in the app's words.

- A request naming a server file by path, on every endpoint that takes an image, UI handlers
  included (called by fn_index over raw HTTP, as the page calls them): refused with one message,
  the same whether the file exists or not.
- One request's work is bounded: methods de-duplicated, echoed strings clipped.
- A seeded mutation loop over the bad-file corpus: every outcome is a look or the app's message.
- Hostile configs and weights: refused before allocation, the app falls back, train.py exits 2.
- SIGTERM: the app's temporary folder is removed.
"""
from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import urllib.request
import uuid
from pathlib import Path

import numpy as np
import pytest
import torch
from gradio_client import handle_file
from PIL import Image

from bad_inputs.corpus import write_corpus
from helpers import REPO, start_app, stop_app
from dashboard import uploads
from dashboard.service import load_weights
from training.data import load_images
from model import WeightsError, load_model
from imaging.preprocess import InvalidImageError

SLICE = REPO / "tests" / "data" / "fashion_mnist"
WEIGHTS = REPO / "weights"


@pytest.fixture(scope="module")
def garment() -> np.ndarray:
    return load_images(str(SLICE), "test")[2][0]


@pytest.fixture(scope="module")
def server_files(tmp_path_factory, garment) -> dict[str, str]:
    """A readable server image outside the upload folder, a non-image file, and a missing path."""
    folder = tmp_path_factory.mktemp("server-files")
    Image.fromarray(garment).save(folder / "secret.png")
    (folder / "notes.txt").write_text("not for visitors")
    return {"image": str(folder / "secret.png"), "text": str(folder / "notes.txt"),
            "missing": str(folder / "missing.png"), "traversal": str(folder / ".." / folder.name / "secret.png")}


def call_fn_index(url: str, fn_index: int, data: list) -> dict:
    """Call one event handler over Gradio's queue protocol, as the page does; returns the last message."""
    session = uuid.uuid4().hex
    body = json.dumps({"data": data, "fn_index": fn_index, "session_hash": session, "event_data": None,
                       "trigger_id": None}).encode()
    req = urllib.request.Request(url + "gradio_api/queue/join", body, {"Content-Type": "application/json"})
    urllib.request.urlopen(req, timeout=30).read()
    last = {}
    with urllib.request.urlopen(f"{url}gradio_api/queue/data?session_hash={session}", timeout=60) as stream:
        for raw in stream:
            line = raw.decode().strip()
            if line.startswith("data:"):
                last = json.loads(line[5:])
                if last.get("msg") == "process_completed":
                    return last
    return last


def test_named_endpoints_refuse_server_paths_alike(client, server_files):
    messages = set()
    for path in server_files.values():
        for endpoint, args in (("/classify", ()), ("/explain", (["Saliency"], "predicted class"))):
            with pytest.raises(Exception) as err:
                client.predict({"path": path}, *args, api_name=endpoint)
            messages.add(str(err.value))
        with pytest.raises(Exception) as err:
            client.predict({"composite": {"path": path}}, api_name="/classify_sketch")
        messages.add(str(err.value))
    assert messages == {uploads.NOT_FOUND}, messages


def test_ui_handlers_refuse_server_paths_alike(app_server, server_files):
    with urllib.request.urlopen(app_server.url + "config", timeout=10) as r:
        config = json.loads(r.read())
    components = {c["id"]: c for c in config["components"]}
    image_inputs = [i for i, dep in enumerate(config["dependencies"])
                    if dep["inputs"] and components[dep["inputs"][0]]["type"] in ("image", "imageeditor")
                    and len(dep["inputs"]) == 1]
    assert len(image_inputs) >= 2, "the upload and the draw handlers"
    meta = {"_type": "gradio.FileData"}
    for fn_index in image_inputs:
        kind = components[config["dependencies"][fn_index]["inputs"][0]]["type"]
        for file in ({}, {"meta": meta}):               # a raw path, and one dressed as an upload
            outcomes = set()
            for path in server_files.values():
                payload = {"path": path, **file}
                if kind == "imageeditor":
                    payload = {"composite": payload, "layers": [], "background": None}
                out = call_fn_index(app_server.url, fn_index, [payload])
                if out.get("success"):
                    data = out["output"]["data"]                # (look, outlined image, status)
                    assert data[0] is None and data[1] is None
                    status = data[-1]
                    outcomes.add(status)
                else:                                      # refused by Gradio's own validation
                    outcomes.add(json.dumps(out.get("output")))
            # One answer for every path: nothing tells an existing file from a missing one.
            assert len(outcomes) == 1, (kind, file, outcomes)
            answer = outcomes.pop()
            assert answer in (f"**⚠ {uploads.NOT_FOUND}**", json.dumps({"error": None})), answer


def test_methods_are_deduplicated_and_strings_clipped(client, tmp_path, garment):
    path = tmp_path / "g.png"
    Image.fromarray(garment).save(path)
    scores = client.predict(handle_file(str(path)), ["Saliency"] * 1000, "predicted class", api_name="/explain")[3]
    assert list(scores["methods"]) == ["Saliency"]
    with pytest.raises(Exception) as err:
        client.predict(handle_file(str(path)), ["Saliency"], "x" * 100_000, api_name="/explain")
    assert "Unknown class" in str(err.value) and len(str(err.value)) < 400
    with pytest.raises(Exception, match="methods must be a list"):
        client.predict(handle_file(str(path)), 123, "predicted class", api_name="/explain")


def _mutations(data: bytes, rng: random.Random) -> bytes:
    """One random damage: flipped bytes, a cut, a spliced header field, or repeated chunks."""
    b = bytearray(data)
    kind = rng.randrange(4)
    if kind == 0 and b:
        for _ in range(rng.randint(1, 16)):
            b[rng.randrange(len(b))] = rng.randrange(256)
    elif kind == 1:
        b = b[:rng.randint(0, len(b))]
    elif kind == 2 and len(b) > 24:
        i = rng.randrange(8, min(len(b), 64) - 4)
        b[i:i + 4] = rng.choice([b"\xff\xff\xff\x7f", b"\x00\x00\x00\x00", b"\x00\x01\x00\x00"])
    else:
        i = rng.randrange(len(b) + 1)
        b = b[:i] + b[i:i + 64] * rng.randint(2, 8) + b[i:]
    return bytes(b)


def test_fuzzed_files_get_the_apps_own_message(tmp_path, garment):
    """Seeded, bounded: every mutated file decodes to a valid look or raises InvalidImageError."""
    corpus = write_corpus(tmp_path / "corpus", garment)
    seeds = [p for p in corpus.values() if p.stat().st_size and "bomb" not in p.name]
    rng, roots = random.Random(0), [tmp_path.resolve()]
    outcomes = {"look": 0, "refused": 0}
    for i in range(300):
        source = rng.choice(seeds)
        path = tmp_path / f"fuzz-{i}{source.suffix}"
        path.write_bytes(_mutations(source.read_bytes(), rng))
        try:
            look = uploads.decode({"path": str(path)}, roots)[0]
        except InvalidImageError as e:
            assert str(e) and "\n" not in str(e) and str(tmp_path) not in str(e)
            outcomes["refused"] += 1
        else:
            assert look.shape == (28, 28) and np.isfinite(look).all() and 0 <= look.min() <= look.max() <= 1
            outcomes["look"] += 1
        path.unlink()
    assert outcomes["look"] > 0 and outcomes["refused"] > 0, outcomes     # both paths were exercised


# ---------------------------------------------------------------------------------------------
# Hostile weights
# ---------------------------------------------------------------------------------------------

def _weights_copy(tmp_path: Path, config_changes: dict | None = None, state_change=None) -> Path:
    folder = tmp_path / "w"
    folder.mkdir()
    config = json.loads((WEIGHTS / "config.json").read_text()) | (config_changes or {})
    (folder / "config.json").write_text(json.dumps(config))
    if state_change is None:
        (folder / "model.safetensors").write_bytes((WEIGHTS / "model.safetensors").read_bytes())
    else:
        from safetensors.torch import load_file, save_file
        state = load_file(str(WEIGHTS / "model.safetensors"))
        state_change(state)
        save_file(state, str(folder / "model.safetensors"))
    return folder


@pytest.mark.parametrize("changes, message", [
    ({"widths": [-1, -1, -1]}, "widths must be 3 integers"),
    ({"widths": [10**6] * 3}, "widths must be 3 integers"),
    ({"widths": [1, 1, 600]}, "shape"),
    ({"num_classes": 2 * 10**6, "label_names": ["x"] * 3}, "num_classes"),
    ({"temperature": 0}, "temperature"),
    ({"std": 0}, "std"),
    ({"mean": float("nan")}, "mean"),
    ({"label_names": ["x" * 1000] * 10}, "label names"),
])
def test_hostile_configs_are_refused_before_building(tmp_path, changes, message):
    folder = _weights_copy(tmp_path, changes)
    with pytest.raises(WeightsError, match=message):
        load_model(folder)


def test_non_finite_weights_are_refused(tmp_path):
    folder = _weights_copy(tmp_path, state_change=lambda s: s["head.3.weight"].fill_(float("nan")))
    with pytest.raises(WeightsError, match="non-finite"):
        load_model(folder)


@pytest.mark.skipif(not Path("/dev/zero").exists(), reason="needs /dev/zero")
def test_config_that_is_not_a_regular_file_or_too_large_is_refused(tmp_path):
    folder = _weights_copy(tmp_path)
    (folder / "config.json").unlink()
    (folder / "config.json").symlink_to("/dev/zero")
    with pytest.raises(WeightsError, match="not a regular file"):
        load_model(folder)
    (folder / "config.json").unlink()
    (folder / "config.json").write_text(json.dumps({"widths": [16, 64, 192], "pad": "x" * 100_000}))
    with pytest.raises(WeightsError, match="bytes"):
        load_model(folder)


def test_the_app_falls_back_on_a_hostile_config(tmp_path):
    folder = _weights_copy(tmp_path, {"widths": [-1, -1, -1]})
    loaded = load_weights(str(folder))
    assert loaded.fallback and "widths" in loaded.source
    x = torch.randn(1, 1, 28, 28)
    assert torch.equal(loaded.model(x), load_model(WEIGHTS)(x))


def test_eval_only_with_nan_weights_exits_non_zero_in_one_line(tmp_path):
    folder = _weights_copy(tmp_path, state_change=lambda s: s["stage1.0.0.weight"].fill_(float("nan")))
    proc = subprocess.run([sys.executable, "train.py", "--eval-only", "--model", str(folder), "--dataset", str(SLICE),
                           "--out", str(tmp_path / "out")], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "test_accuracy" not in proc.stdout
    assert proc.stderr.strip().count("\n") == 0 and "non-finite" in proc.stderr


def test_sigterm_removes_the_apps_temporary_folder(tmp_path):
    temp = tmp_path / "tmp"
    temp.mkdir()
    stale = temp / "fashion-dashboard" / "999999999"     # a folder left by a process that died
    stale.mkdir(parents=True)
    server = start_app(tmp_path, {"TMPDIR": str(temp)})
    own = temp / "fashion-dashboard" / str(server.process.pid)
    try:
        assert own.is_dir() and any(own.rglob("*.png")), "the examples live in the app's folder"
        assert not stale.exists(), "a dead process's folder is removed at start"
    finally:
        stop_app(server)                                  # terminate(): SIGTERM
    assert server.process.returncode is not None and not own.exists()
    assert os.listdir(temp / "fashion-dashboard") == []


def test_the_folder_janitor_removes_the_oldest_files_first_and_leaves_links(tmp_path):
    """dashboard/uploads.FolderJanitor: over its byte budget, the oldest files go first; a link is
    neither counted nor followed."""
    import os

    from dashboard.uploads import FolderJanitor
    folder, outside = tmp_path / "outputs", tmp_path / "outside.bin"
    outside.write_bytes(b"x" * 5000)
    files = []
    for i in range(6):                                         # 6 files of 1000 bytes, oldest first
        f = folder / f"{i:02d}" / "upload.png"
        f.parent.mkdir(parents=True)
        f.write_bytes(b"x" * 1000)
        os.utime(f, (1000 + i, 1000 + i))
        files.append(f)
    (folder / "link.bin").symlink_to(outside)
    (folder / "dirlink").symlink_to(tmp_path, target_is_directory=True)
    janitor = FolderJanitor(folder, max_bytes=3500)
    assert janitor.sweep() == 3                                # 6000 counted -> 3000
    assert [f.exists() for f in files] == [False, False, False, True, True, True]
    assert outside.exists() and (folder / "link.bin").is_symlink()
    assert janitor.sweep() == 0
