"""The Gradio layout of the insight section under a prediction: nearest training images, the
contrast "evidence for A over B", the methods' agreement and consensus. dashboard/insight.py
computes them; app.py places `insight_section()` in the Explain view and wires `insight_values`.

    >>> section = insight_section("explain")              # inside the Blocks, under the result panel
    >>> event.then(lambda given, methods: insight_values(INSIGHT, given, methods), [look_state, methods], section)
"""
from __future__ import annotations

import gradio as gr
import numpy as np

from dashboard.insight import Insight, consensus_image, contrast_gallery, neighbour_gallery
from dashboard.service import RequestError


def insight_section(prefix: str) -> list:
    """The components, in the order `insight_values` fills them."""
    with gr.Accordion("Nearest training images: the Fashion-MNIST training images closest in the "
                      "network's feature space, with their cosine distance", open=True,
                      elem_id=f"{prefix}-insight-neighbours"):
        # No label: its badge would cover the top of these small images.
        neighbours = gr.Gallery(columns=6, height=150, format="png", object_fit="contain", show_label=False,
                                label="Nearest training images", elem_id=f"{prefix}-neighbours")
        distances = gr.Markdown(elem_id=f"{prefix}-class-distances")
    with gr.Accordion("Why this class and not the runner-up? Do the methods agree?", open=False,
                      elem_id=f"{prefix}-insight-contrast"):
        contrast = gr.Gallery(columns=3, height=260, format="png", object_fit="contain",
                              label="Evidence for the top class over the runner-up (logit difference)",
                              elem_id=f"{prefix}-contrast")
        agreement = gr.Markdown(elem_id=f"{prefix}-agreement")
        consensus = gr.Image(label="Consensus of the chosen methods (mean rank)", type="numpy", format="png",
                             interactive=False, height=224, width=224, buttons=[], elem_id=f"{prefix}-consensus")
    return [neighbours, distances, contrast, agreement, consensus]


def class_distances_markdown(answer: dict) -> str:
    """The per-class nearest distances, closest first, in one line (or why there is no index)."""
    if answer.get("unavailable"):
        return f"No nearest training images for these weights: {answer['unavailable']}"
    ranked = sorted(answer["class_distances"].items(), key=lambda kv: kv[1])
    return ("Distance to the nearest training image of each class (cosine, 0 = same direction): "
            + ", ".join(f"**{name}** {d:.3f}" for name, d in ranked[:4]) + ", ...")


def insight_values(insight: Insight, given: tuple | None, methods, maps: dict | None = None) -> list:
    """The section's values for a decoded input `given` = (look, photo[, mask]); empty for none.
    `maps`: the result panel's maps of the predicted class, reused rather than computed again."""
    if given is None:
        return [[], "", [], "", None]
    look, photo = np.asarray(given[0]), given[1]
    mask = given[2] if len(given) > 2 and photo else None
    try:
        result = insight.explain(look, methods, photo=photo, mask=mask, maps=maps)
    except RequestError as e:
        answer = insight.neighbours(look, photo=photo)
        return [neighbour_gallery(answer), class_distances_markdown(answer), [], str(e), None]
    answer = result["neighbours"]
    c = result["contrast"]
    contrast = gr.Gallery(contrast_gallery(result, look),
                          label=f"Evidence for {c['a']} over {c['b']} (logit difference): red for {c['a']}, "
                                f"blue for {c['b']}; {', '.join(c['maps'])}")
    return [neighbour_gallery(answer), class_distances_markdown(answer), contrast,
            insight.summary(result), consensus_image(result, look)]
