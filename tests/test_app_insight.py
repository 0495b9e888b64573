"""The insight endpoints of the real app, through gradio_client: /analyse's nearest training images
and per-class distances, /explain_json's contrast (swapping the pair negates it), agreement,
consensus, ROAD and, for a segmented photo, localisation.

    pytest tests/test_app_insight.py -q
"""
from __future__ import annotations

import base64
import io

import numpy as np
import pytest
import torch
from PIL import Image

import app_inputs
from gradio_client import handle_file
from helpers import REPO

image_files = app_inputs.image_files
test_images = app_inputs.test_images
METHODS = ["Integrated Gradients", "Occlusion", "Saliency"]


@pytest.fixture(scope="module")
def served(client):
    """The served weights and their index, loaded here too, to check the app's neighbours against."""
    from explain.neighbours import NeighbourIndex
    from model import load_model
    folder = client.predict(api_name="/model_info")["folder"]
    model = load_model(folder)
    return model, NeighbourIndex.load(folder, model)


def test_analyse_names_the_nearest_training_images_of_the_served_features(client, image_files, test_images, served):
    from explain.neighbours import embed
    from imaging.preprocess import look_and_mask, normalize
    model, index = served
    nearest_right = 0
    for path, label in zip(image_files, test_images[1]):
        out = client.predict(handle_file(str(path)), api_name="/analyse")
        found = out["neighbours"]
        assert len(found) == 6 and [n["distance"] for n in found] == sorted(n["distance"] for n in found)
        # The neighbours come from the prediction's own forward pass; here they are searched afresh.
        look = look_and_mask(np.asarray(Image.open(path)))[0]
        with torch.no_grad():
            expected = index.search(embed(model, normalize(look, model.config.mean, model.config.std)[None, None]), 6)
        assert [n["train_index"] for n in found] == expected.source_index[0].tolist()
        # The nearest class distance is the nearest neighbour's, and each neighbour's picture is its look.
        best = min(out["class_distances"], key=out["class_distances"].get)
        assert best == found[0]["label"] and out["class_distances"][best] == pytest.approx(found[0]["distance"], abs=1e-3)
        shown = np.asarray(Image.open(io.BytesIO(base64.b64decode(found[0]["image"].split(",", 1)[1]))))
        assert shown.shape == (28, 28) and np.array_equal(shown, index.looks[expected.positions[0, 0]].numpy())
        nearest_right += found[0]["label"] == model.label_names[int(label)]
    assert nearest_right >= 0.85 * len(image_files), f"nearest label right for {nearest_right} of {len(image_files)}"


def test_explain_json_contrast_is_negated_when_the_pair_is_swapped(client, image_files):
    shirt = str(image_files[13])                   # two of each class: 12 and 13 are Shirts
    ab = client.predict(handle_file(shirt), METHODS, ["Shirt", "T-shirt/top"], api_name="/explain_json")
    ba = client.predict(handle_file(shirt), METHODS, ["T-shirt/top", "Shirt"], api_name="/explain_json")
    assert ab["contrast"]["title"] == "evidence for Shirt over T-shirt/top"
    assert set(ab["contrast"]["maps"]) == {"Integrated Gradients", "Occlusion"}   # the signed methods that support it
    for m, a in ab["contrast"]["maps"].items():
        a, b = np.asarray(a), np.asarray(ba["contrast"]["maps"][m])
        assert a.shape == (28, 28) and np.abs(a).sum() > 0.5
        np.testing.assert_allclose(a, -b, atol=1e-4)
        assert ab["contrast"]["logit_difference_sums"][m] == pytest.approx(-ba["contrast"]["logit_difference_sums"][m], rel=1e-3)


def test_explain_json_gives_agreement_consensus_road_and_neighbours(client, image_files):
    out = client.predict(handle_file(str(image_files[2])), METHODS, None, api_name="/explain_json")
    pairs = out["agreement"]["pairs"]
    assert len(pairs) == 3 and all(-1 <= p["spearman"] <= 1 and 0 <= p["top10_overlap"] <= 1 for p in pairs)
    assert out["agreement"]["mean_spearman"] == pytest.approx(np.mean([p["spearman"] for p in pairs]))
    consensus = np.asarray(out["consensus"])
    assert consensus.shape == (28, 28) and 0 <= consensus.min() and consensus.max() <= 1
    assert set(out["road"]) == set(METHODS) and len(out["neighbours"]["neighbours"]) == 6
    assert out["contrast"]["a"] == out["label"] and "localisation" not in out     # not a photo


def test_explain_json_measures_localisation_on_a_segmented_photo(client):
    photo = sorted((REPO / "examples" / "photos").glob("*t-shirt.jpg"))[0]
    out = client.predict(handle_file(str(photo)), METHODS, None, api_name="/explain_json")
    loc = out["localisation"]
    assert set(loc) == set(METHODS)
    area = next(iter(loc.values()))["mask_area"]
    assert 0.05 < area < 0.95 and all(0 <= v["inside"] <= 1 for v in loc.values())


@pytest.mark.parametrize("pair, message", [(["Shirt", "Shirt"], "pair must be two different classes"),
                                           (["Shirt", "Cat"], "pair must be two different classes"),
                                           (["Shirt"], "pair must be two different classes")])
def test_explain_json_refuses_a_bad_pair(client, image_files, pair, message):
    with pytest.raises(Exception, match=message):
        client.predict(handle_file(str(image_files[0])), METHODS, pair, api_name="/explain_json")


def test_the_mcp_server_lists_the_endpoints_and_answers_a_tool_call(app_server, client, image_files):
    import ast
    import asyncio

    import httpx
    from mcp import ClientSession
    from mcp.client.streamable_http import streamablehttp_client

    async def call() -> tuple[list[str], str]:
        with open(image_files[4], "rb") as f:           # the tool reads a file uploaded to the app
            path = httpx.post(f"{app_server.url.rstrip('/')}/gradio_api/upload", files={"files": f}).json()[0]
        async with streamablehttp_client(f"{app_server.url.rstrip('/')}/gradio_api/mcp/") as (read, write, _):
            async with ClientSession(read, write) as session:
                await session.initialize()
                tools = [t.name for t in (await session.list_tools()).tools]
                result = await session.call_tool("analyse", {"image": {"path": path}})
                assert not result.isError, result.content
                return tools, result.content[0].text

    tools, text = asyncio.run(call())
    assert {"classify", "analyse", "explain_json", "model_info"} <= set(tools)
    answer = ast.literal_eval(text)                      # Gradio writes the dict as Python would print it
    direct = client.predict(handle_file(str(image_files[4])), api_name="/analyse")
    assert answer["label"] == direct["label"] and answer["probabilities"] == pytest.approx(direct["probabilities"])
    assert [n["train_index"] for n in answer["neighbours"]] == [n["train_index"] for n in direct["neighbours"]]
