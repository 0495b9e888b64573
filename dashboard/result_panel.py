"""The result panel shared by the Explain and Mistakes views: the model's view, the verdict, the
top classes, the attribution maps and their per-image scores, and the method controls above it.
Layout and the score table only; app.py fills it (ui_analyse) and wires its events.
"""
from __future__ import annotations

import gradio as gr
import pandas as pd

import explain
from dashboard.service import DEFAULT_METHODS, PREDICTED, VIEW_SIZE

MAP_COLUMNS, MAP_ROW_PX = 4, 200       # attribution gallery layout
SCORE_COLUMNS = ["Method", "Deletion AUC ↓", "Insertion AUC ↑", "Time (ms)"]
# view, verdict, label, gallery, score table, scores JSON, maps (State): the result panel, cleared
EMPTY_RESULT = (None, "", None, [], pd.DataFrame(columns=SCORE_COLUMNS), None, None)


def result_panel(prefix: str, kept=None) -> tuple:
    """The output components, in EMPTY_RESULT's order; `kept` places the outlined upload."""
    with gr.Row():
        if kept is not None:
            kept.render()
        view = gr.Image(label="What the model saw (28x28)", type="numpy", format="png", interactive=False,
                        height=VIEW_SIZE, width=VIEW_SIZE, buttons=[], elem_id=f"{prefix}-view")
        with gr.Column():
            verdict = gr.Markdown(elem_id=f"{prefix}-verdict")
            label = gr.Label(num_top_classes=3, label="Prediction (top 3)", elem_id=f"{prefix}-label")
    gallery = gr.Gallery(label="Attribution maps (one colour scale for all)", columns=MAP_COLUMNS,
                         height=MAP_ROW_PX + 50, format="png", object_fit="contain", allow_preview=True,
                         elem_id=f"{prefix}-maps")
    table = gr.Dataframe(label="How faithful is each map for this image? Deletion: the class probability as the "
                               "top-ranked pixels are removed (lower is better); insertion: as they are added "
                               "to a blank image (higher is better).",
                         value=EMPTY_RESULT[4], interactive=False, elem_id=f"{prefix}-scores")
    with gr.Accordion("Scores as JSON", open=False):
        scores = gr.JSON(label="Per-method scores for this image")
    # The maps of the predicted class, kept for the insight section below, which would otherwise
    # compute them a second time.
    maps = gr.State(None)
    return view, verdict, label, gallery, table, scores, maps


def method_controls(labels: list[str]):
    methods = gr.CheckboxGroup(list(explain.METHODS), value=[m for m in DEFAULT_METHODS if m in explain.METHODS],
                               label="Explanation methods")
    target = gr.Dropdown([PREDICTED] + labels, value=PREDICTED, label="Explain class",
                         info="Why this class? Pick another to ask 'why not Shirt?'")
    return methods, target


def score_table(summary: dict) -> pd.DataFrame:
    """The per-method scores of a summary (app.analyse_look) as the table under the maps."""
    return pd.DataFrame([[name, round(s["deletion_auc"], 3), round(s["insertion_auc"], 3),
                          round(1000 * s["seconds"], 1)] for name, s in summary["methods"].items()],
                        columns=SCORE_COLUMNS)
