"""The three-way verdict on an input: a garment like the training images, a garment photo, or not a garment.

The Fashion-MNIST detector (modelrepo/ood.py) was fitted on the training images; it judges every
input the app routes neither as a photo nor as a drawing. A segmented photo is judged instead by the
photo detector kept here (`PhotoDetector`): Gaussians of the photo network's features
(`FashionCNN.for_photos`, its pooled stages plus `ood.look_stats`) and of what the segmented region
is made of (imaging/material.py) of garment photos, one per photo
folder, with a threshold set on held-out photos; with a background model (Gaussians of the same
features of photo crops that hold no garment, and of real images of other things: objects, animals,
plants, textures; training/not_garments.py), the score is the likelihood ratio of the two (Ren et
al. 2019, "Likelihood Ratios for Out-of-Distribution Detection", NeurIPS, arXiv:1906.02845: a density
of in-distribution data alone also rates highly what is merely simple or common in any photo, such as
a plain ground or a texture; dividing by a density of such background takes that part out). A drawing
(`preprocess.Seen.drawing`) is judged by
a detector of the same kind fitted on garment drawings, one Gaussian per class, over the features of
the network as trained (drawings meet its BatchNorm): a drawn silhouette, evenly lit with a sharp
edge, is as far from every Fashion-MNIST image as a digit is, but near the other garment drawings. Photos of garments differ from
Fashion-MNIST far more than Fashion-MNIST images differ from each other, so the Fashion-MNIST
threshold calls most of them "unlike the training data"; the photo detector asks only whether a photo
is like the garment photos.

    >>> from modelrepo.verdict import Verdict
    >>> verdict = Verdict.load("weights", model)                # None-free: raises VerdictError if absent
    >>> probs, score = verdict.detector.predict(model.for_photos(), x, material)   # material: Seen.material, (B, MATERIAL)
    >>> verdict.kind(photo=True, flagged=verdict.detector.flag(score))     # "garment-photo" or "not-a-garment"
    >>> verdict.reliability(0.83)                               # how often photos this confident were right

Two files beside the weights: `verdict.safetensors` (means, whiten, log_prior, and the background's
background_means, background_whiten, background_log_prior) and `verdict.json`
(the folders, the threshold, the reliability bins of held-out photos, the protocol, the weights'
sha256); the drawings' detector in two more of the same format (DRAWING_FILES, no bins).
training/fit_verdict.py writes them. This module imports model, modelrepo and imaging.material only.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import torch

from imaging.material import MATERIAL
from model import WEIGHTS_FILE, FashionCNN
from modelrepo.ood import LOOK_STATS, density_input, file_sha256, log_density

FASHION_MNIST_LIKE, GARMENT_PHOTO, NOT_A_GARMENT = "fashion-mnist-like", "garment-photo", "not-a-garment"
KINDS = (FASHION_MNIST_LIKE, GARMENT_PHOTO, NOT_A_GARMENT)
VERDICT_TENSORS, VERDICT_META = "verdict.safetensors", "verdict.json"
VERDICT_FILES = (VERDICT_META, VERDICT_TENSORS)
DRAWING_FILES = ("verdict_drawing.json", "verdict_drawing.safetensors")
FORMAT_VERSION = 2
# The photo features: every pooled stage and the look's statistics (ood.py's "gda-layers+look"):
# a segmented scene or texture can pool like a garment at the last stage while its look (ink, edges,
# inside texture) is unlike a garment's.
FEATURES = "gda-layers+look"
# The photo detector's features: those, then what the segmented region is made of
# (imaging/material.py: colour, grain, highlights), measured at the working resolution before the
# look is made. A coin, the moon or a page cut from its ground has a garment's silhouette and a flat
# inside at 28x28; its material is not fabric's. The drawings' detector keeps FEATURES.
MATERIAL_FEATURES = FEATURES + "+material"
TENSOR_FIELDS = ("means", "whiten", "log_prior")
BACKGROUND_FIELDS = tuple(f"background_{k}" for k in TENSOR_FIELDS)


class VerdictError(ValueError):
    """The verdict files are missing, damaged or do not fit the model; the message says which and why."""


def kind(photo: bool, flagged: bool) -> str:
    """The verdict of an input from its route (a segmented photo or not) and its detector's flag."""
    if flagged:
        return NOT_A_GARMENT
    return GARMENT_PHOTO if photo else FASHION_MNIST_LIKE


@dataclass
class PhotoDetector:
    """Gaussians (one per photo folder) of the photo network's features; scores above `threshold` are flagged.

    means (G, D), whiten (K, D, D) with K = 1 (one covariance shared) or G, log_prior (G,); the
    score is minus their log density. With the background Gaussians (background_means,
    background_whiten, background_log_prior, of the same shapes with their own G), two margins are
    taken and the score is the larger: the likelihood ratio (the background's log density minus the
    garments') over `ratio_threshold`, and minus the garments' log density over `density_threshold`,
    the far end of the garments' own scores. The second keeps what is unlike any photo (noise), on
    which both densities are so low that their ratio says nothing; `threshold` is then 0.
    With `features` MATERIAL_FEATURES the last MATERIAL features are the input's material
    (preprocess.Seen.material), given to every call as `material` (B, MATERIAL).
    Same calls as ood.OODDetector (and `material`), so the service serves either alike.
    """
    means: torch.Tensor
    whiten: torch.Tensor
    log_prior: torch.Tensor
    threshold: float = math.inf
    score_name: str = f"photo {FEATURES}"
    features: str = FEATURES
    background_means: torch.Tensor | None = None
    background_whiten: torch.Tensor | None = None
    background_log_prior: torch.Tensor | None = None
    ratio_threshold: float = math.inf
    density_threshold: float = math.inf

    @property
    def has_background(self) -> bool:
        return self.background_means is not None

    @property
    def uses_material(self) -> bool:
        return self.features == MATERIAL_FEATURES

    def tensors(self) -> dict[str, torch.Tensor]:
        return {k: getattr(self, k) for k in TENSOR_FIELDS + (BACKGROUND_FIELDS if self.has_background else ())}

    def density_features(self, model: FashionCNN, views: torch.Tensor, x: torch.Tensor,
                         material: torch.Tensor | None = None) -> torch.Tensor:
        """(B, D): what the Gaussians are of, from served_features (V, B, F), the normalised input
        x (B, 1, 28, 28) and, with MATERIAL_FEATURES, its material (B, MATERIAL)."""
        f = density_input(model, FEATURES, views, x)
        if not self.uses_material:
            return f
        if material is None or tuple(material.shape) != (len(f), MATERIAL):
            raise ValueError(f"this photo detector weighs the material of each photo: give material of shape "
                             f"({len(f)}, {MATERIAL}) (preprocess.Seen.material), not "
                             f"{None if material is None else tuple(material.shape)}")
        return torch.cat([f, material.to(f.dtype)], dim=1)

    @torch.no_grad()
    def parts(self, model: FashionCNN, views: torch.Tensor, x: torch.Tensor, material: torch.Tensor | None = None
              ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(minus the garments' log density, the likelihood ratio or None without a background), each (B,),
        from the inputs of `density_features`."""
        f = self.density_features(model, views, x, material)
        garments = -log_density(f, self.means, self.whiten, self.log_prior)
        if not self.has_background:
            return garments, None
        return garments, garments + log_density(f, self.background_means, self.background_whiten, self.background_log_prior)

    @torch.no_grad()
    def score_views(self, model: FashionCNN, views: torch.Tensor, x: torch.Tensor,
                    material: torch.Tensor | None = None) -> torch.Tensor:
        """Scores (B,) from served_features (V, B, F), the normalised input x (B, 1, 28, 28) and its material."""
        garments, ratio = self.parts(model, views, x, material)
        if ratio is None:
            return garments
        return torch.maximum(ratio - self.ratio_threshold, garments - self.density_threshold)

    @torch.no_grad()
    def score(self, model: FashionCNN, x: torch.Tensor, material: torch.Tensor | None = None) -> torch.Tensor:
        return self.score_views(model, model.served_features(x), x, material)

    @torch.no_grad()
    def predict(self, model: FashionCNN, x: torch.Tensor, material: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """(served probabilities (B, C), scores (B,)) from one forward pass of `model` (the photo network)."""
        views = model.served_features(x)
        return model.served_proba(views), self.score_views(model, views, x, material)

    def flag(self, scores: torch.Tensor) -> torch.Tensor:
        """True where a photo is unlike the garment photos: not a garment."""
        return scores > self.threshold


@dataclass
class Verdict:
    """The photo detector and how often held-out photos were right at each confidence."""
    detector: PhotoDetector
    folders: list[str]                      # the photo folder of each Gaussian
    bins: list[dict] = field(default_factory=list)   # {lo, hi, count, right, accuracy} of held-out garment photos
    meta: dict = field(default_factory=dict)          # the rest of verdict.json (protocol, sources)

    kind = staticmethod(kind)

    def reliability(self, top: float) -> dict | None:
        """The bin (lo, hi] that holds a top probability, or None."""
        return next((b for b in self.bins if b["lo"] < top <= b["hi"]), None)

    def save(self, folder: str | Path, weights: str | Path | None = None, files: tuple[str, str] = VERDICT_FILES) -> None:
        """Write `files` (verdict.json and verdict.safetensors, or DRAWING_FILES); the json records
        the sha256 of `weights` (default: the folder's model.safetensors)."""
        from safetensors.torch import save_file
        d = self.detector
        margins = (d.ratio_threshold, d.density_threshold) if d.has_background else ()
        if not all(math.isfinite(t) for t in (d.threshold, *margins)):
            raise VerdictError("the photo detector has no threshold yet")
        folder, (meta_file, tensor_file) = Path(folder), files
        weights = Path(weights) if weights else folder / WEIGHTS_FILE
        folder.mkdir(parents=True, exist_ok=True)
        tensors = {k: v.contiguous() for k, v in d.tensors().items()}
        save_file(tensors, str(folder / tensor_file))
        meta = {**self.meta, "format_version": FORMAT_VERSION, "features": d.features, "score_name": d.score_name,
                "threshold": d.threshold, "background": d.has_background,
                **({"ratio_threshold": d.ratio_threshold, "density_threshold": d.density_threshold} if d.has_background else {}),
                "higher_is_not_a_garment": True, "folders": self.folders, "reliability_bins": self.bins,
                "shapes": {k: list(v.shape) for k, v in tensors.items()},
                "weights_sha256": file_sha256(weights) if weights.is_file() else None}
        (folder / meta_file).write_text(json.dumps(meta, indent=2) + "\n")

    @classmethod
    def load(cls, folder: str | Path, model: FashionCNN | None = None, files: tuple[str, str] = VERDICT_FILES) -> "Verdict":
        """Read what `save` wrote into `files`; with `model`, check that the Gaussians fit its features.

        Raises:
            VerdictError: a missing or unreadable file, misshapen or non-finite statistics, or
                statistics of other weights (when the folder holds model.safetensors).
        """
        folder, (meta_file, tensor_file) = Path(folder), files
        meta = _read_meta(folder / meta_file)
        tensors = _read_tensors(folder / tensor_file, meta)
        recorded, weights = meta.get("weights_sha256"), folder / WEIGHTS_FILE
        if recorded and weights.is_file() and file_sha256(weights) != recorded:
            raise VerdictError(f"{folder / meta_file}: fitted for other weights than {weights}: "
                               "refit with python -m training.fit_verdict")
        margins = {k: float(meta[k]) for k in ("ratio_threshold", "density_threshold") if BACKGROUND_FIELDS[0] in tensors}
        detector = PhotoDetector(threshold=float(meta["threshold"]), score_name=str(meta.get("score_name", f"photo {FEATURES}")),
                                 features=meta["features"], **margins, **{k: v.float().clone() for k, v in tensors.items()})
        if model is not None:
            width = sum(model.config.widths) + LOOK_STATS + (MATERIAL if detector.uses_material else 0)
            if detector.means.shape[1] != width:
                raise VerdictError(f"{folder / tensor_file}: {detector.means.shape[1]} features, this model has "
                                   f"{width} of {detector.features}: fitted for other weights?")
        rest = {k: v for k, v in meta.items() if k not in ("folders", "reliability_bins", "shapes", "threshold",
                                                            "ratio_threshold", "density_threshold")}
        return cls(detector, list(meta["folders"]), list(meta["reliability_bins"]), rest)


def _read_meta(path: Path) -> dict:
    try:
        meta = json.loads(path.read_text())
    except FileNotFoundError:
        raise VerdictError(f"{path}: missing: no photo verdict in this folder "
                           "(python -m training.fit_verdict fits one)") from None
    except (OSError, ValueError) as e:
        raise VerdictError(f"{path}: not readable JSON ({e})") from None
    need = {"threshold", "folders", "reliability_bins", "shapes", "features"}
    if not isinstance(meta, dict) or not need <= set(meta):
        raise VerdictError(f"{path}: expected an object with {sorted(need)}")
    if meta.get("format_version") != FORMAT_VERSION or meta["features"] not in (FEATURES, MATERIAL_FEATURES):
        raise VerdictError(f"{path}: format {meta.get('format_version')!r} of {meta['features']!r} features; "
                           f"this code reads {FORMAT_VERSION} of {FEATURES!r} or {MATERIAL_FEATURES!r}")
    for key in ("threshold",) + (("ratio_threshold", "density_threshold") if meta.get("background") else ()):
        t = meta.get(key)
        if isinstance(t, bool) or not isinstance(t, (int, float)) or not math.isfinite(t):
            raise VerdictError(f"{path}: {key} {t!r} is not a finite number")
    for b in meta["reliability_bins"]:
        if not (isinstance(b, dict) and {"lo", "hi", "count", "accuracy"} <= set(b)):
            raise VerdictError(f"{path}: a reliability bin needs lo, hi, count and accuracy, got {b!r}"[:300])
    return meta


def _read_tensors(path: Path, meta: dict) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file
    try:
        tensors = load_file(str(path))
    except FileNotFoundError:
        raise VerdictError(f"{path}: missing (its json is there, the statistics it describes are not)") from None
    except Exception as e:  # safetensors raises several types for truncated or garbled files
        raise VerdictError(f"{path}: not a readable safetensors file ({e})"[:400]) from None
    if set(tensors) not in (set(TENSOR_FIELDS), set(TENSOR_FIELDS + BACKGROUND_FIELDS)):
        raise VerdictError(f"{path}: needs tensors {list(TENSOR_FIELDS)}, and either all or none of "
                           f"{list(BACKGROUND_FIELDS)}; has {sorted(tensors)}")
    if bool(meta.get("background")) != (BACKGROUND_FIELDS[0] in tensors):
        raise VerdictError(f"{path}: its json says background {meta.get('background')!r}, its tensors do not agree")
    for k, v in tensors.items():
        if list(v.shape) != meta["shapes"].get(k) or not v.is_floating_point() or not torch.isfinite(v).all():
            raise VerdictError(f"{path}: {k} is not {meta['shapes'].get(k)} finite floating-point values")
    g, d = tensors["means"].shape
    if len(meta["folders"]) != g:
        raise VerdictError(f"{path}: {g} Gaussians for {len(meta['folders'])} folders")
    for prefix in ("", "background_") if BACKGROUND_FIELDS[0] in tensors else ("",):
        means, whiten, log_prior = (tensors[prefix + k] for k in TENSOR_FIELDS)
        n = len(means)
        if means.shape[1] != d or whiten.shape[0] not in (1, n) or tuple(whiten.shape[1:]) != (d, d) \
                or list(log_prior.shape) != [n]:
            raise VerdictError(f"{path}: shapes {meta['shapes']} do not fit {g} folders of {d} features")
        if not (whiten.diagonal(dim1=-2, dim2=-1) > 0).all() or whiten.triu(1).any():
            raise VerdictError(f"{path}: {prefix}whiten is not a whitening factor (lower triangular, positive diagonal)")
    return tensors
