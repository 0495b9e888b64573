"""Out-of-distribution (OOD) scores for the Fashion-MNIST classifier: is this image like the training data?

This module owns the features the scores read (`features`: the penultimate vector; `FashionCNN.served_features`:
the pooled output of every stage, per served view), the candidate scores (`SCORES`), the fitted
detector (`OODDetector`: statistics, threshold, score name) and its two files next to the weights,
`ood.safetensors` (tensors) and `ood.json` (score name, threshold, shapes). `train.py --fit-ood`
(training/fit_ood.py) fits it and chooses the score on validation; bench/ood.py measures it. It
imports nothing from training or UI code.

    >>> from model import load_model
    >>> from imaging.preprocess import preprocess
    >>> from modelrepo.ood import OODDetector
    >>> model = load_model("weights")
    >>> detector = OODDetector.load("weights", model)
    >>> probs, score = detector.predict(model, preprocess(img)[None])   # one forward pass for both
    >>> detector.flag(score)            # True: unlike the training images, do not trust `probs`

A score is higher the further an image is from the training data. The candidates:

- "msp": minus the maximum softmax probability as served (Hendrycks & Gimpel, "A Baseline for
  Detecting Misclassified and Out-of-Distribution Examples in Neural Networks", ICLR 2017).
- "energy": minus T * logsumexp(logits / T), the free energy of the logits (Liu, Wang, Owens & Li,
  "Energy-based Out-of-distribution Detection", NeurIPS 2020), averaged over the served views.
- "mahalanobis": the smallest Mahalanobis distance from the penultimate features to a class mean,
  one covariance shared by the classes (Lee, Lee, Lee & Shin, "A Simple Unified Framework for
  Detecting Out-of-Distribution Samples and Adversarial Attacks", NeurIPS 2018; features only,
  without their input perturbation).
- "gda": minus the log density of the penultimate features under a mixture of class-conditional
  Gaussians, one covariance per class, fitted after training (Mukhoti, Kirsch, van Amersfoort,
  Torr & Gal, "Deep Deterministic Uncertainty: A New Simple Baseline", CVPR 2023, arXiv:2102.11582).
- "gda-layers": the same density on the globally pooled output of all three stages (16 + 64 + 192
  values for the shipped widths): earlier layers see stroke width and texture, which the
  penultimate layer partly discards (Lee et al. 2018 also read several layers).
- "gda-layers+look": the same density on the pooled stages and six statistics of the look together
  (`look_stats`: ink, brightness, edges, interior texture, flat share), one Gaussian per class over
  both. Pooling keeps how much a stage fires, not whether the garment's inside has any texture: a
  smooth synthetic fill (a gradient, a blank lit surface) can pool like a plain garment, while every
  scanned or photographed garment has texture. The statistics measure the input's complexity (in
  the spirit of Serra et al., "Input Complexity and Out-of-distribution Detection with
  Likelihood-based Generative Models", ICLR 2020); modelled jointly with the features, a texture
  is judged against what garments with those features have, not against all garments.

The statistics are fitted on training images only; the threshold is a quantile of held-out
in-distribution scores (`fit(..., keep=0.95)` lets 95% of them pass).
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import torch

from model import WEIGHTS_FILE, FashionCNN

SCORES = ("msp", "energy", "mahalanobis", "gda", "gda-layers", "gda-layers+look")
DETECTOR_FILE, META_FILE = "ood.safetensors", "ood.json"
FORMAT_VERSION = 1
# Covariances get this fraction of their mean variance added on the diagonal: a feature that never
# fires on training images would otherwise make them singular (DDU's "jitter"). Small, so such a
# feature firing on an input still counts heavily against it.
RIDGE = 1e-4
INK = 0.05      # a look pixel above this is ink (the foreground level of the Fashion-MNIST look)
# One grey level of an 8-bit image on the look's scale: the texture floor, and, twice it, the
# largest |Laplacian| that still counts as flat (a linear ramp rounded to 8 bits has 0, 1 or 2).
GREY_LEVEL = 1 / 255
LOOK_STATS = 6  # the width of `look_stats`
TENSOR_FIELDS = ("means", "whiten", "log_prior")
NEEDS = {"msp": (), "energy": (), "mahalanobis": TENSOR_FIELDS[:2], "gda": TENSOR_FIELDS,
         "gda-layers": TENSOR_FIELDS, "gda-layers+look": TENSOR_FIELDS}


class OODError(ValueError):
    """The detector files are missing, damaged or do not fit the model; the message says which and why."""


# ---------------------------------------------------------------------------------------------
# What the scores read: pooled features per view, their logits, statistics of the look
# ---------------------------------------------------------------------------------------------

def penultimate(model: FashionCNN, views: torch.Tensor) -> torch.Tensor:
    """The penultimate part (..., D) of `FashionCNN.served_features`' output."""
    return views[..., -model.head[-1].in_features:]


@torch.no_grad()
def features(model: FashionCNN, x: torch.Tensor) -> torch.Tensor:
    """Penultimate features (B, D) of a normalised batch (B, 1, 28, 28): the pooled vector before the
    Linear, averaged over the served views (the mirror is as much the served image as the image)."""
    return penultimate(model, model.served_features(x)).mean(0)


def look_stats(model: FashionCNN, x: torch.Tensor) -> torch.Tensor:
    """Six statistics (B, LOOK_STATS) of a normalised batch (B, 1, 28, 28), on the [0, 1] look scale.

    Ink fraction, mean brightness of the ink, fraction of bright pixels, edge density (mean
    absolute difference between neighbours): a garment is a filled silhouette; a digit or a sketch
    is thin strokes, noise is all edges, a blank image has no ink. Then the inside of the ink (ink
    pixels whose four neighbours are ink too): its texture, log(mean |Laplacian| + one grey level),
    and its flat share, the fraction where |Laplacian| is at most two grey levels. Fabric, seams,
    folds and sensor noise give every scanned or photographed garment texture; a ramp, a blank
    lit surface or a flat fill has almost none (log scale: the ratio to a garment's texture counts).
    """
    look = (x[:, 0].float() * model.config.std + model.config.mean).clamp(0, 1)   # (B, H, W)
    ink = look > INK
    ink_frac = ink.float().mean((1, 2))
    ink_mean = (look * ink).sum((1, 2)) / ink.sum((1, 2)).clamp(min=1)
    bright = (look > 0.5).float().mean((1, 2))
    edges = (look[:, 1:] - look[:, :-1]).abs().mean((1, 2)) + (look[:, :, 1:] - look[:, :, :-1]).abs().mean((1, 2))
    centre = look[:, 1:-1, 1:-1]
    laplacian = (4 * centre - look[:, :-2, 1:-1] - look[:, 2:, 1:-1] - look[:, 1:-1, :-2] - look[:, 1:-1, 2:]).abs()
    inside = ink[:, 1:-1, 1:-1] & ink[:, :-2, 1:-1] & ink[:, 2:, 1:-1] & ink[:, 1:-1, :-2] & ink[:, 1:-1, 2:]   # (B, H-2, W-2)
    n_inside = inside.sum((1, 2)).clamp(min=1)
    texture = ((laplacian * inside).sum((1, 2)) / n_inside + GREY_LEVEL).log()
    flat = ((laplacian <= 2 * GREY_LEVEL) & inside).sum((1, 2)) / n_inside
    return torch.stack([ink_frac, ink_mean, bright, edges, texture, flat], 1)


def density_input(model: FashionCNN, score_name: str, views: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """The vector (B, D) a score's Gaussians model: view-averaged penultimate or all-stage features,
    with `look_stats` of the normalised input x (B, 1, 28, 28) appended for "gda-layers+look"."""
    f = (views if score_name.startswith("gda-layers") else penultimate(model, views)).mean(0)
    return torch.cat([f, look_stats(model, x)], 1) if score_name == "gda-layers+look" else f


# ---------------------------------------------------------------------------------------------
# Gaussians: fitted in float64, stored as means and whitening factors
# ---------------------------------------------------------------------------------------------

def fit_gaussians(x: torch.Tensor, labels: torch.Tensor, num_classes: int, tied: bool
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Class means (C, D), whitening factors (K, D, D) and log class priors (C,) of samples x (N, D).

    W is lower triangular with W (Sigma + ridge) W^T = I, so |W (x - mu)|^2 is the squared
    Mahalanobis distance: K = 1 shares one covariance (Lee et al.), K = C gives each class its own (DDU).
    """
    x, labels = x.double(), labels.long()
    counts = torch.bincount(labels, minlength=num_classes).double()
    if len(counts) != num_classes or (counts < 2).any():
        raise ValueError(f"every one of {num_classes} classes needs at least 2 samples, got counts {counts.tolist()}")
    means = torch.zeros(num_classes, x.shape[1], dtype=torch.float64).index_add_(0, labels, x) / counts[:, None]
    centred = x - means[labels]
    if tied:
        covs = (centred.T @ centred / len(x))[None]
    else:
        covs = torch.stack([centred[labels == c].T @ centred[labels == c] / counts[c] for c in range(num_classes)])
    whiten = torch.stack([_whitener(cov) for cov in covs])
    return means.float(), whiten.float(), (counts / counts.sum()).log().float()


def _whitener(cov: torch.Tensor) -> torch.Tensor:
    eye = torch.eye(len(cov), dtype=cov.dtype)
    chol = torch.linalg.cholesky(cov + RIDGE * cov.diagonal().mean().clamp(min=1e-12) * eye)
    return torch.linalg.solve_triangular(chol, eye, upper=False)


def sq_distances(x: torch.Tensor, means: torch.Tensor, whiten: torch.Tensor) -> torch.Tensor:
    """Squared Mahalanobis distances (B, C) of x (B, D) to each class mean, with factors (K, D, D)."""
    if len(whiten) == 1:    # tied: whiten once, then plain distances (C times fewer products)
        return torch.cdist(x @ whiten[0].T, means @ whiten[0].T).square()
    z = torch.einsum("bcd,ced->bce", x[:, None] - means[None], whiten)
    return z.square().sum(-1)


def log_density(x: torch.Tensor, means: torch.Tensor, whiten: torch.Tensor, log_prior: torch.Tensor) -> torch.Tensor:
    """log p(x) (B,) under the mixture sum_c prior_c N(mu_c, Sigma_c)."""
    half_log_det_precision = whiten.diagonal(dim1=-2, dim2=-1).log().sum(-1)        # (K,)
    log_norm = -0.5 * x.shape[1] * math.log(2 * math.pi)
    return (log_prior - 0.5 * sq_distances(x, means, whiten) + half_log_det_precision + log_norm).logsumexp(-1)


# ---------------------------------------------------------------------------------------------
# The detector
# ---------------------------------------------------------------------------------------------

@dataclass
class OODDetector:
    """A fitted OOD score and its threshold; scores above `threshold` are flagged.

    means (C, D), whiten (K, D, D), log_prior (C,): the Gaussians of `density_input` (K = 1 for
    "mahalanobis", C otherwise). Unused ones are None.
    """
    score_name: str
    threshold: float = math.inf
    means: torch.Tensor | None = None
    whiten: torch.Tensor | None = None
    log_prior: torch.Tensor | None = None

    def __post_init__(self):
        if self.score_name not in SCORES:
            raise OODError(f"unknown OOD score {self.score_name!r}: expected one of {SCORES}")

    @torch.no_grad()
    def score(self, model: FashionCNN, x: torch.Tensor, material: torch.Tensor | None = None) -> torch.Tensor:
        """OOD scores (B,) of a normalised batch (B, 1, 28, 28): higher = further from the training data
        (`material`: as in `score_views`)."""
        return self.score_views(model, model.served_features(x), x)

    @torch.no_grad()
    def predict(self, model: FashionCNN, x: torch.Tensor, material: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """(probabilities (B, C) as `predict_proba` serves them, OOD scores (B,)) from one forward pass."""
        views = model.served_features(x)
        return model.served_proba(views), self.score_views(model, views, x)

    def flag(self, scores: torch.Tensor) -> torch.Tensor:
        """True where a score is above the threshold: the image is unlike the training data."""
        return scores > self.threshold

    @torch.no_grad()
    def score_views(self, model: FashionCNN, views: torch.Tensor, x: torch.Tensor,
                    material: torch.Tensor | None = None) -> torch.Tensor:
        """OOD scores (B,) from `FashionCNN.served_features`' output (V, B, F) and the normalised input x (B, 1, 28, 28).

        `material` is taken, and not used, so that every detector is called alike
        (modelrepo/verdict.PhotoDetector weighs a photo's): this one judges the network's view alone."""
        name = self.score_name
        if name == "msp":
            return -model.served_proba(views).amax(-1)
        if name == "energy":
            t = model.config.temperature
            return (-t * (model.served_logits(views) / t).logsumexp(-1)).mean(0)
        f = density_input(model, name, views, x)
        if name == "mahalanobis":
            return sq_distances(f, self.means, self.whiten).amin(-1)
        return -log_density(f, self.means, self.whiten, self.log_prior)

    def tensors(self) -> dict[str, torch.Tensor]:
        return {k: getattr(self, k).contiguous() for k in TENSOR_FIELDS if getattr(self, k) is not None}

    def save(self, folder: str | Path, weights: str | Path | None = None) -> None:
        """Write ood.safetensors (the statistics) and ood.json (score name, threshold, shapes) into folder.

        ood.json also records the sha256 of the weights the statistics belong to: `weights`, by
        default the folder's own model.safetensors when there is one.
        """
        from safetensors.torch import save_file
        if not math.isfinite(self.threshold):
            raise OODError("this detector has no threshold yet: fit it with ood.fit")
        folder = Path(folder)
        weights = Path(weights) if weights else folder / WEIGHTS_FILE
        folder.mkdir(parents=True, exist_ok=True)
        tensors = self.tensors()
        save_file(tensors, str(folder / DETECTOR_FILE))
        meta = {"format_version": FORMAT_VERSION, "score": self.score_name, "threshold": self.threshold,
                "higher_is_ood": True, "shapes": {k: list(v.shape) for k, v in tensors.items()},
                "weights_sha256": file_sha256(weights) if weights.is_file() else None}
        (folder / META_FILE).write_text(json.dumps(meta, indent=2) + "\n")

    @classmethod
    def load(cls, folder: str | Path, model: FashionCNN | None = None) -> "OODDetector":
        """Read a detector written by `save`; with `model`, also check that it fits that model's features.

        Raises:
            OODError: a missing or unreadable file, an unknown score, missing or misshapen
                statistics, values that are not finite, statistics of another architecture, or
                (when the folder holds model.safetensors) statistics fitted for other weights.
        """
        folder = Path(folder)
        meta = _read_meta(folder / META_FILE)
        tensors = _read_tensors(folder / DETECTOR_FILE)
        _check_tensors(folder / DETECTOR_FILE, meta, tensors)
        _check_weights(folder, meta)
        # clone: fresh, aligned memory, so scores repeat bit for bit those of the detector that was saved
        detector = cls(meta["score"], float(meta["threshold"]), **{k: v.float().clone() for k, v in tensors.items()})
        if model is not None:
            _check_fits(folder / DETECTOR_FILE, detector, model)
        return detector


def file_sha256(path: Path) -> str:
    import hashlib
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _check_weights(folder: Path, meta: dict) -> None:
    # Statistics of other weights fit any model of the same shape and silently mean nothing.
    recorded, weights = meta.get("weights_sha256"), folder / WEIGHTS_FILE
    if recorded and weights.is_file() and file_sha256(weights) != recorded:
        raise OODError(f"{folder / META_FILE}: fitted for other weights than {weights} (sha256 differs): "
                       "refit with train.py --fit-ood")


def _read_meta(path: Path) -> dict:
    try:
        meta = json.loads(path.read_text())
    except FileNotFoundError:
        raise OODError(f"{path}: missing: no OOD detector in this folder (train.py --fit-ood fits one)") from None
    except (OSError, ValueError) as e:
        raise OODError(f"{path}: not readable JSON ({e})") from None
    if not isinstance(meta, dict) or not {"score", "threshold", "shapes"} <= set(meta):
        raise OODError(f"{path}: expected an object with 'score', 'threshold' and 'shapes'")
    if meta.get("format_version") != FORMAT_VERSION:
        raise OODError(f"{path}: format_version {meta.get('format_version')!r}; this code reads {FORMAT_VERSION}")
    if meta["score"] not in SCORES:
        raise OODError(f"{path}: unknown OOD score {meta['score']!r}: expected one of {SCORES}")
    t = meta["threshold"]
    if isinstance(t, bool) or not isinstance(t, (int, float)) or not math.isfinite(t):
        raise OODError(f"{path}: threshold {t!r} is not a finite number")
    return meta


def _read_tensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file
    if not path.is_file():
        raise OODError(f"{path}: missing ({META_FILE} is there, the statistics it describes are not)")
    try:
        return load_file(str(path))
    except Exception as e:  # safetensors raises several types for truncated or garbled files
        raise OODError(f"{path}: not a readable safetensors file ({e})"[:400]) from None


def _check_tensors(path: Path, meta: dict, tensors: dict[str, torch.Tensor]) -> None:
    name, shapes = meta["score"], meta["shapes"]
    expected = set(NEEDS[name]) - ({"log_prior"} if name == "mahalanobis" else set())
    if set(tensors) != expected:
        raise OODError(f"{path}: score {name!r} needs tensors {sorted(expected)}, the file has {sorted(tensors)}")
    for k, v in tensors.items():
        if list(v.shape) != shapes.get(k):
            raise OODError(f"{path}: {k} has shape {list(v.shape)}, {META_FILE} says {shapes.get(k)}")
        if not v.is_floating_point() or not torch.isfinite(v).all():
            raise OODError(f"{path}: {k} is not all finite floating-point values")
    if "means" in tensors:
        _check_gaussians(path, tensors, tied=name == "mahalanobis")


def _check_gaussians(path: Path, tensors: dict, tied: bool) -> None:
    means, whiten = tensors["means"], tensors["whiten"]
    if means.ndim != 2:
        raise OODError(f"{path}: means has shape {list(means.shape)}, expected (classes, features)")
    c, d = means.shape
    if list(whiten.shape) != [1 if tied else c, d, d]:
        raise OODError(f"{path}: whiten has shape {list(whiten.shape)}, expected {[1 if tied else c, d, d]}")
    if "log_prior" in tensors and list(tensors["log_prior"].shape) != [c]:
        raise OODError(f"{path}: log_prior has shape {list(tensors['log_prior'].shape)}, expected {[c]}")
    diagonal = whiten.diagonal(dim1=-2, dim2=-1)
    if not (diagonal > 0).all() or whiten.triu(1).any():
        raise OODError(f"{path}: whiten is not a whitening factor (lower triangular, positive diagonal)")


def _check_fits(path: Path, detector: OODDetector, model: FashionCNN) -> None:
    if detector.means is None:
        return
    widths, name = model.config.widths, detector.score_name
    d = (sum(widths) if name.startswith("gda-layers") else widths[-1]) + (LOOK_STATS if name == "gda-layers+look" else 0)
    expected = [model.config.num_classes, d]
    if list(detector.means.shape) != expected:
        raise OODError(f"{path}: statistics of shape {list(detector.means.shape)} do not fit this model "
                       f"({expected[0]} classes, {d} features for {detector.score_name!r}): fitted for other weights?")


# ---------------------------------------------------------------------------------------------
# Fitting
# ---------------------------------------------------------------------------------------------

def fit(model: FashionCNN, looks: torch.Tensor, labels: torch.Tensor, val_looks: torch.Tensor,
        keep: float = 0.95, score_name: str = "gda-layers", batch_size: int = 1000) -> OODDetector:
    """Fit `score_name`'s statistics on training looks (N, 28, 28) in [0, 1] with labels (N,) and set
    the threshold to the `keep` quantile of the scores of held-out in-distribution looks `val_looks`
    (a fraction `keep` of them pass). `val_looks` must not be among `looks`.
    """
    train_x = as_input(model, looks)
    detector = fit_statistics(model, views_in_batches(model, train_x, batch_size), train_x, labels, score_name)
    detector.threshold = threshold_at(detector_scores(detector, model, val_looks, batch_size), keep)
    return detector


def fit_statistics(model: FashionCNN, views: torch.Tensor, x: torch.Tensor, labels: torch.Tensor,
                   score_name: str) -> OODDetector:
    """The detector, without threshold, from training `FashionCNN.served_features` (V, N, F) and inputs x (N, 1, 28, 28)."""
    if score_name not in SCORES:
        raise OODError(f"unknown OOD score {score_name!r}: expected one of {SCORES}")
    if not NEEDS[score_name]:
        return OODDetector(score_name)
    tied = score_name == "mahalanobis"
    means, whiten, log_prior = fit_gaussians(density_input(model, score_name, views, x), labels,
                                             model.config.num_classes, tied)
    return OODDetector(score_name, means=means, whiten=whiten, log_prior=None if tied else log_prior)


def threshold_at(val_scores: torch.Tensor, keep: float) -> float:
    """The score under which a fraction `keep` of the held-out in-distribution scores lie."""
    if not 0 < keep < 1:
        raise ValueError(f"keep must be in (0, 1), got {keep}")
    return float(torch.quantile(val_scores.double(), keep))


def as_input(model: FashionCNN, looks: torch.Tensor) -> torch.Tensor:
    """Looks (N, 28, 28) in [0, 1] -> the normalised input (N, 1, 28, 28), with the model's mean and std."""
    return ((torch.as_tensor(looks, dtype=torch.float32) - model.config.mean) / model.config.std)[:, None]


@torch.no_grad()
def views_in_batches(model: FashionCNN, x: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
    """`FashionCNN.served_features` (V, N, F) of a normalised input (N, 1, 28, 28), in batches."""
    return torch.cat([model.served_features(x[i:i + batch_size]) for i in range(0, len(x), batch_size)], 1)


def detector_scores(detector: OODDetector, model: FashionCNN, looks: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
    """Scores (N,) of looks (N, 28, 28) in [0, 1], in batches."""
    x = as_input(model, looks)
    return torch.cat([detector.score(model, x[i:i + batch_size]) for i in range(0, len(x), batch_size)])
