"""The dashboard: classify a garment image and see *why*, with several attribution methods side by side.

Layout, event wiring and launch. The model and its answers live in dashboard/service.py, file
handling in dashboard/uploads.py, the Mistakes/Trust/Model content in dashboard/views.py, the
attribution methods in explain/ (its `METHODS` registry fills the method picker).

    python app.py                                    # http://127.0.0.1:7860, weights in weights/
    python app.py --model <user>/fashion-mnist-cnn   # weights from the Hub (falls back to weights/)
    MODEL_ID=outputs/smoke python app.py --port 7861 # MODEL_ID is the same as --model

`--model` is read only when this file is run as a script (importing `app` from tests or
`gradio app.py` ignores foreign arguments); MODEL_ID works in every case. When the requested
weights cannot be used, the committed weights/ are served and the page says why.

API (gradio_client), every image is an uploaded file (`handle_file(path)`):
    /classify(image) -> {"label": top class, "confidences": [top 3 {label, confidence}]}
    /classify_sketch(sketch) -> the same, for a Sketchpad value {"composite": file}
    /analyse(image) -> {"label", "probabilities": {class: p}, "kind": "fashion-mnist-like" | "garment-photo" |
        "not-a-garment", "in_distribution": kind is not "not-a-garment", "ood_score", "ood_threshold" (of the
        detector that judged: the photo one for a photo), "confidence": how often such answers were right, or the
        verdict, "neighbours": the 6 nearest training images [{label, distance, train_index, image}],
        "class_distances": {class: distance to its nearest training image}}
    /explain(image, methods: list[str], target: "predicted class" | class name)
        -> (model view image, label value, gallery [{image, caption}], scores dict)
    /explain_json(image, methods: list[str], pair: [class A, class B] | None) -> {"maps", "agreement",
        "consensus", "contrast" (evidence for A over B, default the top two), "road", "neighbours",
        "localisation" (segmented photos)}: dashboard/insight.py's Insight.explain
    /model_info() -> {"source", "folder", "fallback", "parameters", "test_accuracy", ...}
A bad input raises an error whose one-line message says what is wrong; the app keeps serving.

The same server answers a plain HTTP API (dashboard/api.py; docs/usage.md has curl examples):
    POST /api/v1/classify, /api/v1/classify_batch -> /analyse's answer without the nearest training
    images; GET /api/v1/openapi.json
The named endpoints are also MCP tools at /gradio_api/mcp/ (docs/usage.md).
"""
from __future__ import annotations

import argparse
import atexit
import os
import signal
import sys
from pathlib import Path

import dashboard.process  # first: settings gradio and torch read at import
from dashboard import allocator
import gradio as gr
import numpy as np
from PIL import Image

import explain
from modelrepo import hub
from dashboard import api, panels, uploads
from dashboard.uploads import Given
from dashboard.image_files import as_file, gallery_files, output_folder
from dashboard.insight import Insight
from dashboard.insight_panel import insight_section, insight_values
from dashboard.mistakes_panel import mistakes_tab, wire_cell_filter
from dashboard.result_panel import EMPTY_RESULT, MAP_COLUMNS, MAP_ROW_PX, method_controls, result_panel, score_table
from dashboard.service import (DEFAULT_METHODS, PREDICTED, VIEW_SIZE, RequestError, Service,
                               load_weights, view_image)
from dashboard.views import Views, outline_image
from imaging.preprocess import InvalidImageError, Seen

MAX_OUTPUT_FOLDER_BYTES = 512 * 2**20  # the app's output images (image_files.py) are trimmed to this, oldest first
CACHE_SWEEP = (60, 600)                # Gradio deletes its files older than 600 s, every 60 s
# The queue. Predictions (decode, one row of a shared forward pass) are cheap and batched, so many
# run at once; explanations (seconds of CPU under a crowd) get workers of their own, so a classify
# never waits behind them. Four rather than two: an explanation spends part of its time waiting
# for the lock on the network as trained, and the others' decoding, curves and rendering fill
# that time (bench/results/serving_ab/). The queue is long enough for a crowd of a few hundred
# visitors: each waiting visitor sees their place and the expected wait instead of a refusal.
PREDICT_WORKERS, EXPLAIN_WORKERS = 16, 4
QUEUE_SIZE = 512
BLANK_PAGE = np.full((280, 280, 4), 255, np.uint8)   # the Draw tab's canvas: white, opaque
BLANK_SKETCH = {"background": BLANK_PAGE, "layers": [], "composite": BLANK_PAGE}
# Gradio's brush size is a radius: 7 draws 14 px strokes on the 280 px canvas, the thick pen that
# imaging/strokes.py was tuned on (tests/drawings.py); at 14, strokes 28 px wide closed the gap
# between a pair of trousers' legs (tests/test_draw_browser.py).
BRUSH_RADIUS = 7
PHOTO_EXAMPLES = Path(__file__).resolve().parent / "examples" / "photos"   # small CC0 phone photos


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--model", default=os.environ.get("MODEL_ID") or None,
                   help="Hub repo id or local folder (env MODEL_ID); none: the committed weights/")
    p.add_argument("--host", default=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"),
                   help="interface to listen on (env GRADIO_SERVER_NAME)")
    p.add_argument("--port", type=int, default=int(os.environ.get("GRADIO_SERVER_PORT", 7860)),
                   help="port (env GRADIO_SERVER_PORT)")
    p.add_argument("--hub-timeout", type=float, default=float(os.environ.get("HUB_TIMEOUT", hub.DEFAULT_TIMEOUT_S)),
                   help="seconds to wait for the Hub before serving the committed weights (env HUB_TIMEOUT)")
    return p.parse_args(argv)


SETTINGS = parse_args(sys.argv[1:] if __name__ == "__main__" else [])
SERVICE = Service(load_weights(SETTINGS.model, hub_timeout=SETTINGS.hub_timeout))
VIEWS = Views(SERVICE)
INSIGHT = Insight.of(SERVICE)
LABELS = SERVICE.labels
APP_FOLDER = uploads.AppFolder()
atexit.register(APP_FOLDER.cleanup)
TRIMMER = allocator.IdleTrimmer(idle_s=2.0)   # gives a burst's freed memory back once requests stop
SERVICE.on_use = TRIMMER.touch


# The only folders a request may name a file in: Gradio's uploads and the app's own files.
# Resolved once: both are fixed for the process's life.
UPLOAD_ROOTS = [uploads.gradio_upload_folder(), APP_FOLDER.path.resolve()]


def decoded(image, sketch: bool = False) -> Seen:
    """Any accepted image -> what preprocessing made of it; gr.Error with a one-line message otherwise."""
    try:
        return uploads.decode(image, UPLOAD_ROOTS, sketch)
    except InvalidImageError as e:
        raise gr.Error(str(e)) from None


async def decoded_async(image, sketch: bool = False) -> Seen:
    """`decoded` for a coroutine (uploads.decode_async: a photo is decoded in a worker thread)."""
    try:
        return await uploads.decode_async(image, UPLOAD_ROOTS, sketch)
    except InvalidImageError as e:
        raise gr.Error(str(e)) from None


# ---------------------------------------------------------------------------------------------
# API functions: plain inputs, errors raised as gr.Error. They are coroutines: Gradio runs them on
# its event loop, which awaits the shared forward pass instead of parking a worker thread on it
# (dashboard/batcher.py).
# ---------------------------------------------------------------------------------------------

async def classify(image: dict) -> dict:
    """An uploaded image file -> the top class and the top-3 classes with their probabilities."""
    seen = await decoded_async(image)
    return SERVICE.label_value(await SERVICE.predict_async(seen.look, seen.photo, seen.material))


async def classify_sketch(sketch: dict) -> dict:
    """A Sketchpad value ({"composite": file}) -> classify's output; empty: "Draw something first"."""
    seen = await decoded_async(sketch, sketch=True)
    return SERVICE.label_value(await SERVICE.predict_async(seen.look, seen.photo, seen.material))


async def analyse(image: dict) -> dict:
    """An uploaded image file -> label, probabilities, whether it looks like the training data
    (in_distribution, ood_score: higher is further), the confidence in words, and the nearest
    training images with the distance to each class (from the prediction's own forward pass)."""
    seen = await decoded_async(image)
    a = await SERVICE.assess_async(seen.look, seen.photo, seen.drawing, seen.material)
    return {**SERVICE.analysis(a), **INSIGHT.neighbours(seen.look, seen.photo, features=a.features)}


def explain_json(image: dict, methods: list[str] = list(DEFAULT_METHODS), pair: list[str] | None = None) -> dict:  # noqa: B006  (read only)
    """An uploaded image file -> the maps of `methods` for the predicted class, their agreement and
    consensus, the contrast "evidence for A over B" (`pair`: two class names, default the top two),
    ROAD, the nearest training images, and for a segmented photo each map's share inside the garment."""
    seen = decoded(image)
    try:
        return INSIGHT.explain(seen.look, methods, photo=seen.photo, pair=pair,
                               mask=seen.mask if seen.photo else None, material=seen.material)
    except RequestError as e:
        raise gr.Error(str(e)) from None


def model_info() -> dict:
    """Where the weights came from, the config, the test accuracy and the explanation methods."""
    return SERVICE.info()


def analyse_look(given: tuple, methods, target=PREDICTED, progress=None) -> tuple:
    """An input as the page keeps it (uploads.Given) -> (model view, label confidences, gallery
    [(overlay, caption)], scores summary, the Assessment: the verdict the page shows, the maps)."""
    g = Given(*given)
    look = g.look
    try:
        a, t, maps, scores = SERVICE.explain(look, methods, target, progress, photo=g.photo, drawing=g.drawing,
                                             material=g.material)
    except RequestError as e:
        raise gr.Error(str(e)) from None
    scale = explain.common_scale(list(maps.values()))
    gallery = [(as_file(explain.render_overlay(look, maps[n], scale, explain.METHODS[n].signed, size=VIEW_SIZE)),
                f"{n} · deletion AUC {s['deletion_auc']:.2f} · insertion AUC {s['insertion_auc']:.2f}")
               for n, s in scores.items()]
    summary = {"predicted": LABELS[int(a.probs.argmax())], "target": LABELS[t],
               "target_probability": float(a.probs[t]), "scale": float(scale), "methods": scores}
    return as_file(view_image(look)), SERVICE.confidences(a.probs), gallery, summary, a, maps


def explain_image(image, methods=DEFAULT_METHODS, target=PREDICTED, progress=gr.Progress()) -> tuple:  # noqa: B008  (Gradio injects the tracker)
    """Any accepted image -> analyse_look's outputs but the Assessment (the /explain endpoint)."""
    return analyse_look(Given.of(decoded(image)), methods, target, progress)[:4]


# ---------------------------------------------------------------------------------------------
# UI handlers: a bad image never raises; its message goes to the status line and the result
# panel is cleared, so no stale prediction is left beside it.
# ---------------------------------------------------------------------------------------------


def ui_decode(image, sketch: bool = False):
    """A UI image -> (uploads.Given or None, the image with the outline of what was kept, status markdown)."""
    if image is None or (isinstance(image, dict) and not image.get("path")
                         and not any(image.get(k) for k in ("composite", "layers", "background"))):
        if sketch:
            gr.Warning("Draw something first.")
            return None, None, "**⚠ Draw something first.**"
        return None, None, ""                                        # cleared: nothing to say
    try:
        seen = decoded(image, sketch=sketch)
    except gr.Error as e:
        gr.Warning(e.message)
        return None, None, f"**⚠ {e.message}**"
    kept = "the outlined region is what the model read; " if seen.mask is not None else ""
    if seen.photo and SERVICE.photo_model is not SERVICE.model:
        kept += "a photo, so the model read it with its photo layers; "
    return (Given.of(seen), as_file(outline_image(seen.work, seen.mask)),
            f"Classified: {kept}the maps explain the class under *Explain class*.")


def ui_analyse(given, methods, target, progress=gr.Progress()):  # noqa: B008  (Gradio injects it)
    if given is None:
        return EMPTY_RESULT
    try:
        view, label, gallery, summary, a, maps = analyse_look(given, methods, target, progress)
    except gr.Error as e:
        gr.Warning(e.message)
        return EMPTY_RESULT
    verdict = a.confidence if a.in_distribution is not False else f"**⚠ {a.confidence}**"
    rows = -(-len(gallery) // MAP_COLUMNS)
    # The gallery's height follows its rows, so one row of maps leaves no empty box below.
    # The maps go on to the insight section only when they are the predicted class's, as its own are.
    kept_maps = maps if summary["target"] == summary["predicted"] else None
    return (view, verdict, label, gr.update(value=gallery, height=rows * MAP_ROW_PX + 50), score_table(summary),
            summary, kept_maps)


def ui_insight(given, methods, maps, target=PREDICTED):
    """The insight section under the Explain view's result panel; a bad request clears it with a warning.
    A class under *Explain class* other than the predicted one is the contrast's B ("why not Shirt?")."""
    try:
        values = insight_values(INSIGHT, given, methods, maps, versus=None if target == PREDICTED else target)
    except gr.Error as e:
        gr.Warning(e.message)
        values = insight_values(INSIGHT, None, methods)
    values[0], values[4] = gallery_files(values[0]), as_file(values[4])     # the neighbours, the consensus
    return values


def ui_mistakes(true_class: str, pred_class: str):
    """The Mistakes view's gallery (as files), the rows it shows and its count line."""
    gallery, shown, text = VIEWS.filter_mistakes(true_class, pred_class)
    return gallery_files(gallery), shown, text


def select_mistake(shown: list[int], evt: gr.SelectData):
    look, text = VIEWS.mistake_detail(shown, evt.index)
    return Given(look, False), text               # a test image: not a photo


def write_examples(samples: dict | None) -> tuple[list[list[str]], list[str]]:
    """One test image per class as PNG files in the app's folder (gr.Examples needs files)."""
    if samples is None:
        return [], []
    folder = APP_FOLDER.path / "examples"
    folder.mkdir(exist_ok=True)
    paths, labels = [], []
    for c, name in enumerate(LABELS):
        hits = np.flatnonzero(samples["label"] == c)
        if len(hits):
            path = folder / f"{c}-{name.replace('/', '-').replace(' ', '-').lower()}.png"
            Image.fromarray(samples["images"][hits[0]]).save(path)
            paths.append([str(path)])
            labels.append(name)
    return paths, labels


# ---------------------------------------------------------------------------------------------
# Layout
# ---------------------------------------------------------------------------------------------

INTRO = """# Fashion-MNIST: what does the classifier look at?
Upload a photo of a garment (any size, white or black background), draw one, or pick a test
example. The image is reduced to the 28x28 grayscale the network was trained on; the maps show,
for the chosen class, which of those pixels each attribution method credits. Red: evidence for
the class, blue: against it (signed methods only)."""

CSS = """
#status {min-height: 1.5em}
.gallery-item .caption-label {font-size: 0.8em}
#explain-neighbours .caption-label {font-size: 0.75em; max-width: none; overflow: visible; text-overflow: clip}
"""


def explain_tab():
    """Inputs (upload, draw, examples, method choice) and the result panel."""
    example_files, example_labels = write_examples(SERVICE.artefacts.samples)
    with gr.Row():
        with gr.Column(scale=2, min_width=300):
            with gr.Tabs():
                with gr.Tab("Upload", id="upload"):
                    # type="filepath" + preprocess=False below: dashboard/uploads.py opens the
                    # upload itself, so a damaged or hostile file gets a clear message.
                    image = gr.Image(type="filepath", image_mode=None, label="Garment image",
                                     sources=["upload", "clipboard"], height=260, elem_id="upload")
                with gr.Tab("Draw", id="draw"):
                    gr.Markdown("Draw the garment's outline or fill it with the brush, then *Classify drawing*.")
                    # A white page as the value: Gradio's editor opens with no tool chosen ("select
                    # the draw tool to start") unless it has a background, and then it selects the
                    # brush, so a first stroke draws. Clearing it removes the page: it is put back.
                    sketch = gr.Sketchpad(label="Draw a garment", type="numpy", image_mode="RGBA",
                                          value=BLANK_SKETCH,
                                          canvas_size=BLANK_PAGE.shape[1::-1], height=300, elem_id="sketch",
                                          brush=gr.Brush(default_size=BRUSH_RADIUS, colors=["#000000"], color_mode="fixed"))
                    draw_btn = gr.Button("Classify drawing", variant="primary")
            status = gr.Markdown("", elem_id="status")
            if example_files:
                gr.Examples(example_files, inputs=[image], example_labels=example_labels,
                            label="Test-set examples (one per class)", examples_per_page=10)
            photos = sorted(PHOTO_EXAMPLES.glob("*.jpg"))
            if photos:
                gr.Examples([[str(p)] for p in photos], inputs=[image], label="Real phone photos",
                            example_labels=[p.stem.split("-", 1)[-1] for p in photos], examples_per_page=10)
            methods, target = method_controls(LABELS)
            with gr.Accordion("About the methods", open=False):
                gr.Markdown("\n".join(f"- **{n}** ({'signed' if m.signed else 'magnitude'}): "
                                      f"{m.description} [paper]({m.reference})" for n, m in explain.METHODS.items()))
        with gr.Column(scale=3):
            kept = gr.Image(label="Your image: the outline is what was kept", type="numpy", format="png",
                            interactive=False, height=VIEW_SIZE, buttons=[], elem_id="explain-kept", render=False)
            outputs = result_panel("explain", kept)
            insight = insight_section("explain")
    return image, sketch, draw_btn, status, methods, target, kept, outputs, insight


def build_demo() -> gr.Blocks:
    loaded = SERVICE.loaded
    with gr.Blocks(title="Fashion-MNIST explainability dashboard", delete_cache=CACHE_SWEEP) as demo:
        gr.Markdown(INTRO)
        gr.Markdown(f"<small>Serving {loaded.source}.</small>" if not loaded.fallback
                    else f"**⚠ Serving {loaded.source}.**", elem_id="weights-source")
        look_state, mistake_look, shown_rows = gr.State(None), gr.State(None), gr.State([])
        with gr.Tabs():
            with gr.Tab("Explain", id="explain"):
                image, sketch, draw_btn, status, methods, target, kept, outputs, insight = explain_tab()
            with gr.Tab("Mistakes", id="mistakes"):
                mistakes = mistakes_tab(VIEWS, LABELS)
            with gr.Tab("Trust", id="trust"):
                panels.trust_tab(VIEWS)
            with gr.Tab("Model", id="model"):
                panels.model_tab(SERVICE, VIEWS)

        private = dict(api_visibility="private")
        predicting = dict(concurrency_id="predict", concurrency_limit=PREDICT_WORKERS)
        explaining = dict(concurrency_id="explain", concurrency_limit=EXPLAIN_WORKERS)
        # Explain view: any new image (upload, example click, clear) -> decode -> analyse -> insight.
        analysed = ([look_state, methods, target], outputs)
        insight_step = (ui_insight, [look_state, methods, outputs[-1], target], insight)
        image.change(lambda v: ui_decode(v), image, [look_state, kept, status], preprocess=False,
                     **private, **predicting).then(ui_analyse, *analysed, **private, **explaining) \
            .then(*insight_step, **private, **explaining)
        draw_btn.click(lambda v: ui_decode(v, sketch=True), sketch, [look_state, kept, status], preprocess=False,
                       **private, **predicting).then(ui_analyse, *analysed, **private, **explaining) \
            .then(*insight_step, **private, **explaining)
        sketch.clear(lambda: BLANK_SKETCH, None, sketch, queue=False, **private)
        for control in (methods, target):
            control.input(ui_analyse, *analysed, **private, **explaining).then(*insight_step, **private, **explaining)
        # Mistakes view.
        m = mistakes
        filters = ([m.true_class, m.predicted], [m.gallery, shown_rows, m.text])
        for control in (m.true_class, m.predicted):
            control.change(ui_mistakes, *filters, **private)
        demo.load(ui_mistakes, *filters, **private)
        wire_cell_filter(m, VIEWS, **private)
        m.gallery.select(select_mistake, shown_rows, [mistake_look, m.note], **private) \
            .then(ui_analyse, [mistake_look, m.methods, m.target], m.outputs, **private, **explaining)
        for control in (m.methods, m.target):
            control.input(ui_analyse, [mistake_look, m.methods, m.target], m.outputs, **private, **explaining)

        # Named API endpoints. The JSON ones are plain functions (gr.api); /explain returns images,
        # which Gradio caches and serves only for component outputs, so it keeps a trigger of its own.
        gr.api(classify, api_name="classify", **predicting)
        gr.api(classify_sketch, api_name="classify_sketch", **predicting)
        gr.api(analyse, api_name="analyse", **predicting)
        gr.api(explain_json, api_name="explain_json", **explaining)
        gr.api(model_info, api_name="model_info", **predicting)
        view, _, label, gallery, _, scores, _ = outputs
        api_explain = gr.Button(visible=False)
        api_explain.click(explain_image, [image, methods, target], [view, label, gallery, scores],
                          api_name="explain", preprocess=False, **explaining)
    demo.queue(max_size=QUEUE_SIZE)
    return demo


demo = build_demo()


def stop_on_sigterm(signum, frame):
    # Gradio closes its server on KeyboardInterrupt, and then atexit removes the app's files;
    # SIGTERM (docker stop, a Space restart, a test's terminate) would otherwise skip both.
    raise KeyboardInterrupt


def launch(**kwargs):
    """Serve the page and the inference API (dashboard/api.py) on one server; `kwargs` go to
    `demo.launch` (a test passes prevent_thread_lock=True). What only a serving process needs
    happens here, not at import: the output folder's janitor, the frozen heap."""
    uploads.FolderJanitor(output_folder(), MAX_OUTPUT_FOLDER_BYTES).start()
    dashboard.process.settle_heap()
    return demo.launch(**{"server_name": SETTINGS.host, "server_port": SETTINGS.port,
                          "max_file_size": api.MAX_IMAGE_BYTES, "show_error": False, "css": CSS,
                          "mcp_server": True,       # the named endpoints as MCP tools, at /gradio_api/mcp/
                          "app_kwargs": {"routes": api.routes(SERVICE)},
                          "theme": gr.themes.Soft(font=["ui-sans-serif", "system-ui", "sans-serif"],
                                                  font_mono=["ui-monospace", "monospace"]), **kwargs})


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, stop_on_sigterm)
    launch()
