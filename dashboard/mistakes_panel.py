"""The Gradio layout of the Mistakes view: misclassified test images filtered by true and predicted
class, the confusion matrix (a click on a cell sets both filters to that cell), per-class accuracy,
and the result panel that explains the selected mistake. dashboard/views.py shapes the content;
app.py wires the events.
"""
from __future__ import annotations

from dataclasses import dataclass

import gradio as gr

from dashboard.result_panel import method_controls, result_panel
from dashboard.views import Views


@dataclass
class MistakesView:
    true_class: gr.Dropdown
    predicted: gr.Dropdown
    text: gr.Markdown
    gallery: gr.Gallery
    note: gr.Markdown
    methods: gr.CheckboxGroup
    target: gr.Dropdown
    outputs: tuple
    matrix: gr.Dataframe | None


def mistakes_tab(views: Views, labels: list[str]) -> MistakesView:
    """Misclassified test images, filterable; the selected one explained like an upload."""
    with gr.Row():
        with gr.Column(scale=2):
            with gr.Row():
                true_f = gr.Dropdown(["All"] + labels, value="All", label="True class", elem_id="mistakes-true")
                pred_f = gr.Dropdown(["All"] + labels, value="All", label="Predicted as", elem_id="mistakes-pred")
            text = gr.Markdown(elem_id="mistakes-count")
            gallery = gr.Gallery(label="Misclassified test images (true → predicted)", columns=4, height=480,
                                 format="png", allow_preview=False, elem_id="mistakes")
        with gr.Column(scale=3):
            note = gr.Markdown("Select an image to explain it.")
            methods, target = method_controls(labels)
            outputs = result_panel("mistake")
    matrix = None
    cm = views.confusion_frame()
    if cm is not None:
        # A table rather than the evaluation's PNG: a click reports its cell (gr.SelectData). The
        # page's full width, so all eleven columns show without scrolling.
        matrix = gr.Dataframe(cm.style.background_gradient(cmap="Blues", axis=None, subset=labels),
                              label="Test confusion matrix: click a cell to show its mistakes above "
                                    "(a class name: all mistakes of that true class)",
                              interactive=False, elem_id="confusion")
    with gr.Row():
        acc = views.per_class_accuracy()
        if acc is not None:
            gr.BarPlot(acc, x="class", y="accuracy", title="Per-class accuracy (recall)", y_lim=[0, 1],
                       x_label_angle=-30, sort=labels)
    return MistakesView(true_f, pred_f, text, gallery, note, methods, target, outputs, matrix)


def wire_cell_filter(view: MistakesView, views: Views, **event) -> None:
    """A click on a confusion-matrix cell sets the two filters; their change event refilters."""
    if view.matrix is None:
        return

    def select_cell(evt: gr.SelectData):
        row, column = evt.index
        return views.cell_filters(int(row), int(column))

    view.matrix.select(select_cell, None, [view.true_class, view.predicted], **event)
