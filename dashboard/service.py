"""The model behind the dashboard: which weights are served (with the fallback), and its answers.

`Service` owns the network as trained (for explanations), its serving copy (BatchNorm folded,
channels-last, for predictions), the evaluation artefacts of the served folder, a batcher that
lets concurrent predictions share one forward pass of the serving copy, and one lock for the
networks as trained: the hook-based explainers attach hooks to them, so two explanations never run
at once. Predictions never wait for an explanation. A segmented photo (`photo=True`, from
`preprocess.look_and_mask`) is answered by the network with the photo layers
(`FashionCNN.for_photos`), which has its own serving copy and batcher; when the weights have no
photo layers, both are the same network. Nothing here imports Gradio; app.py turns the errors
into messages.
"""
from __future__ import annotations

import copy
import sys
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

import explain
from modelrepo import hub
from modelrepo.artefacts import load_artefacts
from dashboard.batcher import Batcher
from dashboard.uploads import clip
from explain.render import share
from model import FashionCNN, WeightsError, count_parameters
from modelrepo.folder import OpenedModel, open_model
from modelrepo.ood import OODDetector, penultimate
from modelrepo import verdict
from imaging.preprocess import normalize

ROOT = Path(__file__).resolve().parents[1]
COMMITTED_WEIGHTS = ROOT / "weights"
PREDICTED = "predicted class"          # the target choice that follows the prediction
DEFAULT_METHODS = ("Saliency", "Integrated Gradients", "Grad-CAM", "Occlusion")
VIEW_SIZE = 224                        # pixels a side of every displayed 28x28 image
TOP_CLASSES = 3                        # classes listed in a prediction
# Points of each map's deletion/insertion curve, less one. The curves of all chosen maps cost more
# than the maps themselves (bench/results/server_profile.md); 14 steps of 56 pixels rank the maps of one
# image almost exactly as 28 steps do (bench/results/curve_steps.md), for half the forward passes.
CURVE_STEPS = 14


GUESS = ("This does not look like the garments the model knows, neither its training images nor garment "
         "photos: it is probably not a garment. The class below is a guess, and the maps explain a guess.")


@dataclass
class Assessment:
    """A prediction with what a visitor needs to weigh it."""
    probs: np.ndarray                 # (num_classes,) as served
    ood_score: float | None           # higher = further from the training data; None without a detector
    in_distribution: bool | None      # not "not-a-garment"; None without a detector
    confidence: str                   # the calibrated confidence, or the out-of-distribution verdict, in words
    kind: str | None = None           # verdict.KINDS: fashion-mnist-like, garment-photo, not-a-garment
    ood_threshold: float | None = None   # the threshold of the detector that judged (the photo one for a photo)
    # (D,) the penultimate features of the same forward pass, averaged over the served views: the
    # space the nearest-training-images index searches, so a lookup needs no second pass.
    features: np.ndarray | None = None


class RequestError(ValueError):
    """A request the service cannot answer (unknown method or class); the message is for a person."""


@dataclass
class LoadedModel:
    model: FashionCNN
    folder: Path             # holds config.json, model.safetensors and (maybe) evaluation/
    source: str              # what the UI says about where the weights came from
    fallback: bool = False   # True when the requested weights could not be used
    detector: OODDetector | None = None   # the out-of-distribution detector fitted to these weights
    detector_error: str | None = None     # why the folder's detector could not be used

    @classmethod
    def of(cls, opened: OpenedModel, source: str, fallback: bool = False) -> "LoadedModel":
        return cls(opened.model, opened.folder, source, fallback, opened.detector, opened.detector_error)


def short_path(path: Path) -> str:
    """A path as the page shows it: relative to the repository when inside it."""
    try:
        rel = str(Path(path).resolve().relative_to(ROOT))
        return rel + "/" if Path(path).is_dir() else rel
    except ValueError:
        return str(path)


def _looks_like_path(source: str) -> bool:
    return Path(source).exists() or source.startswith((".", "/", "~")) or source.count("/") > 1


def load_weights(requested: str | None, fallback: Path = COMMITTED_WEIGHTS,
                 hub_timeout: float = hub.DEFAULT_TIMEOUT_S) -> LoadedModel:
    """Load `requested` (local folder or Hub repo id); on any WeightsError, the committed weights.

    Raises:
        WeightsError: only when the fallback weights themselves cannot be loaded.
    """
    committed = f"the committed weights in `{short_path(fallback)}`"
    if not requested:
        return LoadedModel.of(open_model(fallback), committed)
    try:
        if _looks_like_path(requested):
            folder = Path(requested).expanduser()
            if not folder.is_dir():
                raise WeightsError(f"{folder}: no such folder")
            opened, where = open_model(folder), f"local folder `{folder}`"
        else:
            opened = open_model(requested, timeout=hub_timeout, extra_patterns=hub.ARTEFACT_PATTERNS)
            where = f"Hugging Face Hub repo `{requested}`"
        return LoadedModel.of(opened, f"weights from the {where}")
    except WeightsError as e:
        opened = open_model(fallback)
        print(f"[app] could not use {requested!r}: {e}; serving {fallback}", file=sys.stderr)
        return LoadedModel.of(opened, f"{committed}, because `{requested}` could not be used: {e}", fallback=True)


def view_image(look: np.ndarray, size: int = VIEW_SIZE) -> np.ndarray:
    """The 28x28 look as a (size, size) uint8 image, nearest-neighbour so each pixel stays visible."""
    k = max(1, size // look.shape[0])
    return np.kron((np.clip(look, 0, 1) * 255).astype(np.uint8), np.ones((k, k), dtype=np.uint8))


def checked_methods(methods, known=explain.METHODS) -> list[str]:
    """Method names, de-duplicated in order; at most one of each known method, so at most len(known)."""
    if isinstance(methods, str):
        methods = [methods]
    if not isinstance(methods, (list, tuple)) or not all(isinstance(m, str) for m in methods):
        raise RequestError(f"methods must be a list of method names from: {', '.join(known)}.")
    unknown = [m for m in dict.fromkeys(methods) if m not in known]
    if unknown:
        shown = ", ".join(clip(m) for m in unknown[:3]) + (" ..." if len(unknown) > 3 else "")
        raise RequestError(f"Unknown method(s) {shown}: choose from {', '.join(known)}.")
    if not methods:
        raise RequestError("Choose at least one explanation method.")
    return list(dict.fromkeys(methods))


class Service:
    """Predictions and explanations of one loaded model; thread-safe."""

    def __init__(self, loaded: LoadedModel):
        self.loaded = loaded
        self.model = loaded.model
        self.detector = loaded.detector
        # Predictions run on a copy with BatchNorm folded and channels-last memory: the same
        # probabilities to float rounding, faster. Explanations use the network exactly as
        # trained, as the trust table measured it.
        self.serving = copy.deepcopy(self.model).optimize_for_inference_()
        self.batcher = Batcher(lambda x: self._forward(self.serving, x))
        self.photo_model = self.model.for_photos()
        self.verdict, self.verdict_error = self._load_verdict(loaded)
        # A segmented photo is judged by the photo detector, fitted on garment photos; without
        # one (older weights), by the Fashion-MNIST detector as before.
        self.photo_detector = self.verdict.detector if self.verdict is not None else self.detector
        # A drawing is judged by the drawings' detector (fitted on garment drawings); without one,
        # by the Fashion-MNIST detector, which calls every drawn silhouette unlike its training images.
        drawings, self.drawing_error = self._load_verdict(loaded, verdict.DRAWING_FILES)
        self.drawing_detector = drawings.detector if drawings is not None else None
        self.photo_serving, self.photo_batcher = self.serving, self.batcher
        if self.photo_model is not self.model:
            self.photo_serving = copy.deepcopy(self.photo_model).optimize_for_inference_()
        if self.photo_serving is not self.serving or self.photo_detector is not self.detector:
            self.photo_batcher = Batcher(lambda x, material=None: self._forward(self.photo_serving, x, self.photo_detector,
                                                                                material))
        self.artefacts = load_artefacts(loaded.folder, short_path)
        self.labels = list(self.model.label_names)
        self._explain_lock = threading.Lock()
        self.on_use = lambda: None        # called after each use of the network (the idle trimmer)

    def _load_verdict(self, loaded: LoadedModel, files=verdict.VERDICT_FILES) -> tuple[verdict.Verdict | None, str | None]:
        """The photo verdict (or with DRAWING_FILES the drawings') beside the weights, or None and
        why (the weights still serve)."""
        if not (loaded.folder / files[0]).exists():
            return None, f"no {files[0]} in the model folder"
        try:
            return verdict.Verdict.load(loaded.folder, self.model, files), None
        except verdict.VerdictError as e:
            return None, str(e)[:300]

    @contextmanager
    def _turn(self):
        with self._explain_lock:
            yield
        self.on_use()

    def _input(self, look: np.ndarray) -> torch.Tensor:
        cfg = self.model.config
        return normalize(look, cfg.mean, cfg.std)[None, None]      # (1, 1, 28, 28)

    def _batch_input(self, look: np.ndarray, photo: bool, material: np.ndarray | None):
        """What a batcher takes for one look: the input, and for a photo judged by its material
        (`verdict.PhotoDetector.uses_material`) the material (1, MATERIAL) beside it."""
        x = self._input(look)
        if not (photo and getattr(self.photo_detector, "uses_material", False)):
            return x
        if material is None:
            raise ValueError("a segmented photo is judged by its material as well: pass preprocess.Seen.material")
        return x, torch.as_tensor(np.asarray(material, dtype=np.float32))[None]

    @torch.inference_mode()
    def _forward(self, serving: FashionCNN, x: torch.Tensor, detector=None, material: torch.Tensor | None = None
                 ) -> list[tuple[np.ndarray, float | None, np.ndarray]]:
        """(probabilities, OOD score or None, penultimate features (D,)) per image of a batch, from
        one pass of a serving copy (`material` (B, MATERIAL): for a photo detector that weighs it).

        Every prediction carries its score and features: in a batch they cost little, and one path
        means /classify and /analyse can never disagree on the probabilities.
        """
        detector = self.detector if detector is None else detector
        views = serving.served_features(x)                                 # (V, B, F)
        probs = serving.served_proba(views).numpy()
        scores = detector.score_views(serving, views, x, material).tolist() if detector is not None else [None] * len(x)
        return list(zip(probs, scores, penultimate(serving, views).mean(0).numpy()))

    def _predict(self, look: np.ndarray, photo: bool, material=None) -> tuple[np.ndarray, float | None, np.ndarray]:
        out = (self.photo_batcher if photo else self.batcher)(self._batch_input(look, photo, material))
        self.on_use()
        return out

    async def _predict_async(self, look: np.ndarray, photo: bool, material=None) -> tuple[np.ndarray, float | None, np.ndarray]:
        out = await (self.photo_batcher if photo else self.batcher).run(self._batch_input(look, photo, material))
        self.on_use()
        return out

    def predict(self, look: np.ndarray, photo: bool = False, material: np.ndarray | None = None) -> np.ndarray:
        """Served class probabilities (num_classes,) for a 28x28 look (of a segmented photo: `photo`,
        with its `material`, preprocess.Seen.material)."""
        return self._predict(look, photo, material)[0]

    async def predict_async(self, look: np.ndarray, photo: bool = False, material: np.ndarray | None = None) -> np.ndarray:
        """`predict` for a coroutine: awaits the batch on the event loop instead of blocking a thread."""
        return (await self._predict_async(look, photo, material))[0]

    def assess(self, look: np.ndarray, photo: bool = False, drawing: bool = False,
               material: np.ndarray | None = None) -> Assessment:
        """Probabilities, the out-of-distribution score and verdict, and the confidence in words
        (a drawing, `preprocess.Seen.drawing`, is judged against garment drawings; a photo with its
        `material`)."""
        return self._assessment(*self._predict(look, photo, material), photo, self._drawing_score(look, drawing))

    async def assess_async(self, look: np.ndarray, photo: bool = False, drawing: bool = False,
                           material: np.ndarray | None = None) -> Assessment:
        """`assess` for a coroutine."""
        return self._assessment(*(await self._predict_async(look, photo, material)), photo,
                                self._drawing_score(look, drawing))

    @torch.inference_mode()
    def _drawing_score(self, look: np.ndarray, drawing: bool) -> float | None:
        """The drawings' detector's score of a drawing (one more pass: drawings are few); else None."""
        if not drawing or self.drawing_detector is None:
            return None
        return float(self.drawing_detector.score(self.serving, self._input(look))[0])

    def _assessment(self, probs: np.ndarray, score: float | None, features: np.ndarray,
                    photo: bool = False, drawing_score: float | None = None) -> Assessment:
        detector = self.photo_detector if photo else self.detector
        if drawing_score is not None:
            detector, score = self.drawing_detector, drawing_score
        if detector is None or score is None:
            return Assessment(probs, None, None, self.confidence_sentence(probs, photo), features=features)
        flagged = bool(detector.flag(torch.tensor([score]))[0])
        return Assessment(probs, score, not flagged, GUESS if flagged else self.confidence_sentence(probs, photo),
                          verdict.kind(photo, flagged), detector.threshold, features)

    def confidence_sentence(self, probs: np.ndarray, photo: bool = False) -> str:
        """How often the model was right at this confidence: on test images (the reliability bins of
        evaluation/metrics.json), or for a photo on held-out garment photos (verdict.json's bins)."""
        top = float(probs.max())
        name = self.labels[int(probs.argmax())]
        if photo:
            hit = self.verdict.reliability(top) if self.verdict is not None else None
            if hit is None or hit["count"] < 20:
                return (f"{name} at {top:.0%}, from a photo: the model is less sure on photos than on the images "
                        "it was trained on, and too few held-out photos were this confident to say how often that is right.")
            return (f"{name} at {top:.0%}, from a photo: the model is less sure on photos. At this confidence "
                    f"({hit['lo']:.0%}-{hit['hi']:.0%}) it was right on {hit['accuracy']:.0%} of {hit['count']:,} "
                    "held-out garment photos.")
        bins = ((self.artefacts.metrics or {}).get("calibration") or {}).get("bins") or []
        hit = next((b for b in bins if b["lo"] < top <= b["hi"]), None)
        if hit is None or hit["count"] < 20:
            return f"{name} at {top:.0%}: too few test images were this confident to say how often that is right."
        return (f"{name} at {top:.0%}: at this confidence ({hit['lo']:.0%}-{hit['hi']:.0%}) the model was right on "
                f"{hit['accuracy']:.0%} of {hit['count']:,} test images.")

    def analysis(self, a: Assessment) -> dict:
        """The /analyse answer from an assessment: label, probabilities, the verdict (`kind`, and
        `in_distribution`: not "not-a-garment"), the score and threshold of the detector that judged,
        and the confidence in words."""
        return {"label": self.labels[int(a.probs.argmax())], "probabilities": self.confidences(a.probs),
                "in_distribution": a.in_distribution, "kind": a.kind, "ood_score": a.ood_score,
                "ood_threshold": a.ood_threshold, "confidence": a.confidence}

    def confidences(self, probs: np.ndarray) -> dict[str, float]:
        return {name: float(p) for name, p in zip(self.labels, probs)}

    def label_value(self, probs: np.ndarray) -> dict:
        """The prediction as Gradio's Label shows it: the top class and the top TOP_CLASSES."""
        order = np.argsort(-probs, kind="stable")[:TOP_CLASSES]
        return {"label": self.labels[int(order[0])],
                "confidences": [{"label": self.labels[int(i)], "confidence": float(probs[i])} for i in order]}

    def target_index(self, target, probs: np.ndarray) -> int:
        if target is None or target == PREDICTED:
            return int(probs.argmax())
        if not isinstance(target, str) or target not in self.labels:
                    raise RequestError(f"Unknown class {clip(target)}: choose one of {', '.join(self.labels)} "
                               f"or '{PREDICTED}'.")
        return self.labels.index(target)

    def explain(self, look: np.ndarray, methods, target=PREDICTED, progress=None, photo: bool = False,
                drawing: bool = False, material: np.ndarray | None = None) -> tuple:
        """A 28x28 look -> (Assessment, target index, {method: map in shares}, {method: scores}).

        Each map is expressed as shares of its total, so maps of different methods can share one
        colour scale; the scores are the map's deletion and insertion AUC for this very image.
        The maps come from the network as trained, one method at a time under the lock; the
        curves of all maps from one forward pass of the serving copy (the same logits to float
        rounding, faster, and free of the explainers' hooks, so no lock).
        """
        methods = checked_methods(methods)
        assessment = self.assess(look, photo, drawing, material)
        model, serving = (self.photo_model, self.photo_serving) if photo else (self.model, self.serving)
        t = self.target_index(target, assessment.probs)
        x = self._input(look)[0]                                            # (1, 28, 28)
        attributions, seconds = {}, {}
        for i, name in enumerate(methods):
            if progress is not None:
                progress((i, len(methods) + 1), desc=name)
            start = time.perf_counter()
            with self._turn():
                attributions[name] = np.asarray(explain.explain(model, x, name, target=t), dtype=np.float32)
            seconds[name] = time.perf_counter() - start
        if progress is not None:
            progress((len(methods), len(methods) + 1), desc="deletion and insertion curves")
        with torch.inference_mode():
            curves = explain.deletion_insertion_many(serving, x, attributions, t, CURVE_STEPS)
        maps = {name: share(a) for name, a in attributions.items()}
        scores = {name: {"deletion_auc": float(curves[name]["deletion_auc"]),
                         "insertion_auc": float(curves[name]["insertion_auc"]),
                         "seconds": round(seconds[name], 4), "signed": bool(explain.METHODS[name].signed)}
                  for name in methods}
        return assessment, t, maps, scores

    def info(self) -> dict:
        """Where the weights came from and what the evaluation says (the /model_info endpoint)."""
        m = self.artefacts.metrics or {}
        return {"source": self.loaded.source, "folder": str(self.loaded.folder), "fallback": self.loaded.fallback,
                "parameters": count_parameters(self.model), "config": dict(vars(self.model.config)),
                "test_accuracy": m.get("accuracy"), "ece": (m.get("calibration") or {}).get("ece"),
                "methods": list(explain.METHODS), "missing_artefacts": self.artefacts.problems,
                "ood": ({"score": self.detector.score_name, "threshold": self.detector.threshold}
                        if self.detector is not None else {"unavailable": self.loaded.detector_error or "no detector"}),
                "photo_verdict": ({"score": self.verdict.detector.score_name, "threshold": self.verdict.detector.threshold}
                                  if self.verdict is not None else {"unavailable": self.verdict_error}),
                "drawing_verdict": ({"score": self.drawing_detector.score_name, "threshold": self.drawing_detector.threshold}
                                    if self.drawing_detector is not None else {"unavailable": self.drawing_error})}
