"""The inference API (dashboard/api.py) on the real app server: plain HTTP, real images.

Each answer must equal what gradio_client's /analyse gives for the same file; every refusal is a
4xx with a one-line JSON message, and the server keeps serving.

    pytest tests/test_api.py -q
"""
from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from gradio_client import handle_file
from PIL import Image

from dashboard.api import MAX_BATCH, MAX_IMAGE_BYTES
from helpers import CLASSIFY_KEYS, NEIGHBOUR_KEYS, REPO

SLICE = REPO / "tests" / "data" / "fashion_mnist"
PHOTOS = REPO / "examples" / "photos"


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> list[Path]:
    """Three test-slice images as PNG files, and one real phone photo (the photo path)."""
    from training.data import load_images
    folder = tmp_path_factory.mktemp("api")
    raw = load_images(str(SLICE), "test")[2]
    paths = []
    for i in (0, 1, 2):
        paths.append(folder / f"test{i}.png")
        Image.fromarray(raw[i]).save(paths[-1])
    return paths + sorted(PHOTOS.glob("*.jpg"))[:1]


@pytest.fixture(scope="module")
def http(app_server):
    with httpx.Client(base_url=app_server.url.rstrip("/") + "/api/v1", timeout=120) as c:
        yield c


def analyse(client, path: Path) -> dict:
    return client.predict(handle_file(str(path)), api_name="/analyse")


def same(api_answer: dict, gradio_answer: dict) -> None:
    """Equal answers; probabilities and scores to float rounding (JSON through two encoders).
    /analyse also gives the nearest training images, which the HTTP API leaves out."""
    assert set(api_answer) == CLASSIFY_KEYS and set(gradio_answer) == CLASSIFY_KEYS | NEIGHBOUR_KEYS
    for k in CLASSIFY_KEYS:
        v = gradio_answer[k]
        if k == "probabilities":
            assert v.keys() == api_answer[k].keys()
            assert all(abs(v[c] - api_answer[k][c]) < 1e-6 for c in v), (v, api_answer[k])
        elif isinstance(v, float):
            assert abs(v - api_answer[k]) < 1e-6 * max(1.0, abs(v)), (k, v, api_answer[k])
        else:
            assert api_answer[k] == v, (k, api_answer[k], v)


def test_classify_answers_as_analyse_does_for_a_multipart_upload_and_for_raw_bytes(http, client, files):
    for path in files:
        expected = analyse(client, path)
        multipart = http.post("/classify", files={"image": (path.name, path.read_bytes())})
        raw = http.post("/classify", content=path.read_bytes(), headers={"Content-Type": "application/octet-stream"})
        assert multipart.status_code == raw.status_code == 200, (multipart.text, raw.text)
        same(multipart.json(), expected)
        same(raw.json(), expected)


def test_a_batch_answers_each_image_in_order(http, client, files):
    got = http.post("/classify_batch", files=[("images", (p.name, p.read_bytes())) for p in files])
    assert got.status_code == 200, got.text
    results = got.json()["results"]
    assert len(results) == len(files)
    for path, answer in zip(files, results):
        same(answer, analyse(client, path))


def refused(response: httpx.Response, status: int) -> str:
    assert response.status_code == status, response.text
    message = response.json()["error"]
    assert isinstance(message, str) and message and "\n" not in message
    return message


def test_bad_bytes_are_refused_in_one_line_and_the_server_keeps_serving(http, files):
    assert "not an image" in refused(http.post("/classify", content=b"not an image at all"), 422)
    assert "empty" in refused(http.post("/classify", content=b""), 422)
    truncated = files[0].read_bytes()[:60]
    assert "damaged" in refused(http.post("/classify", content=truncated), 422)
    message = refused(http.post("/classify_batch", files=[("images", ("ok.png", files[0].read_bytes())),
                                                           ("images", ("junk.png", b"junk"))]), 422)
    assert message.startswith("Image 2 ('junk.png')")
    assert "field" in refused(http.post("/classify", files={"picture": ("x.png", files[0].read_bytes())}), 400)
    assert http.post("/classify", content=files[0].read_bytes()).status_code == 200


def test_a_body_over_the_limit_is_refused(http, files):
    big = files[0].read_bytes() + b"\0" * MAX_IMAGE_BYTES
    assert "limit" in refused(http.post("/classify", content=big), 413)
    assert "limit" in refused(http.post("/classify", files={"image": ("big.png", big)}), 413)
    assert http.post("/classify", content=files[0].read_bytes()).status_code == 200


def test_more_images_than_a_batch_takes_are_refused(http, files):
    data = files[0].read_bytes()
    assert str(MAX_BATCH) in refused(http.post("/classify_batch",
                                               files=[("images", (f"{i}.png", data)) for i in range(MAX_BATCH + 1)]), 400)
    full = http.post("/classify_batch", files=[("images", (f"{i}.png", data)) for i in range(MAX_BATCH)])
    assert full.status_code == 200 and len(full.json()["results"]) == MAX_BATCH


def test_the_openapi_schema_is_served(http):
    schema = http.get("/openapi.json").json()
    assert set(schema["paths"]) == {"/api/v1/classify", "/api/v1/classify_batch"}
    body = schema["paths"]["/api/v1/classify"]["post"]["requestBody"]["content"]
    assert {"multipart/form-data", "application/octet-stream"} <= set(body)
