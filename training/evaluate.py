"""Evaluate a model as it is served: probabilities, metrics, calibration, temperature, plots, photos.

The test set is read once, for the report; choices (checkpoint, temperature) are made on
validation by train.py with the functions here. `--photos` adds real phone photos (strict and
coarse accuracy per folder, as defined in the photo set's README).

    python -m training.evaluate --model weights --dataset ../shared/data/fashion_mnist
    python -m training.evaluate --model weights --dataset ../shared/data/fashion_mnist --photos ../shared/data/clothing_photos
"""
from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from modelrepo import artefacts
from training.config import EVAL_OUT, DataConfig
from training.data import COARSE_GROUPS, PHOTO_FOLDERS, load_images, load_photo_looks
from model import CLASS_NAMES, FashionCNN, WeightsError, config_dict
from modelrepo.folder import open_model
from imaging.preprocess import normalize


@torch.no_grad()
def predict_probs(model: torch.nn.Module, looks: torch.Tensor, batch_size: int = 1000,
                  device: torch.device | str = "cpu") -> torch.Tensor:
    """Softmax probabilities (N, C) for looks (N, 28, 28), exactly as served (`model.predict_proba`).

    A network without `predict_proba` (no flip averaging, no temperature) gets a plain softmax.
    """
    model.eval()
    proba = getattr(model, "predict_proba", lambda xb: model(xb).float().softmax(-1))
    config = getattr(model, "config", None)
    norm = (config.mean, config.std) if config is not None else ()
    return torch.cat([proba(normalize(looks[i:i + batch_size][:, None], *norm).to(device)).cpu()
                      for i in range(0, len(looks), batch_size)])


@torch.no_grad()
def fit_temperature(model: FashionCNN, looks: torch.Tensor, labels: torch.Tensor) -> tuple[float, dict]:
    """The softmax temperature that minimises the validation NLL of the served probabilities.

    Label smoothing leaves the network under-confident; one scalar fitted on validation corrects
    that without changing any prediction (Guo et al. 2017). A grid rather than LBFGS: one
    dimension, nothing to tune. Returns T and the NLLs.
    """
    model.eval()
    x = normalize(looks[:, None], model.config.mean, model.config.std)
    with torch.no_grad():
        logits = torch.cat([model.served_logits(model.served_features(x[i:i + 1000]))
                            for i in range(0, len(x), 1000)], dim=1)   # (V, N, C)

    def nll(t: float) -> float:
        p = (logits / t).softmax(-1).mean(0)          # exactly predict_proba at temperature t
        return F.nll_loss(p.clamp_min(1e-12).log(), labels).item()

    grid = [round(0.30 + 0.01 * i, 2) for i in range(271)]   # 0.30 .. 3.00
    t = min(grid, key=nll)
    return t, {"temperature": t, "val_nll_t1": nll(1.0), "val_nll_calibrated": nll(t)}


def with_temperature(model: FashionCNN, t: float) -> FashionCNN:
    """A copy whose config (and so config.json) carries temperature t."""
    calibrated = FashionCNN(**config_dict(model) | {"temperature": t})
    calibrated.load_state_dict(model.state_dict())
    return calibrated.eval()


def wilson_interval(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval of a proportion k/n (better than the normal one near 1)."""
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return centre - half, centre + half


def mcnemar(ours, theirs) -> dict:
    """McNemar's test of two models' right/wrong answers on the same images (McNemar 1947), in its
    exact binomial form (Dietterich 1998): only the images where the two disagree count.

    Args:
        ours, theirs: right (True) or wrong per image, (N,) bool arrays or tensors.
    Returns: {"ours_only": right only for ours, "theirs_only": right only for theirs, "p_value": two-sided}.
    """
    ours, theirs = np.asarray(ours, dtype=bool), np.asarray(theirs, dtype=bool)
    b, c = int((ours & ~theirs).sum()), int((~ours & theirs).sum())
    n = b + c
    tail = sum(math.comb(n, k) for k in range(min(b, c) + 1))       # exact: big integers, no underflow
    return {"ours_only": b, "theirs_only": c, "p_value": min(1.0, 2 * tail / 2 ** n) if n else 1.0}


def paired_t_p(differences) -> float:
    """Two-sided p of the paired t-test (Student 1908) on per-pair differences (e.g. two recipes at
    the same seeds), from the closed form of the t distribution for integer degrees of freedom
    (Abramowitz & Stegun 1964, 26.7.3 and 26.7.4): no SciPy needed."""
    d = np.asarray(differences, dtype=float)
    if len(d) < 2:
        raise ValueError(f"a paired t-test needs at least 2 differences, got {len(d)}")
    nu, sd = len(d) - 1, d.std(ddof=1)
    if sd == 0:
        return 1.0 if d.mean() == 0 else 0.0
    theta = math.atan(abs(d.mean()) / (sd / math.sqrt(len(d))) / math.sqrt(nu))
    c2, term, total = math.cos(theta) ** 2, 1.0, 1.0
    if nu % 2:        # odd: P(|T| < t) = 2/pi (theta + sin cos (1 + 2/3 cos^2 + 2*4/(3*5) cos^4 + ...))
        for k in range(1, (nu - 1) // 2):
            term *= c2 * (2 * k) / (2 * k + 1)
            total += term
        inside = 2 / math.pi * (theta + (math.sin(theta) * math.cos(theta) * total if nu > 1 else 0.0))
    else:             # even: P(|T| < t) = sin (1 + 1/2 cos^2 + 1*3/(2*4) cos^4 + ...)
        for k in range(1, nu // 2):
            term *= c2 * (2 * k - 1) / (2 * k)
            total += term
        inside = math.sin(theta) * total
    return max(0.0, 1.0 - inside)


def calibration(probs: torch.Tensor, labels: torch.Tensor, n_bins: int = 15) -> dict:
    """Expected calibration error (Guo et al. 2017) over equal-width confidence bins."""
    conf, pred = probs.max(1)
    correct = (pred == labels).float()
    edges = torch.linspace(0, 1, n_bins + 1)
    bins, ece = [], 0.0
    for lo, hi in zip(edges[:-1], edges[1:]):
        m = (conf > lo) & (conf <= hi)
        if m.any():
            acc, c = correct[m].mean().item(), conf[m].mean().item()
            ece += m.float().mean().item() * abs(acc - c)
            bins.append({"lo": lo.item(), "hi": hi.item(), "count": int(m.sum()), "accuracy": acc, "confidence": c})
    return {"ece": ece, "n_bins": n_bins, "bins": bins}


def classification_metrics(probs: torch.Tensor, labels: torch.Tensor, names=CLASS_NAMES) -> dict:
    """Accuracy with its 95% interval, per-class precision/recall/F1, confusion matrix, calibration."""
    pred = probs.argmax(1)
    k = len(names)
    cm = torch.zeros(k, k, dtype=torch.long)
    cm.index_put_((labels, pred), torch.ones_like(labels), accumulate=True)   # rows: true, cols: predicted
    n, correct = len(labels), int(cm.trace())
    per_class = {}
    for i, name in enumerate(names):
        tp = cm[i, i].item()
        precision = tp / max(1, cm[:, i].sum().item())
        recall = tp / max(1, cm[i].sum().item())
        f1 = 2 * precision * recall / max(1e-12, precision + recall)
        per_class[name] = {"precision": precision, "recall": recall, "f1": f1, "support": cm[i].sum().item()}
    lo, hi = wilson_interval(correct, n)
    return {"accuracy": correct / n, "accuracy_ci95": [lo, hi], "n": n,
            "macro_f1": sum(c["f1"] for c in per_class.values()) / k,
            "per_class": per_class, "confusion_matrix": cm.tolist(),
            "calibration": calibration(probs, labels)}


# ---------------------------------------------------------------------------------------------
# Real photos
# ---------------------------------------------------------------------------------------------

# Issue #18's bars for real photos, which a choice made on photo validation must meet.
PHOTO_STRICT_BAR = 0.75    # strict accuracy over all mapped folders
PHOTO_FOLDER_BAR = 0.50    # strict accuracy of every mapped folder (above, not at)


def strict_hits(model: FashionCNN, looks: torch.Tensor, allowed: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Predicted classes (N,) and whether each is one of the photo's right classes (N,) bool."""
    pred = predict_probs(model, looks).argmax(1)
    return pred, allowed.gather(1, pred[:, None])[:, 0]


def strict_by_folder(strict: torch.Tensor, folders: list[str]) -> dict[str, float]:
    """Strict accuracy of each folder, in the order the folders first appear."""
    return {f: strict[torch.tensor([g == f for g in folders])].float().mean().item() for f in dict.fromkeys(folders)}


def meets_photo_bars(strict: float, per_folder: dict[str, float]) -> bool:
    return strict >= PHOTO_STRICT_BAR and min(per_folder.values()) > PHOTO_FOLDER_BAR


def photo_metrics(model: FashionCNN, folder: str | Path, split: str = "validation") -> dict:
    """Strict and coarse accuracy over the mapped folders, per folder, and a folder x class table,
    of the network that answers photos (`for_photos`)."""
    looks, allowed, folders = load_photo_looks(folder, split)
    pred, strict = strict_hits(model.for_photos(), looks, allowed)      # photos meet the photo BatchNorm
    names = list(model.label_names)
    coarse = torch.tensor([names[p] in COARSE_GROUPS[PHOTO_FOLDERS[f].coarse] for p, f in zip(pred.tolist(), folders)])
    per_folder, table = {}, {}
    for f in dict.fromkeys(folders):
        rows = torch.tensor([g == f for g in folders])
        per_folder[f] = {"n": int(rows.sum()), "strict": strict[rows].float().mean().item(),
                         "coarse": coarse[rows].float().mean().item()}
        table[f] = {name: int(((pred == c) & rows).sum()) for c, name in enumerate(names)}
    return {"split": split, "n": len(folders), "strict_accuracy": strict.float().mean().item(),
            "coarse_accuracy": coarse.float().mean().item(), "per_folder": per_folder, "confusion": table}


# ---------------------------------------------------------------------------------------------
# Writing evaluation/
# ---------------------------------------------------------------------------------------------

def save_plots(folder: Path, metrics: dict, history: list[dict]) -> None:
    """confusion_matrix.png, reliability.png and (after training) training_curves.png."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    cm = np.array(metrics["confusion_matrix"])
    fig, ax = plt.subplots(figsize=(7, 6))
    ax.imshow(cm, cmap="Blues")
    for (i, j), v in np.ndenumerate(cm):
        ax.text(j, i, v, ha="center", va="center", fontsize=7, color="white" if v > cm.max() / 2 else "black")
    ax.set(xticks=range(len(CLASS_NAMES)), yticks=range(len(CLASS_NAMES)), xlabel="predicted", ylabel="true",
           title=f"Test confusion matrix (accuracy {metrics['accuracy']:.2%})")
    ax.set_xticklabels(CLASS_NAMES, rotation=45, ha="right"), ax.set_yticklabels(CLASS_NAMES)
    fig.tight_layout(), fig.savefig(folder / artefacts.CONFUSION_PNG, dpi=100), plt.close(fig)

    bins = metrics["calibration"]["bins"]
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.plot([0, 1], [0, 1], "--", color="gray", label="perfect calibration")
    ax.plot([b["confidence"] for b in bins], [b["accuracy"] for b in bins], "o-", label="model")
    ax.set(xlabel="confidence", ylabel="accuracy", title=f"Reliability (ECE {metrics['calibration']['ece']:.4f})")
    ax.legend(), fig.tight_layout(), fig.savefig(folder / artefacts.RELIABILITY_PNG, dpi=100), plt.close(fig)

    if history:
        fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4))
        ep = [h["epoch"] for h in history]
        a1.plot(ep, [h["train_loss"] for h in history]), a1.set(xlabel="epoch", ylabel="train loss (label-smoothed)")
        a2.plot(ep, [h["train_accuracy"] for h in history], label="train (augmented)")
        if "val_accuracy" in history[0]:   # a final fit (--val-size 0) has none
            a2.plot(ep, [h["val_accuracy"] for h in history], label="validation")
        a2.set(xlabel="epoch", ylabel="accuracy"), a2.legend()
        fig.tight_layout(), fig.savefig(folder / artefacts.CURVES_PNG, dpi=100), plt.close(fig)


def write_evaluation(out: Path, model: FashionCNN, looks: torch.Tensor, labels: torch.Tensor, raw: np.ndarray,
                     history: list[dict], extra: dict, device="cpu") -> dict:
    """Evaluate on the test set once and write evaluation/: metrics.json, plots, misclassified.npz, samples.npz."""
    folder = out / artefacts.EVALUATION
    folder.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    probs = predict_probs(model, looks, device=device)
    metrics = classification_metrics(probs, labels) | {"tta": model.config.flip_tta,
                                                       "eval_seconds": time.perf_counter() - t0}
    metrics |= extra
    artefacts.write_metrics(out, metrics)
    conf, pred = probs.max(1)
    wrong = (pred != labels).nonzero().flatten()
    artefacts.write_mistakes(out, index=wrong.numpy(), true=labels[wrong].numpy(), pred=pred[wrong].numpy(),
                             confidence=conf[wrong].numpy(), probs=probs[wrong].numpy(), images=raw[wrong.numpy()])
    # A fixed, class-balanced sample of test images: the dashboard's examples and the Trust precompute.
    sample = torch.cat([(labels == c).nonzero().flatten()[:10] for c in range(len(CLASS_NAMES))])
    artefacts.write_samples(out, index=sample.numpy(), label=labels[sample].numpy(), pred=pred[sample].numpy(),
                            images=raw[sample.numpy()])
    save_plots(folder, metrics, history)
    return metrics


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--model", required=True, help="a local folder or a Hub repo id")
    p.add_argument("--dataset", default=DataConfig.dataset, help="Hub dataset id or a local folder in the same layout")
    p.add_argument("--out", type=Path, default=EVAL_OUT, help="folder for evaluation/")
    p.add_argument("--photos", default=None, help="a clothing_photos folder: adds real-photo accuracy")
    p.add_argument("--device", default="cpu")
    return p.parse_args(argv)


def evaluate_folder(model: FashionCNN, data: DataConfig, out: Path, device: torch.device | str, extra: dict,
                    history: list[dict] | None = None) -> dict:
    """Test-set metrics (and photo metrics when data.photos names a photo set) written to out/evaluation/."""
    looks, labels, raw = load_images(data.dataset, "test")   # the test set: once, for the report
    out.mkdir(parents=True, exist_ok=True)
    if data.photos:
        extra = extra | {"photos": photo_metrics(model.cpu(), data.photos)}
    return write_evaluation(out, model, looks, labels, raw, history or [], extra, device)


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        model = open_model(args.model, args.device).model
    except WeightsError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    data = DataConfig(dataset=args.dataset, photos=args.photos)
    metrics = evaluate_folder(model, data, args.out, args.device, {"model_source": str(args.model)})
    if "photos" in metrics:
        photos = metrics["photos"]
        print(f"photo_strict_accuracy={photos['strict_accuracy']:.4f} photo_coarse_accuracy={photos['coarse_accuracy']:.4f}")
    print(f"test_accuracy={metrics['accuracy']:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
