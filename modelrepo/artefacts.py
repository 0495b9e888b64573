"""The files a model folder carries besides its weights, and one schema for each.

evaluate.py and explain/trust.py write them, the dashboard, the Space card, bench/ and the notebook
read them, all through this module:

    training_history.json     list of per-epoch entries {epoch, train_loss, train_accuracy, ...}
    base_training_history.json   the same, of the run the weights started from (--init-from), when the
                              last run did not start from scratch: the Model view shows the whole recipe
    evaluation/metrics.json   test-set metrics (METRICS_KEYS at least)
    evaluation/trust.json     per-method faithfulness and sanity results (explain/trust.py)
    evaluation/misclassified.npz, samples.npz   pickle-free arrays (MISTAKES_KEYS, SAMPLES_KEYS)
    evaluation/*.png          confusion matrix, reliability diagram, training curves
    neighbours.safetensors, neighbours.json   the nearest-training-images index (explain/neighbours.py)
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

EVALUATION = "evaluation"
HISTORY = "training_history.json"
BASE_HISTORY = "base_training_history.json"
# The nearest-training-images index (explain/neighbours.py owns its format); named here so the Hub
# download and the Space's upload carry it like the weights' other files.
NEIGHBOUR_FILES = ("neighbours.safetensors", "neighbours.json")
METRICS, TRUST, OOD = "metrics.json", "trust.json", "ood.json"
MISTAKES, SAMPLES = "misclassified.npz", "samples.npz"
CONFUSION_PNG, RELIABILITY_PNG, CURVES_PNG = "confusion_matrix.png", "reliability.png", "training_curves.png"

METRICS_KEYS = ("accuracy", "accuracy_ci95", "n", "macro_f1", "per_class", "confusion_matrix", "calibration")
MISTAKES_KEYS = ("index", "true", "pred", "confidence", "probs", "images")
SAMPLES_KEYS = ("index", "label", "pred", "images")


class ArtefactError(ValueError):
    """An artefact exists but does not follow its schema; the message names the file and the field."""


def _check(ok: bool, path: Path, what: str) -> None:
    if not ok:
        raise ArtefactError(f"{path.name}: {what}")


def read_metrics(path: Path) -> dict:
    m = json.loads(Path(path).read_text())
    _check(isinstance(m, dict), path, "not a JSON object")
    missing = [k for k in METRICS_KEYS if k not in m]
    _check(not missing, path, f"missing {missing}")
    acc = m["accuracy"]
    _check(isinstance(acc, (int, float)) and math.isfinite(acc) and 0 <= acc <= 1, path, f"accuracy {acc!r}")
    _check(isinstance(m["n"], int) and m["n"] > 0, path, f"n {m['n']!r}")
    return m


def read_history(path: Path) -> list:
    h = json.loads(Path(path).read_text())
    _check(isinstance(h, list) and all(isinstance(e, dict) and "epoch" in e for e in h), path,
           "not a list of epoch entries")
    return h


def read_trust(path: Path) -> dict:
    t = json.loads(Path(path).read_text())
    _check(isinstance(t, dict), path, "not a JSON object")
    return t


def _read_npz(path: Path, keys: tuple[str, ...]) -> dict:
    with np.load(path, allow_pickle=False) as z:
        d = {k: z[k] for k in z.files}
    missing = [k for k in keys if k not in d]
    _check(not missing, path, f"missing arrays {missing}")
    lengths = {len(d[k]) for k in keys}
    _check(len(lengths) == 1, path, "arrays of different lengths")
    _check(d["images"].dtype == np.uint8 and d["images"].shape[1:] == (28, 28), path, "images must be (N, 28, 28) uint8")
    return d


def read_mistakes(path: Path) -> dict:
    return _read_npz(path, MISTAKES_KEYS)


def read_samples(path: Path) -> dict:
    return _read_npz(path, SAMPLES_KEYS)


def write_metrics(folder: Path, metrics: dict) -> None:
    (folder / EVALUATION / METRICS).write_text(json.dumps(metrics, indent=2))


def write_mistakes(folder: Path, **arrays) -> None:
    """Compact and pickle-free: the dashboard's Mistakes view reads it with no dataset download."""
    arrays["confidence"] = arrays["confidence"].astype(np.float32)
    arrays["probs"] = arrays["probs"].astype(np.float16)
    np.savez_compressed(folder / EVALUATION / MISTAKES, **arrays)


def write_samples(folder: Path, **arrays) -> None:
    np.savez_compressed(folder / EVALUATION / SAMPLES, **arrays)


@dataclass
class Artefacts:
    """Every artefact of one model folder, each optional: a view says plainly what is missing."""
    folder: Path
    metrics: dict | None = None
    history: list | None = None
    base_history: list | None = None     # the start's run, for weights trained from other weights
    trust: dict | None = None
    mistakes: dict | None = None
    samples: dict | None = None
    problems: list[str] = field(default_factory=list)

    def png(self, name: str) -> str | None:
        path = self.folder / EVALUATION / name
        return str(path) if path.is_file() else None


def load_artefacts(folder: Path, shown_as=str) -> Artefacts:
    """Read what exists; each missing or damaged file becomes a sentence in `problems`.

    Args:
        shown_as: how a path is written in those sentences (the dashboard shortens it).
    """
    art = Artefacts(Path(folder))
    ev = art.folder / EVALUATION
    readers = {"metrics": (ev / METRICS, read_metrics), "history": (art.folder / HISTORY, read_history),
               "trust": (ev / TRUST, read_trust), "mistakes": (ev / MISTAKES, read_mistakes),
               "samples": (ev / SAMPLES, read_samples)}
    for name, (path, read) in readers.items():
        try:
            setattr(art, name, read(path))
        except FileNotFoundError:
            art.problems.append(f"`{shown_as(path)}` is missing")
        except Exception as e:  # a damaged artefact must not stop the app from classifying
            art.problems.append(f"`{shown_as(path)}` could not be read ({type(e).__name__}: {str(e)[:200]})")
    base = art.folder / BASE_HISTORY
    if base.is_file():                  # optional: a run from scratch has no start to show
        try:
            art.base_history = read_history(base)
        except Exception as e:  # as above: shown as a problem, the app still serves
            art.problems.append(f"`{shown_as(base)}` could not be read ({type(e).__name__}: {str(e)[:200]})")
    return art
