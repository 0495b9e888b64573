"""Attribution methods for the Fashion-MNIST model, their rendering and their faithfulness.

Importable without Gradio. Modules: `methods` (the `METHODS` registry and `explain()`),
`render` (heatmap overlays on a shared scale), `faithfulness` (deletion/insertion curves,
infidelity, sensitivity, the model-parameter randomisation test) and `trust` (the per-method
table precomputed at evaluation time: `python -m explain.trust <model_dir>`).
"""
from explain.methods import METHODS, MethodSpec, background_value, explain, resolve_target
