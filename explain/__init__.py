"""Attribution methods for the Fashion-MNIST model, their rendering and their faithfulness.

Importable without Gradio. Modules: `methods` (the `METHODS` registry, `explain()` for one image and
`explain_batch()` for a batch with a target per image),
`render` (heatmap overlays on a shared scale), `faithfulness` (deletion/insertion curves,
infidelity, sensitivity, the model-parameter randomisation test) and `trust` (the per-method
table precomputed at evaluation time: `python -m explain.trust <model_dir>`; imported as
`explain.trust`, not re-exported here, so that `-m` runs it fresh).
"""
from explain.methods import METHODS, MethodSpec, background_value, explain, explain_batch, resolve_target
from explain.render import colorbar, common_scale, render_overlay, share
from explain.faithfulness import (deletion_insertion, deletion_insertion_many, infidelity, randomisation_test,
                                  sensitivity, spearman)


__all__ = ["METHODS", "MethodSpec", "explain", "explain_batch", "resolve_target", "background_value", "render_overlay",
           "common_scale", "colorbar", "share", "deletion_insertion", "deletion_insertion_many", "infidelity", "sensitivity",
           "randomisation_test", "spearman"]
