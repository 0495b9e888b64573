"""The dashboard: classify a garment image and see *why*, with several attribution methods side by side.

UI wiring only: the network and its preprocessing live in model.py, the attribution methods in
explain/ (its `METHODS` registry fills the method picker). Four views:

- Explain: upload an image (any size or mode), draw one, or click a test example; see the 28x28
  the model actually saw, the top-3 classes, and one attribution map per chosen method for the
  predicted class or any class you pick, each with its deletion/insertion AUC for this image.
- Mistakes: misclassified test images from the evaluation artefacts, filterable by true and
  predicted class, with the confusion matrix and per-class accuracy; select one to explain it.
- Trust: the per-method faithfulness and sanity results over a test sample (evaluation/trust.json).
- Model: architecture, parameter count, test accuracy, calibration, training curves, weights source.

    python app.py                                    # http://127.0.0.1:7860, weights in weights/
    python app.py --model <user>/fashion-mnist-cnn   # weights from the Hub (falls back to weights/)
    MODEL_ID=outputs/smoke python app.py --port 7861 # MODEL_ID is the same as --model

The model loads once, at import. `--model` is read only when this file is run as a script (so
importing `app` from tests or `gradio app.py` ignores foreign command-line arguments); the
MODEL_ID environment variable works in every case. With no id, or when the id cannot be used
(Hub unreachable, corrupt file, config that does not match), the committed weights/ are served
and the Model view says which weights are in use and why.

API (gradio_client), every endpoint takes an uploaded image file (`handle_file(path)`):
    /classify(image) -> gr.Label value: {"label": top class, "confidences": [top 3 {label, confidence}]}
    /explain(image, methods: list[str], target: "predicted class" | class name)
        -> (model_view image, gr.Label value, gallery [{image, caption}], scores dict)
    /model_info() -> {"source", "folder", "fallback", "parameters", "test_accuracy", ...}
A bad input (not an image, truncated, too large, animated, empty) raises an error whose message
says what is wrong; the app keeps serving.
"""
from __future__ import annotations

import argparse
import atexit
import copy
import json
import os
import re
import shutil
import sys
import tempfile
import threading
import time
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

# Before gradio is imported: no usage analytics or version check, so start-up needs no network.
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import allocator  # noqa: E402

# Before any worker thread exists: few malloc arenas, so memory freed after a burst can go back
# to the OS (allocator.py has the measurements). An explicit MALLOC_ARENA_MAX wins.
if "MALLOC_ARENA_MAX" not in os.environ:
    allocator.cap_arenas(2)

import gradio as gr
import numpy as np
import pandas as pd
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

import explain
from explain.render import share
from model import (MAX_IMAGE_PIXELS, FashionCNN, InvalidImageError, WeightsError, count_parameters,
                   fashion_look, load_model, normalize, resolve_model_dir)

ROOT = Path(__file__).resolve().parent
COMMITTED_WEIGHTS = ROOT / "weights"
PREDICTED = "predicted class"          # the target choice that follows the prediction
MAX_FILE_SIZE = "10mb"                 # uploads above this are refused by the server itself
DEFAULT_METHODS = ("Saliency", "Integrated Gradients", "Grad-CAM", "Occlusion")
MISTAKES_SHOWN = 60                    # gallery size in the Mistakes view
VIEW_SIZE = 224                        # pixels a side of every displayed 28x28 image
MAP_COLUMNS, MAP_ROW_PX = 4, 200       # attribution gallery layout


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--model", default=os.environ.get("MODEL_ID") or None,
                   help="Hub repo id or local folder (env MODEL_ID); none: the committed weights/")
    p.add_argument("--host", default=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"),
                   help="interface to listen on (env GRADIO_SERVER_NAME)")
    p.add_argument("--port", type=int, default=int(os.environ.get("GRADIO_SERVER_PORT", 7860)),
                   help="port (env GRADIO_SERVER_PORT)")
    p.add_argument("--hub-timeout", type=float, default=float(os.environ.get("HUB_TIMEOUT", 20)),
                   help="seconds to wait for the Hub before serving the committed weights (env HUB_TIMEOUT)")
    return p.parse_args(argv)


# ---------------------------------------------------------------------------------------------
# Weights: the requested source, else the committed weights/, and a sentence saying which.
# ---------------------------------------------------------------------------------------------

@dataclass
class LoadedModel:
    model: FashionCNN
    folder: Path             # holds config.json, model.safetensors and (maybe) evaluation/
    source: str              # what the UI says about where the weights came from
    fallback: bool = False   # True when the requested weights could not be used


def _looks_like_path(source: str) -> bool:
    return Path(source).exists() or source.startswith((".", "/", "~")) or source.count("/") > 1


def load_weights(requested: str | None, fallback: Path = COMMITTED_WEIGHTS,
                 hub_timeout: float = 20.0) -> LoadedModel:
    """Load `requested` (local folder or Hub repo id); on any WeightsError, the committed weights.

    Args:
        requested: a folder or Hub repo id; None or "" means the committed weights.
        fallback: the folder served when `requested` is absent or unusable.
        hub_timeout: the longest wait for the Hub, in seconds.
    Raises:
        WeightsError: only when the fallback weights themselves cannot be loaded.
    """
    if requested:
        try:
            if _looks_like_path(requested):
                folder = Path(requested).expanduser()
                if not folder.is_dir():
                    raise WeightsError(f"{folder}: no such folder")
                where = f"local folder `{folder}`"
            else:
                folder = resolve_model_dir(requested, hub_timeout, ("training_history.json", "evaluation/*"))
                where = f"Hugging Face Hub repo `{requested}`"
            return LoadedModel(load_model(folder), folder, f"weights from the {where}")
        except WeightsError as e:
            model = load_model(fallback)
            print(f"[app] could not use {requested!r}: {e}; serving {fallback}", file=sys.stderr)
            return LoadedModel(model, fallback, f"the committed weights in `{_short(fallback)}`, because "
                                                f"`{requested}` could not be used: {e}", fallback=True)
    return LoadedModel(load_model(fallback), fallback, f"the committed weights in `{_short(fallback)}`")


def _short(path: Path) -> str:
    try:
        rel = str(Path(path).resolve().relative_to(ROOT))
        return rel + "/" if Path(path).is_dir() else rel
    except ValueError:
        return str(path)


# ---------------------------------------------------------------------------------------------
# Evaluation artefacts of the served weights (each optional: a view says plainly what is missing).
# ---------------------------------------------------------------------------------------------

@dataclass
class Artefacts:
    folder: Path
    metrics: dict | None = None
    history: list | None = None
    trust: dict | None = None
    mistakes: dict | None = None       # misclassified.npz as arrays
    samples: dict | None = None        # samples.npz as arrays
    problems: list[str] = field(default_factory=list)

    def png(self, name: str) -> str | None:
        path = self.folder / "evaluation" / name
        return str(path) if path.is_file() else None


def load_artefacts(folder: Path) -> Artefacts:
    art = Artefacts(Path(folder))
    ev = art.folder / "evaluation"
    readers = {"metrics": (ev / "metrics.json", lambda p: json.loads(p.read_text())),
               "history": (art.folder / "training_history.json", lambda p: json.loads(p.read_text())),
               "trust": (ev / "trust.json", lambda p: json.loads(p.read_text())),
               "mistakes": (ev / "misclassified.npz", lambda p: dict(np.load(p, allow_pickle=False))),
               "samples": (ev / "samples.npz", lambda p: dict(np.load(p, allow_pickle=False)))}
    for name, (path, read) in readers.items():
        try:
            setattr(art, name, read(path))
        except FileNotFoundError:
            art.problems.append(f"`{_short(path)}` is missing")
        except Exception as e:  # a damaged artefact must not stop the app from classifying
            art.problems.append(f"`{_short(path)}` could not be read ({type(e).__name__}: {e})")
    return art


# ---------------------------------------------------------------------------------------------
# Input decoding: every way an image arrives -> the 28x28 look the model sees. Files are opened
# here, not by Gradio, so that every failure becomes a sentence for the user.
# ---------------------------------------------------------------------------------------------

def _open_image_file(path: str | Path) -> Image.Image:
    """Open and fully decode an image file, refusing bombs, animations and damaged files."""
    path = Path(path)
    name = path.name
    if not path.is_file():
        raise InvalidImageError("The uploaded file could not be found on the server; please upload it again.")
    if path.stat().st_size == 0:
        raise InvalidImageError("The file is empty (0 bytes): it is not an image.")
    try:
        with warnings.catch_warnings():
            # PIL only warns between its limit and twice it; here every bomb is an error.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                w, h = img.size
                if w * h > MAX_IMAGE_PIXELS:        # checked on the header, before decoding
                    raise InvalidImageError(_too_large(w * h, f"{w:,}x{h:,} pixels, "))
                frames = getattr(img, "n_frames", 1)
                if frames > 1:
                    raise InvalidImageError(f"This is an animated image ({frames} frames): please upload a "
                                            f"single still image.")
                img.load()
                return ImageOps.exif_transpose(img) or img   # phone photos: apply the EXIF rotation
    except InvalidImageError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        # PIL refuses in Image.open, before the size is known to us; its message carries the count.
        count = re.search(r"\((\d+) pixels\)", str(e))
        raise InvalidImageError(_too_large(int(count.group(1)) if count else None)) from None
    except UnidentifiedImageError:
        raise InvalidImageError("This file is not an image that can be read (PNG, JPEG, GIF, WebP, BMP "
                                "or TIFF expected).") from None
    except (OSError, SyntaxError, ValueError, EOFError, MemoryError) as e:
        reason = str(e).replace(str(path), name) or type(e).__name__
        raise InvalidImageError(f"The image file is damaged or truncated and cannot be decoded ({reason}).") from None


def _too_large(pixels: int | None, dims: str = "") -> str:
    size = f"{dims}{pixels:,} pixels" if pixels else "too many pixels"
    return (f"The image is too large ({size}); the limit is {MAX_IMAGE_PIXELS:,} pixels, so a possible "
            f"decompression bomb is refused: please upload a smaller image.")


def _editor_composite(value: dict):
    """A Sketchpad/ImageEditor value -> its composite (a file payload, array or image), or None."""
    composite = value.get("composite")
    if composite is None and value.get("layers"):
        composite = value["layers"][0]
    return composite


def to_look(image, sketch: bool = False) -> np.ndarray:
    """Any input the app accepts -> float32 (28, 28) in [0, 1], light garment on black.

    Args:
        image: a file path, a Gradio file payload ({"path": ...}), a Sketchpad value
            ({"composite": ...}), a PIL image or a numpy array.
        sketch: the input is a drawing, so "blank" means "draw something first".
    Raises:
        gr.Error: with a message for the user (empty, not an image, too large, damaged, ...).
    """
    empty = "Draw something first." if sketch else "No image: upload one, draw one or pick an example."
    try:
        if isinstance(image, dict) and ("composite" in image or "layers" in image):
            image, sketch = _editor_composite(image), True
            empty = "Draw something first."
        if isinstance(image, dict):
            image = image.get("path")
        if image is None:
            raise gr.Error(empty)
        if isinstance(image, (str, Path)):
            image = _open_image_file(image)
        look = fashion_look(image)                                       # (28, 28) in [0, 1]
    except InvalidImageError as e:
        raise gr.Error(str(e)) from None
    if float(look.max()) < 0.05:
        raise gr.Error(empty if sketch else "The image is blank (a single flat colour): there is "
                                            "nothing to classify.")
    return look


# ---------------------------------------------------------------------------------------------
# The model's answers. One lock: hook-based explainers (Guided Backprop, Grad-CAM) attach hooks
# to the shared network, so two requests must never run it at the same time.
# ---------------------------------------------------------------------------------------------

SETTINGS = parse_args(sys.argv[1:] if __name__ == "__main__" else [])
LOADED = load_weights(SETTINGS.model, hub_timeout=SETTINGS.hub_timeout)
MODEL = LOADED.model
# Predictions run on a copy with BatchNorm folded into the convolutions and channels-last memory:
# the same probabilities to float rounding, faster (bench/results/latency.md). Explanations use
# MODEL, the network exactly as trained and as the trust table measured it.
SERVING = copy.deepcopy(MODEL).optimize_for_inference_()
ARTEFACTS = load_artefacts(LOADED.folder)
LABELS = list(MODEL.label_names)
_MODEL_LOCK = threading.Lock()
TRIMMER = allocator.IdleTrimmer(idle_s=2.0)   # gives a burst's freed memory back once requests stop


@contextmanager
def _model_turn():
    """The network, one request at a time; each use also moves the idle memory trim later."""
    with _MODEL_LOCK:
        yield
    TRIMMER.touch()


def _input(look: np.ndarray) -> torch.Tensor:
    return normalize(look, MODEL.config.mean, MODEL.config.std)[None, None]   # (1, 1, 28, 28)


def predict(look: np.ndarray) -> np.ndarray:
    """Served class probabilities (num_classes,) for a 28x28 look (flip TTA as configured)."""
    with _model_turn():
        return SERVING.predict_proba(_input(look))[0].numpy()


def confidences(probs: np.ndarray) -> dict[str, float]:
    return {name: float(p) for name, p in zip(LABELS, probs)}


def classify(image) -> dict[str, float]:
    """Any accepted image -> {class name: probability} over all classes (gr.Label shows the top 3)."""
    return confidences(predict(to_look(image)))


def classify_sketch(sketch) -> dict[str, float]:
    """A Sketchpad value ({"composite": ...}) -> classify's output; empty: "Draw something first"."""
    return confidences(predict(to_look(sketch, sketch=True)))


def _target_index(target: str | None, probs: np.ndarray) -> int:
    if not target or target == PREDICTED:
        return int(probs.argmax())
    if target not in LABELS:
        raise gr.Error(f"Unknown class {target!r}: choose one of {', '.join(LABELS)} or '{PREDICTED}'.")
    return LABELS.index(target)


def _checked_methods(methods) -> list[str]:
    if isinstance(methods, str):
        methods = [methods]
    methods = list(methods or [])
    unknown = [m for m in methods if m not in explain.METHODS]
    if unknown:
        raise gr.Error(f"Unknown method(s) {unknown}: choose from {', '.join(explain.METHODS)}.")
    if not methods:
        raise gr.Error("Choose at least one explanation method.")
    return methods


def view_image(look: np.ndarray, size: int = VIEW_SIZE) -> np.ndarray:
    """The 28x28 look as a (size, size) uint8 image, nearest-neighbour so each pixel stays visible."""
    k = max(1, size // look.shape[0])
    return np.kron((np.clip(look, 0, 1) * 255).astype(np.uint8), np.ones((k, k), dtype=np.uint8))


def analyse_look(look: np.ndarray, methods, target: str | None = PREDICTED,
                 progress=gr.Progress()) -> tuple:
    """A 28x28 look -> (model view, label confidences, gallery [(overlay, caption)], scores dict).

    The maps share one colour scale, so a brighter map means a larger attribution. Each caption
    carries the map's deletion AUC (lower: removing the top pixels first kills the class faster)
    and insertion AUC (higher: adding them first restores it faster) for this very image.
    """
    methods = _checked_methods(methods)
    probs = predict(look)
    t = _target_index(target, probs)
    x = _input(look)[0]                                               # (1, 28, 28)
    maps, scores = {}, {}
    for i, name in enumerate(methods):
        progress((i, len(methods) + 1), desc=f"{name}")
        start = time.perf_counter()
        with _model_turn():
            attribution = np.asarray(explain.explain(MODEL, x, name, target=t), dtype=np.float32)
            seconds = time.perf_counter() - start
            curves = explain.deletion_insertion(MODEL, x, attribution, t)
        maps[name] = attribution
        scores[name] = {"deletion_auc": float(curves["deletion_auc"]),
                        "insertion_auc": float(curves["insertion_auc"]),
                        "seconds": round(seconds, 4), "signed": bool(explain.METHODS[name].signed)}
    progress((len(methods), len(methods) + 1), desc="rendering")
    # Methods have different units; each map as shares of its total makes one colour scale fair.
    maps = {n: share(a) for n, a in maps.items()}
    scale = explain.common_scale(list(maps.values()))
    gallery = [(explain.render_overlay(look, maps[n], scale, explain.METHODS[n].signed, size=VIEW_SIZE),
                f"{n} · deletion AUC {scores[n]['deletion_auc']:.2f} · insertion AUC {scores[n]['insertion_auc']:.2f}")
               for n in methods]
    summary = {"predicted": LABELS[int(probs.argmax())], "target": LABELS[t],
               "target_probability": float(probs[t]), "scale": float(scale), "methods": scores}
    return view_image(look), confidences(probs), gallery, summary


def explain_image(image, methods=DEFAULT_METHODS, target: str | None = PREDICTED,
                  progress=gr.Progress()) -> tuple:
    """Any accepted image -> analyse_look's outputs (the /explain endpoint)."""
    return analyse_look(to_look(image), methods, target, progress)


def model_info() -> dict:
    """Where the weights came from and what the evaluation says (the /model_info endpoint)."""
    m = ARTEFACTS.metrics or {}
    return {"source": LOADED.source, "folder": str(LOADED.folder), "fallback": LOADED.fallback,
            "parameters": count_parameters(MODEL), "config": {k: v for k, v in vars(MODEL.config).items()},
            "test_accuracy": m.get("accuracy"), "ece": (m.get("calibration") or {}).get("ece"),
            "methods": list(explain.METHODS), "missing_artefacts": ARTEFACTS.problems}


# ---------------------------------------------------------------------------------------------
# UI handlers: they never raise for a bad image; the message goes to the status line instead, and
# the result panel is cleared so no stale prediction is left beside it.
# ---------------------------------------------------------------------------------------------

SCORE_COLUMNS = ["Method", "Deletion AUC ↓", "Insertion AUC ↑", "Time (ms)"]
EMPTY_RESULT = (None, None, [], pd.DataFrame(columns=SCORE_COLUMNS), None)


def _status(text: str, ok: bool) -> str:
    return text if ok else f"**⚠ {text}**"


def ui_decode(image, sketch: bool = False):
    """A UI image -> (look or None, status markdown)."""
    if image is None or (isinstance(image, dict) and not image.get("path")
                         and not any(image.get(k) for k in ("composite", "layers", "background"))):
        if sketch:
            gr.Warning("Draw something first.")
            return None, _status("Draw something first.", False)
        return None, ""                                              # cleared: nothing to say
    try:
        look = to_look(image, sketch=sketch)
    except gr.Error as e:
        gr.Warning(e.message)
        return None, _status(e.message, False)
    return look, "Classified. The maps explain the class chosen under *Explain class*."


def ui_analyse(look, methods, target, progress=gr.Progress()):
    if look is None:
        return EMPTY_RESULT
    try:
        view, label, gallery, summary = analyse_look(look, methods, target, progress)
        rows = -(-len(gallery) // MAP_COLUMNS)
        # The gallery's height follows its rows, so one row of maps leaves no empty box below.
        return view, label, gr.Gallery(gallery, height=rows * MAP_ROW_PX + 50), score_table(summary), summary
    except gr.Error as e:
        gr.Warning(e.message)
        return EMPTY_RESULT


def score_table(summary: dict) -> pd.DataFrame:
    """analyse_look's per-method scores as the table under the maps."""
    return pd.DataFrame([[name, round(s["deletion_auc"], 3), round(s["insertion_auc"], 3),
                          round(1000 * s["seconds"], 1)] for name, s in summary["methods"].items()],
                        columns=SCORE_COLUMNS)


def _mistake_rows(true_class: str, pred_class: str) -> np.ndarray:
    """Indices into misclassified.npz matching the filters, most confident mistakes first."""
    d = ARTEFACTS.mistakes
    if d is None:
        return np.zeros(0, dtype=int)
    keep = np.ones(len(d["true"]), dtype=bool)
    if true_class in LABELS:
        keep &= d["true"] == LABELS.index(true_class)
    if pred_class in LABELS:
        keep &= d["pred"] == LABELS.index(pred_class)
    rows = np.flatnonzero(keep)
    return rows[np.argsort(-d["confidence"][rows], kind="stable")]


def filter_mistakes(true_class: str, pred_class: str):
    rows = _mistake_rows(true_class, pred_class)
    d = ARTEFACTS.mistakes
    if d is None:
        return [], [], "No misclassified examples: `evaluation/misclassified.npz` is missing for these weights."
    shown = rows[:MISTAKES_SHOWN]
    gallery = [(view_image(d["images"][r] / 255.0, 84),
                f"{LABELS[d['true'][r]]} → {LABELS[d['pred'][r]]} ({float(d['confidence'][r]):.0%})")
               for r in shown]
    text = (f"{len(rows)} of {len(d['true'])} misclassified test images match"
            + (f"; the {len(shown)} most confident mistakes are shown." if len(rows) > len(shown) else "."))
    return gallery, [int(r) for r in shown], text


def select_mistake(shown: list[int], evt: gr.SelectData):
    d = ARTEFACTS.mistakes
    r = shown[evt.index]
    look = fashion_look(d["images"][r])
    text = (f"Test image #{int(d['index'][r])}: true class **{LABELS[d['true'][r]]}**, predicted "
            f"**{LABELS[d['pred'][r]]}** ({float(d['confidence'][r]):.0%}). Choose "
            f"*{LABELS[d['true'][r]]}* under *Explain class* to ask why not.")
    return look, text


# ---------------------------------------------------------------------------------------------
# Static view content, computed once.
# ---------------------------------------------------------------------------------------------

def write_examples(samples: dict | None) -> tuple[list[list[str]], list[str]]:
    """One test image per class as PNG files in a temporary folder (gr.Examples needs files).

    Written once at start into the system temp dir (removed at exit), never into the repo.
    """
    if samples is None:
        return [], []
    folder = Path(tempfile.mkdtemp(prefix="fashion-examples-"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    paths, labels = [], []
    for c, name in enumerate(LABELS):
        hits = np.flatnonzero(samples["label"] == c)
        if len(hits):
            path = folder / f"{c}-{name.replace('/', '-').replace(' ', '-').lower()}.png"
            Image.fromarray(samples["images"][hits[0]]).save(path)
            paths.append([str(path)])
            labels.append(name)
    return paths, labels


def per_class_accuracy() -> pd.DataFrame | None:
    per_class = (ARTEFACTS.metrics or {}).get("per_class")
    if not per_class:
        return None
    return pd.DataFrame({"class": list(per_class), "accuracy": [v["recall"] for v in per_class.values()]})


def history_frame() -> pd.DataFrame | None:
    rows = []
    for h in ARTEFACTS.history or []:
        for key, series in (("train_accuracy", "train accuracy"), ("val_accuracy", "validation accuracy")):
            if h.get(key) is not None:
                rows.append({"epoch": h["epoch"], "accuracy": float(h[key]), "series": series})
    return pd.DataFrame(rows) if rows else None


def model_markdown() -> str:
    m, cfg = ARTEFACTS.metrics or {}, MODEL.config
    lines = [f"**Weights:** {LOADED.source}.", ""]
    if LOADED.fallback:
        lines[0] = f"**⚠ Weights:** {LOADED.source}."
    lines += [f"**Architecture:** residual CNN, stages of {', '.join(map(str, cfg.widths))} channels at "
              f"28, 14 and 7 px, global average pooling, linear head over {cfg.num_classes} classes; "
              f"dropout {cfg.dropout}; flip test-time augmentation {'on' if cfg.flip_tta else 'off'}.",
              f"**Parameters:** {count_parameters(MODEL):,}."]
    if m:
        acc, ci = m.get("accuracy"), m.get("accuracy_ci95")
        ci_text = f" (95% CI {ci[0]:.1%} to {ci[1]:.1%})" if ci else ""
        lines.append(f"**Test accuracy:** {acc:.2%}{ci_text} on {m.get('n', '?'):,} test images; "
                     f"macro F1 {m.get('macro_f1', float('nan')):.3f}.")
        ece = (m.get("calibration") or {}).get("ece")
        if ece is not None:
            lines.append(f"**Calibration:** expected calibration error {ece:.3f} "
                         f"(0 means the stated confidence matches the accuracy).")
        if m.get("command"):
            lines.append(f"**Trained with:** `{m['command']}`")
    if ARTEFACTS.problems:
        lines.append("**Missing evaluation artefacts:** " + "; ".join(ARTEFACTS.problems) + ".")
    return "\n\n".join(lines)


RANDOM_ORDER = "(random order)"    # the baseline row: pixels removed/added in random order


def trust_methods(baseline: bool = False) -> dict[str, dict]:
    """trust.json's per-method results {name: {...}}, read defensively.

    explain.trust writes {"methods": [names], name: {...}, "random_order": {...}}; a nested
    {"methods": {name: {...}}} or a list of dicts with a "name" is accepted too.
    """
    t = ARTEFACTS.trust or {}
    listed = t.get("methods")
    if isinstance(listed, dict):
        table = listed
    elif isinstance(listed, list):
        table = {(m.get("name") if isinstance(m, dict) else m): (m if isinstance(m, dict) else t.get(m))
                 for m in listed}
    else:
        table = {k: v for k, v in t.items() if k in explain.METHODS}
    table = {str(k): v for k, v in table.items() if isinstance(v, dict)}
    if baseline and isinstance(t.get("random_order"), dict):
        table[RANDOM_ORDER] = t["random_order"]
    return table


def _num(v, fmt: str):
    return fmt.format(v) if isinstance(v, (int, float)) else "–"


def trust_table() -> pd.DataFrame | None:
    methods = trust_methods(baseline=True)
    if not methods:
        return None
    rows = [{"Method": name,
             "Deletion AUC ↓": _num(r.get("deletion_auc"), "{:.3f}"),
             "Insertion AUC ↑": _num(r.get("insertion_auc"), "{:.3f}"),
             "Randomisation ρ ↓": _num(r.get("randomisation_rho"), "{:.2f}"),
             "Passes randomisation": {True: "yes", False: "no"}.get(r.get("randomisation_passes"), "–"),
             "Infidelity ↓": _num(r.get("infidelity"), "{:.4f}"),
             "Sensitivity ↓": _num(r.get("sensitivity"), "{:.3f}"),
             "Latency (ms)": _num(r.get("latency_ms"), "{:.1f}")} for name, r in methods.items()]
    return pd.DataFrame(rows)


def trust_curves(kind: str) -> pd.DataFrame | None:
    """Mean deletion or insertion curves, long format (fraction, probability, method)."""
    t, rows = ARTEFACTS.trust or {}, []
    for name, r in trust_methods(baseline=True).items():
        curve = r.get(f"mean_{kind}_curve")
        fractions = r.get("fractions", t.get("fractions"))
        if curve is None:
            continue
        if fractions is None or len(fractions) != len(curve):
            fractions = np.linspace(0, 1, len(curve)).tolist()
        rows += [{"fraction of pixels": float(f), "probability of the class": float(v), "method": name}
                 for f, v in zip(fractions, curve)]
    return pd.DataFrame(rows) if rows else None


def randomisation_curves() -> pd.DataFrame | None:
    rows = []
    for name, r in trust_methods().items():
        curve, layers = r.get("randomisation_curve"), r.get("cascade_layers")
        if not curve:
            continue
        layers = layers if layers and len(layers) == len(curve) else list(range(len(curve)))
        rows += [{"layers randomised": i + 1, "layer": str(l), "rank correlation": float(v), "method": name}
                 for i, (l, v) in enumerate(zip(layers, curve))]
    return pd.DataFrame(rows) if rows else None


def trust_verdict() -> str:
    """Which methods beat the random-order baseline on both curves and pass the randomisation test."""
    table = trust_methods()
    base = (ARTEFACTS.trust or {}).get("random_order") or {}
    if not table or base.get("deletion_auc") is None:
        return ""
    earn, fail = [], []
    for name, r in table.items():
        beats = (r.get("deletion_auc") is not None and r["deletion_auc"] < base["deletion_auc"]
                 and r.get("insertion_auc") is not None and r["insertion_auc"] > base["insertion_auc"])
        (earn if beats and r.get("randomisation_passes") else fail).append(name)
    return (f"**Earn belief here:** {', '.join(earn) or 'none'} — better than removing pixels in random "
            f"order on both curves, and their maps change when the weights are randomised. "
            f"**Not on this evidence:** {', '.join(fail) or 'none'}.")


def trust_markdown() -> str:
    if ARTEFACTS.trust is None:
        where = _short(LOADED.folder / "evaluation" / "trust.json")
        return (f"**No trust results for these weights:** `{where}` is missing, so the per-method table "
                f"and curves cannot be shown (they are computed once with `python -m explain.trust "
                f"<model folder>`). The per-image deletion/insertion AUCs in the Explain view still work.")
    n = (ARTEFACTS.trust or {}).get("n_images", "?")
    return (f"Measured over **{n}** test images, explaining the predicted class. "
            f"**Deletion AUC** (lower is better): the class probability as the most-attributed pixels "
            f"are removed first. **Insertion AUC** (higher is better): as they are restored first to a "
            f"blank image. *{RANDOM_ORDER}* is the baseline a method must beat. **Randomisation ρ** "
            f"(lower is better): rank correlation between a method's map and its map once the network's "
            f"weights are re-initialised layer by layer (Adebayo et al. 2018); a map that survives "
            f"randomisation is not explaining the model. Latency: median per map when measured.\n\n"
            + trust_verdict())


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
"""


def result_panel(prefix: str):
    """The output column shared by the Explain and Mistakes views."""
    with gr.Row():
        view = gr.Image(label="What the model saw (28x28)", type="numpy", format="png", interactive=False,
                        height=VIEW_SIZE, width=VIEW_SIZE, buttons=[], elem_id=f"{prefix}-view")
        label = gr.Label(num_top_classes=3, label="Prediction (top 3)", elem_id=f"{prefix}-label")
    gallery = gr.Gallery(label="Attribution maps (one colour scale for all)", columns=MAP_COLUMNS, height=MAP_ROW_PX + 50,
                         format="png", object_fit="contain", allow_preview=True, elem_id=f"{prefix}-maps")
    table = gr.Dataframe(label="How faithful is each map for this image? Deletion: the class probability as the "
                               "top-ranked pixels are removed (lower is better); insertion: as they are added "
                               "to a blank image (higher is better).",
                         value=EMPTY_RESULT[3], interactive=False, elem_id=f"{prefix}-scores")
    with gr.Accordion("Scores as JSON", open=False):
        scores = gr.JSON(label="Per-method scores for this image")
    return view, label, gallery, table, scores


def method_controls():
    methods = gr.CheckboxGroup(list(explain.METHODS), value=[m for m in DEFAULT_METHODS if m in explain.METHODS],
                               label="Explanation methods")
    target = gr.Dropdown([PREDICTED] + LABELS, value=PREDICTED, label="Explain class",
                         info="Why this class? Pick another to ask 'why not Shirt?'")
    return methods, target


def build_demo() -> gr.Blocks:
    example_files, example_labels = write_examples(ARTEFACTS.samples)
    with gr.Blocks(title="Fashion-MNIST explainability dashboard", delete_cache=(600, 1800)) as demo:
        gr.Markdown(INTRO)
        gr.Markdown(f"<small>Serving {LOADED.source}.</small>" if not LOADED.fallback
                    else f"**⚠ Serving {LOADED.source}.**", elem_id="weights-source")
        look_state = gr.State(None)
        with gr.Tabs():
            with gr.Tab("Explain", id="explain"):
                with gr.Row():
                    with gr.Column(scale=2, min_width=300):
                        with gr.Tabs():
                            with gr.Tab("Upload", id="upload"):
                                # type="filepath" + preprocess=False below: this file opens the upload
                                # itself, so a damaged or hostile file gets a clear message.
                                image = gr.Image(type="filepath", image_mode=None, label="Garment image",
                                                 sources=["upload", "clipboard"], height=260, elem_id="upload")
                            with gr.Tab("Draw", id="draw"):
                                gr.Markdown("Pick the brush in the left toolbar, draw the garment's outline "
                                            "or fill it, then *Classify drawing*.")
                                sketch = gr.Sketchpad(label="Draw a garment",
                                                      type="numpy", image_mode="RGBA", canvas_size=(280, 280),
                                                      height=300, elem_id="sketch",
                                                      brush=gr.Brush(default_size=14, colors=["#000000"],
                                                                     color_mode="fixed"))
                                draw_btn = gr.Button("Classify drawing", variant="primary")
                        status = gr.Markdown("", elem_id="status")
                        if example_files:
                            gr.Examples(example_files, inputs=[image], example_labels=example_labels,
                                        label="Test-set examples (one per class)", examples_per_page=10)
                        methods, target = method_controls()
                        with gr.Accordion("About the methods", open=False):
                            gr.Markdown("\n".join(f"- **{n}** ({'signed' if m.signed else 'magnitude'}): "
                                                   f"{m.description} [paper]({m.reference})"
                                                   for n, m in explain.METHODS.items()))
                    with gr.Column(scale=3):
                        view, label, gallery, table, scores = result_panel("explain")

            with gr.Tab("Mistakes", id="mistakes"):
                mistake_look = gr.State(None)
                shown_rows = gr.State([])
                with gr.Row():
                    with gr.Column(scale=2):
                        with gr.Row():
                            true_f = gr.Dropdown(["All"] + LABELS, value="All", label="True class")
                            pred_f = gr.Dropdown(["All"] + LABELS, value="All", label="Predicted as")
                        mistakes_text = gr.Markdown()
                        mistakes = gr.Gallery(label="Misclassified test images (true → predicted)", columns=4,
                                              height=480, format="png", allow_preview=False, elem_id="mistakes")
                    with gr.Column(scale=3):
                        mistake_note = gr.Markdown("Select an image to explain it.")
                        m_methods, m_target = method_controls()
                        m_outputs = result_panel("mistake")
                with gr.Row():
                    cm = ARTEFACTS.png("confusion_matrix.png")
                    if cm:
                        gr.Image(cm, label="Confusion matrix", show_label=False, interactive=False, buttons=[])
                    acc = per_class_accuracy()
                    if acc is not None:
                        gr.BarPlot(acc, x="class", y="accuracy", title="Per-class accuracy (recall)",
                                   y_lim=[0, 1], x_label_angle=-30, sort=LABELS)

            with gr.Tab("Trust", id="trust"):
                gr.Markdown(trust_markdown(), elem_id="trust-text")
                trust_df = trust_table()
                if trust_df is not None:
                    gr.Dataframe(trust_df, label="Per-method results over the test sample", interactive=False)
                    with gr.Row():
                        for kind in ("deletion", "insertion"):
                            df = trust_curves(kind)
                            if df is not None:
                                gr.LinePlot(df, x="fraction of pixels", y="probability of the class",
                                            color="method", title=f"Mean {kind} curve", y_lim=[0, 1])
                    rnd = randomisation_curves()
                    if rnd is not None:
                        order = " → ".join(dict.fromkeys(rnd["layer"]))
                        gr.LinePlot(rnd, x="layers randomised", y="rank correlation", color="method",
                                    title=f"Cascading randomisation ({order}): similarity to the trained "
                                          f"model's map", x_lim=[1, int(rnd["layers randomised"].max())])

            with gr.Tab("Model", id="model"):
                gr.Markdown(model_markdown(), elem_id="model-text")
                with gr.Row():
                    hist = history_frame()
                    if hist is not None:
                        gr.LinePlot(hist, x="epoch", y="accuracy", color="series", title="Training curves")
                    elif ARTEFACTS.png("training_curves.png"):
                        gr.Image(ARTEFACTS.png("training_curves.png"), show_label=False, buttons=[])
                    if ARTEFACTS.png("reliability.png"):
                        gr.Image(ARTEFACTS.png("reliability.png"), label="Calibration (reliability diagram)",
                                 show_label=False, interactive=False, buttons=[])
                with gr.Accordion("Network layers", open=False):
                    gr.Code(str(MODEL), language=None)

        outputs = [view, label, gallery, table, scores]
        private = dict(api_visibility="private")
        # Explain view: any new image (upload, example click, clear) -> decode -> analyse.
        image.change(lambda v: ui_decode(v), image, [look_state, status], preprocess=False, **private) \
            .then(ui_analyse, [look_state, methods, target], outputs, **private)
        draw_btn.click(lambda v: ui_decode(v, sketch=True), sketch, [look_state, status], preprocess=False,
                       **private).then(ui_analyse, [look_state, methods, target], outputs, **private)
        for control in (methods, target):
            control.input(ui_analyse, [look_state, methods, target], outputs, **private)
        # Mistakes view.
        for control in (true_f, pred_f):
            control.change(filter_mistakes, [true_f, pred_f], [mistakes, shown_rows, mistakes_text], **private)
        demo.load(filter_mistakes, [true_f, pred_f], [mistakes, shown_rows, mistakes_text], **private)
        mistakes.select(select_mistake, shown_rows, [mistake_look, mistake_note], **private) \
            .then(ui_analyse, [mistake_look, m_methods, m_target], m_outputs, **private)
        for control in (m_methods, m_target):
            control.input(ui_analyse, [mistake_look, m_methods, m_target], m_outputs, **private)

        # Named API endpoints, on hidden triggers so they take plain inputs and raise on bad ones.
        api_classify = gr.Button(visible=False)
        api_classify.click(classify, image, label, api_name="classify", preprocess=False)
        api_explain = gr.Button(visible=False)
        api_explain.click(explain_image, [image, methods, target], [view, label, gallery, scores], api_name="explain",
                          preprocess=False)
        api_sketch = gr.Button(visible=False)
        api_sketch.click(classify_sketch, sketch, label, api_name="classify_sketch", preprocess=False)
        api_info = gr.Button(visible=False)
        api_info.click(model_info, None, gr.JSON(visible=False, label="model info"), api_name="model_info")
    # Two workers: decoding and rendering overlap while the model lock serialises the network.
    demo.queue(default_concurrency_limit=2, max_size=64)
    return demo


demo = build_demo()

if __name__ == "__main__":
    demo.launch(server_name=SETTINGS.host, server_port=SETTINGS.port, max_file_size=MAX_FILE_SIZE,
                show_error=False, theme=gr.themes.Soft(font=["ui-sans-serif", "system-ui", "sans-serif"],
                                                       font_mono=["ui-monospace", "monospace"]), css=CSS)
