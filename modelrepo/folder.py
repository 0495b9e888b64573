"""Opening and writing a model folder: the network, and the out-of-distribution detector beside it.

    >>> from modelrepo.folder import open_model
    >>> opened = open_model("weights")                 # or a Hub repo id, downloaded within a timeout
    >>> opened.model, opened.detector                  # FashionCNN; OODDetector or None (opened.detector_error says why)

model.py reads a local folder and knows nothing of Hub ids or detectors; this is where the two meet.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch

from model import FashionCNN, WeightsError, load_model, save_model
from modelrepo import hub
from modelrepo.ood import META_FILE, OODDetector, OODError


@dataclass
class OpenedModel:
    model: FashionCNN
    folder: Path                         # the local folder read (a Hub snapshot for a repo id)
    detector: OODDetector | None = None  # fitted to these weights, when the folder carries one
    detector_error: str | None = None    # why a detector in the folder could not be used


def open_model(source: str | os.PathLike, device: str | torch.device = "cpu", fuse: bool = False,
               timeout: float = hub.DEFAULT_TIMEOUT_S, extra_patterns: tuple[str, ...] = ()) -> OpenedModel:
    """A local folder or a Hub repo id (its MODEL_FILES and `extra_patterns` downloaded) -> the
    network and its detector. A detector that does not fit the weights is left out, with the reason:
    the weights still serve.

    Raises:
        WeightsError: the weights cannot be loaded, or the Hub cannot be reached within `timeout`.
    """
    try:
        folder = hub.resolve_model_dir(source, timeout, extra_patterns)
    except hub.HubError as e:
        raise WeightsError(str(e)) from None
    model = load_model(folder, device)
    opened = OpenedModel(model, folder)
    if (folder / META_FILE).exists():
        try:
            opened.detector = OODDetector.load(folder, model)
        except OODError as e:
            opened.detector_error = str(e)[:300]
    if fuse:
        model.optimize_for_inference_()
    return opened


def save_folder(folder: str | os.PathLike, model: FashionCNN, detector: OODDetector | None = None) -> None:
    """config.json + model.safetensors, then the detector's files (which record the weights' hash)."""
    save_model(model, folder)
    if detector is not None:
        detector.save(folder)
