"""The Space's card: the README.md a Hugging Face Space reads its configuration from.

The YAML front matter follows the Spaces configuration reference
(https://huggingface.co/docs/hub/spaces-config-reference). `sdk_version` is read from the
`gradio==` pin of requirements.txt, so the Space runs the Gradio the tests ran.

    python -c "from space_config.card import render_card; print(render_card())"
"""
from __future__ import annotations

import json
import re
from pathlib import Path

from huggingface_hub import SpaceCardData

from modelrepo.hub import HUB_DATASET, LICENSE

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_MODEL_ID = "fashion-mnist-explainer/fashion-cnn"
PYTHON_VERSION = "3.11"

# Colours must be one of the Hub's named gradient colours (red, yellow, green, blue, indigo,
# purple, pink, gray); short_description is shown on the Space's thumbnail and capped at 60 chars.
METADATA = {
    "title": "Fashion-MNIST Explainer",
    "emoji": "👗",
    "colorFrom": "indigo",
    "colorTo": "pink",
    "sdk": "gradio",
    "app_file": "app.py",
    "python_version": PYTHON_VERSION,
    "license": LICENSE,
    "pinned": False,
    "short_description": "Classify clothes and see why: Captum saliency maps",
    "tags": ["fashion-mnist", "image-classification", "explainability", "captum", "pytorch"],
}


def pinned_version(package: str, requirements: str | Path = ROOT / "requirements.txt") -> str:
    """The exact version `package==X` pins in a requirements file.

    Raises:
        ValueError: the package is missing or not pinned with `==`.
    """
    text = Path(requirements).read_text()
    match = re.search(rf"^\s*{re.escape(package)}\s*==\s*([^\s;#]+)", text, re.MULTILINE | re.IGNORECASE)
    if not match:
        raise ValueError(f"{requirements}: no `{package}==<version>` pin (the Space's sdk_version comes from it)")
    return match.group(1)


def _accuracy_line(weights: Path) -> str:
    """One line with the shipped model's test accuracy, read from its metrics.json, or ''."""
    try:
        m = json.loads((weights / "evaluation" / "metrics.json").read_text())
        lo, hi = m["accuracy_ci95"]
        return (f"The served model scores **{m['accuracy']:.2%}** on the {m['n']:,} Fashion-MNIST test "
                f"images (95% CI {lo:.2%} to {hi:.2%}; `weights/evaluation/metrics.json`).\n\n")
    except (OSError, KeyError, ValueError, TypeError):
        return ""


def render_card(model_id: str = DEFAULT_MODEL_ID, weights: str | Path = ROOT / "weights",
                requirements: str | Path = ROOT / "requirements.txt") -> str:
    """The Space's README.md: front matter (read by the Hub) and a short body for visitors.

    Args:
        model_id: the Hub model repo the card links to (the `models:` field).
        weights: the folder whose evaluation/metrics.json supplies the accuracy line, if present.
        requirements: the file whose `gradio==` pin becomes `sdk_version`.
    """
    data = SpaceCardData(sdk_version=pinned_version("gradio", requirements), models=[model_id],
                         datasets=[HUB_DATASET], **METADATA)
    return f"""---
{data.to_yaml()}
---

# Fashion-MNIST Explainer

Upload a photo of a garment, draw one, or pick a test example: a small residual CNN trained on
[Fashion-MNIST]({_hub_url("datasets", HUB_DATASET)}) says which of ten classes it is (T-shirt/top,
Trouser, Pullover, Dress, Coat, Sandal, Shirt, Sneaker, Bag, Ankle boot), and attribution methods
from [Captum](https://captum.ai) (saliency, Integrated Gradients, SmoothGrad, Grad-CAM, occlusion,
DeepLIFT, guided backprop) show which pixels drove the answer, side by side on one colour scale.

{_accuracy_line(Path(weights))}Four views:

- **Explain**: the 28x28 image the model actually sees, its top-3 classes, and one map per method.
- **Mistakes**: the model's misclassified test images, filterable by true and predicted class.
- **Trust**: how far each method can be believed: deletion and insertion scores (Petsiuk et al.
  2018) and the model-randomisation sanity check (Adebayo et al. 2018).
- **Model**: architecture, test accuracy, calibration and training curves.

Uploads are turned into the Fashion-MNIST look first (grayscale, light garment on black, centred
at 28x28), so a garment alone on a plain background works best. Anything is still answered with one
of the ten classes, under a verdict: like the training images, a garment photo (with how often
held-out photos that confident were right), or probably not a garment. Model: [{model_id}]({_hub_url("", model_id)}).
"""


def _hub_url(kind: str, repo_id: str) -> str:
    return f"https://huggingface.co/{kind + '/' if kind else ''}{repo_id}"
