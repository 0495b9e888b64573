"""The Gradio layout of the read-only tabs (Trust, Model): what dashboard/views.py shapes, placed
on the page. app.py calls them inside its Blocks and wires everything else.
"""
from __future__ import annotations

import gradio as gr

from dashboard.service import Service
from dashboard.views import Views


def trust_tab(views: Views) -> None:
    """The trust table, the mean deletion/insertion curves and the randomisation check."""
    gr.Markdown(views.trust_markdown(), elem_id="trust-text")
    table = views.trust_table()
    if table is None:
        return
    gr.Dataframe(table, label="Per-method results over the test sample", interactive=False)
    with gr.Row():
        for kind in ("deletion", "insertion"):
            df = views.trust_curves(kind)
            if df is not None:
                gr.LinePlot(df, x="fraction of pixels", y="probability of the class", color="method",
                            title=f"Mean {kind} curve", y_lim=[0, 1])
    rnd = views.randomisation_curves()
    if rnd is not None:
        order = " → ".join(dict.fromkeys(rnd["layer"]))
        gr.LinePlot(rnd, x="layers randomised", y="rank correlation", color="method",
                    title=f"Cascading randomisation ({order}): similarity to the trained model's map",
                    x_lim=[1, int(rnd["layers randomised"].max())])


def model_tab(service: Service, views: Views) -> None:
    """The model card's text, the training curves, calibration and the layers."""
    gr.Markdown(views.model_markdown(), elem_id="model-text")
    frames = views.history_frames()
    with gr.Row(elem_id="training-curves"):
        for title, frame in frames:
            gr.LinePlot(frame, x="epoch", y="accuracy", color="series", title=title,
                        y_lim=[0.5, 1])
        if not frames and service.artefacts.png("training_curves.png"):
            gr.Image(service.artefacts.png("training_curves.png"), show_label=False, buttons=[])
    gr.Markdown(views.history_note(), elem_id="training-note")
    with gr.Row():
        if service.artefacts.png("reliability.png"):
            gr.Image(service.artefacts.png("reliability.png"), label="Calibration (reliability diagram)",
                     show_label=False, interactive=False, buttons=[])
    with gr.Accordion("Network layers", open=False):
        gr.Code(str(service.model), language=None)
