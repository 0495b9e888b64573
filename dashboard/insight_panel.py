"""The Gradio layout of the insight section under a prediction: nearest training images, the
contrast "evidence for A over B", the methods' agreement and consensus. dashboard/insight.py
computes them; app.py places `insight_section()` in the Explain view and wires `insight_values`.

    >>> section = insight_section("explain")              # inside the Blocks, under the result panel
    >>> event.then(lambda given, methods: insight_values(INSIGHT, given, methods), [look_state, methods], section)
"""
from __future__ import annotations

import gradio as gr
import numpy as np
import pandas as pd

from dashboard.insight import Insight, consensus_image, contrast_gallery, neighbour_gallery
from dashboard.service import RequestError
from dashboard.image_files import gallery_files
from dashboard.uploads import Given

ROAD_COLUMNS = ["Method", "ROAD MoRF AUC ↓", "ROAD LeRF AUC ↑", "Inside the garment mask"]


def insight_section(prefix: str) -> list:
    """The components, in the order `insight_values` fills them."""
    with gr.Accordion("Nearest training images: the Fashion-MNIST training images closest in the "
                      "network's feature space, with their cosine distance", open=True,
                      elem_id=f"{prefix}-insight-neighbours"):
        # No label: its badge would cover the top of these small images.
        neighbours = gr.Gallery(columns=6, height=150, format="png", object_fit="contain", show_label=False,
                                label="Nearest training images", elem_id=f"{prefix}-neighbours")
        distances = gr.Markdown(elem_id=f"{prefix}-class-distances")
    with gr.Accordion("Why this class and not another? Do the methods agree?", open=False,
                      elem_id=f"{prefix}-insight-contrast"):
        contrast = gr.Gallery(columns=3, height=260, format="png", object_fit="contain",
                              label="Evidence for the predicted class over the runner-up, or over the class "
                                    "under Explain class (logit difference)",
                              elem_id=f"{prefix}-contrast")
        agreement = gr.Markdown(elem_id=f"{prefix}-agreement")
        consensus = gr.Image(label="Consensus of the chosen methods (mean rank)", type="numpy", format="png",
                             interactive=False, height=224, width=224, buttons=[], elem_id=f"{prefix}-consensus")
        road = gr.Dataframe(label="ROAD for this image: the class probability as the map's top pixels (MoRF, lower "
                                  "is better) or its bottom pixels (LeRF, higher is better) are replaced by noisy "
                                  "linear imputation; for a segmented photo, the share of the map's positive "
                                  "attribution inside the garment mask",
                            value=pd.DataFrame(columns=ROAD_COLUMNS), interactive=False, elem_id=f"{prefix}-road")
    return [neighbours, distances, contrast, agreement, consensus, road]


def class_distances_markdown(answer: dict) -> str:
    """The per-class nearest distances, closest first, in one line (or why there is no index)."""
    if answer.get("unavailable"):
        return f"No nearest training images for these weights: {answer['unavailable']}"
    ranked = sorted(answer["class_distances"].items(), key=lambda kv: kv[1])
    return ("Distance to the nearest training image of each class (cosine, 0 = same direction): "
            + ", ".join(f"**{name}** {d:.3f}" for name, d in ranked[:4]) + ", ...")


def road_table(result: dict) -> pd.DataFrame:
    """Per method: ROAD's two areas and, for a segmented photo, the share inside the garment mask."""
    loc = result.get("localisation") or {}
    return pd.DataFrame([[m, round(r["morf_auc"], 3), round(r["lerf_auc"], 3),
                          f"{loc[m]['inside']:.0%}" if loc.get(m, {}).get("inside") is not None else "-"]
                         for m, r in result["road"].items()], columns=ROAD_COLUMNS)


def insight_values(insight: Insight, given: tuple | None, methods, maps: dict | None = None,
                   versus: str | None = None) -> list:
    """The section's values for a decoded input `given` (uploads.Given); empty for none.
    `maps`: the result panel's maps of the predicted class, reused rather than computed again;
    `versus`: the class the contrast sets against the predicted one (default: the runner-up)."""
    empty_road = pd.DataFrame(columns=ROAD_COLUMNS)
    if given is None:
        return [[], "", [], "", None, empty_road]
    g = Given(*given)
    look, photo = np.asarray(g.look), g.photo
    try:
        result = insight.explain(look, methods, photo=photo, mask=g.mask if photo else None, maps=maps, versus=versus,
                                 material=g.material)
    except RequestError as e:
        answer = insight.neighbours(look, photo=photo)
        return [neighbour_gallery(answer), class_distances_markdown(answer), [], str(e), None, empty_road]
    answer = result["neighbours"]
    c = result["contrast"]
    contrast = gr.Gallery(gallery_files(contrast_gallery(result, look)),
                          label=f"Evidence for {c['a']} over {c['b']} (logit difference): red for {c['a']}, "
                                f"blue for {c['b']}; {', '.join(c['maps'])}")
    return [neighbour_gallery(answer), class_distances_markdown(answer), contrast,
            insight.summary(result), consensus_image(result, look), road_table(result)]
