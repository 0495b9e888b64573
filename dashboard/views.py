"""What the Mistakes, Trust and Model views show, shaped from the served model's artefacts.

Plain data (pandas frames, markdown, arrays) and no Gradio layout: app.py places them on the page.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

import explain
from modelrepo.artefacts import BASE_HISTORY, EVALUATION, TRUST
from modelrepo.card import served_parameters
from dashboard.service import Service, short_path, view_image
from model import count_parameters
from imaging.preprocess import fashion_look

MISTAKES_SHOWN = 60                    # gallery size in the Mistakes view
RANDOM_ORDER = "(random order)"        # the trust baseline row: pixels removed/added in random order
CONFUSION_CORNER = "true \\ predicted"  # the confusion table's first column: the true class
# (history key, series name) of the training curves: train accuracy, then the validation ones
HISTORY_SERIES = (("train_accuracy", "train accuracy (augmented)"), ("val_accuracy", "validation accuracy"),
                  ("photo_val_strict", "photo validation (strict)"),
                  ("photo_selection_strict", "photo selection part (strict)"))


class Views:
    """The static and filtered content of the Mistakes, Trust and Model views."""

    def __init__(self, service: Service):
        self.art, self.labels = service.artefacts, service.labels
        self.model, self.loaded = service.model, service.loaded

    def _mistake_rows(self, true_class: str, pred_class: str) -> np.ndarray:
        """Indices into misclassified.npz matching the filters, most confident mistakes first."""
        d = self.art.mistakes
        if d is None:
            return np.zeros(0, dtype=int)
        keep = np.ones(len(d["true"]), dtype=bool)
        if true_class in self.labels:
            keep &= d["true"] == self.labels.index(true_class)
        if pred_class in self.labels:
            keep &= d["pred"] == self.labels.index(pred_class)
        rows = np.flatnonzero(keep)
        return rows[np.argsort(-d["confidence"][rows], kind="stable")]


    def filter_mistakes(self, true_class: str, pred_class: str):
        rows = self._mistake_rows(true_class, pred_class)
        d = self.art.mistakes
        if d is None:
            return [], [], "No misclassified examples: `evaluation/misclassified.npz` is missing for these weights."
        shown = rows[:MISTAKES_SHOWN]
        gallery = [(view_image(d["images"][r] / 255.0, 84),
                    f"{self.labels[d['true'][r]]} → {self.labels[d['pred'][r]]} ({float(d['confidence'][r]):.0%})")
                   for r in shown]
        text = (f"{len(rows)} of {len(d['true'])} misclassified test images match"
                + (f"; the {len(shown)} most confident mistakes are shown." if len(rows) > len(shown) else "."))
        return gallery, [int(r) for r in shown], text


    def mistake_detail(self, shown: list[int], index: int) -> tuple[np.ndarray, str]:
        """The look of the selected mistake and a sentence about it."""
        d = self.art.mistakes
        r = shown[index]
        text = (f"Test image #{int(d['index'][r])}: true class **{self.labels[d['true'][r]]}**, predicted "
                f"**{self.labels[d['pred'][r]]}** ({float(d['confidence'][r]):.0%}). Choose "
                f"*{self.labels[d['true'][r]]}* under *Explain class* to ask why not.")
        return fashion_look(d["images"][r]), text


    def per_class_accuracy(self) -> pd.DataFrame | None:
        per_class = (self.art.metrics or {}).get("per_class")
        if not per_class:
            return None
        return pd.DataFrame({"class": list(per_class), "accuracy": [v["recall"] for v in per_class.values()]})


    def confusion_frame(self) -> pd.DataFrame | None:
        """The test confusion matrix as a table: a row per true class, a column per predicted class."""
        cm = (self.art.metrics or {}).get("confusion_matrix")
        if not cm or len(cm) != len(self.labels):
            return None
        frame = pd.DataFrame(np.asarray(cm, dtype=int), columns=self.labels)
        frame.insert(0, CONFUSION_CORNER, self.labels)
        return frame

    def cell_filters(self, row: int, column: int) -> tuple[str, str]:
        """The (true class, predicted as) filters of a clicked cell of `confusion_frame`; the row's
        name column filters by the true class alone."""
        if not (0 <= row < len(self.labels) and 0 <= column <= len(self.labels)):
            raise ValueError(f"no confusion-matrix cell at row {row}, column {column}")
        return self.labels[row], (self.labels[column - 1] if column else "All")

    def history_frames(self) -> list[tuple[str, pd.DataFrame]]:
        """The training curves of the whole recipe, one (title, frame) per run, in training order: the
        run the weights started from (base_training_history.json), then the last run. A frame has a
        row per epoch and series: train accuracy, and validation accuracy where the run held one out."""
        runs = []
        if self.art.base_history:
            runs.append(("Base run, Fashion-MNIST", self.art.base_history))
        if self.art.history:
            runs.append((self._last_run_name(), self.art.history))
        frames = []
        for title, history in runs:
            rows = [{"epoch": h["epoch"], "accuracy": float(h[key]), "series": series}
                    for h in history for key, series in HISTORY_SERIES if h.get(key) is not None]
            minutes = max((h.get("elapsed_s") or 0) for h in history) / 60
            if rows:
                frames.append((f"{title}, {minutes:.0f} min" if minutes else title, pd.DataFrame(rows)))
        return frames

    def _last_run_name(self) -> str:
        command = (self.art.metrics or {}).get("command") or ""
        if "--photo-layers" in command and self.model.config.photo_layers:
            return "Then photo layers"
        if "--photo-norms" in command:
            return "Then photo BatchNorm layers"
        return "Then fine-tuning" if "--init-from" in command else "Training"

    def history_note(self) -> str:
        """What the curves are and are not: which runs have a validation curve, which history is missing."""
        command = (self.art.metrics or {}).get("command") or ""
        notes = []
        layers = self.model.config.photo_layers if "--photo-layers" in command else ()
        if layers:
            notes.append(f"The photo layers are copies of {', '.join(layers)} and of the BatchNorm layers, which only "
                         "segmented photos meet; their run scored the selection part of the photo train split each "
                         "epoch (photos it did not learn from).")
        if "--init-from" in command and not self.art.base_history:
            notes.append(f"These weights were trained from other weights, but the model folder has no `{BASE_HISTORY}`: "
                         "the run they started from cannot be shown.")
        for title, history in (("The base run", self.art.base_history), ("The last run", self.art.history)):
            if history and not any(h.get(k) is not None for h in history for k, _ in HISTORY_SERIES[1:]):
                notes.append(f"{title} held out no validation images (a final fit on the whole training split), "
                             "so its curve is train accuracy on augmented batches alone; the test accuracy above "
                             "is its held-out result.")
        return " ".join(notes)

    def model_markdown(self) -> str:
        m, cfg = self.art.metrics or {}, self.model.config
        lines = [f"**Weights:** {self.loaded.source}.", ""]
        if self.loaded.fallback:
            lines[0] = f"**⚠ Weights:** {self.loaded.source}."
        lines += [f"**Architecture:** residual CNN, stages of {', '.join(map(str, cfg.widths))} channels at "
                  f"28, 14 and 7 px, global average pooling, linear head over {cfg.num_classes} classes; "
                  f"dropout {cfg.dropout}; flip test-time augmentation {'on' if cfg.flip_tta else 'off'}.",
                  parameters_line(self.model)]
        if m:
            acc, ci = m.get("accuracy"), m.get("accuracy_ci95")
            ci_text = f" (95% CI {ci[0]:.1%} to {ci[1]:.1%})" if ci else ""
            lines.append(f"**Test accuracy:** {acc:.2%}{ci_text} on {m.get('n', '?'):,} test images; "
                         f"macro F1 {m.get('macro_f1', float('nan')):.3f}.")
            ece = (m.get("calibration") or {}).get("ece")
            if ece is not None:
                lines.append(f"**Calibration:** expected calibration error {ece:.3f} "
                             f"(0 means the stated confidence matches the accuracy).")
            if m.get("command"):
                lines.append(f"**Trained with:** `{m['command']}`")
        if self.art.problems:
            lines.append("**Missing evaluation artefacts:** " + "; ".join(self.art.problems) + ".")
        return "\n\n".join(lines)




    def trust_methods(self, baseline: bool = False) -> dict[str, dict]:
        """trust.json's per-method results {name: {...}}, read defensively.

        explain.trust writes {"methods": [names], name: {...}, "random_order": {...}}; a nested
        {"methods": {name: {...}}} or a list of dicts with a "name" is accepted too.
        """
        t = self.art.trust or {}
        listed = t.get("methods")
        if isinstance(listed, dict):
            table = listed
        elif isinstance(listed, list):
            table = {(m.get("name") if isinstance(m, dict) else m): (m if isinstance(m, dict) else t.get(m))
                     for m in listed}
        else:
            table = {k: v for k, v in t.items() if k in explain.METHODS}
        table = {str(k): v for k, v in table.items() if isinstance(v, dict)}
        if baseline and isinstance(t.get("random_order"), dict):
            table[RANDOM_ORDER] = t["random_order"]
        return table


    def trust_table(self) -> pd.DataFrame | None:
        methods = self.trust_methods(baseline=True)
        if not methods:
            return None
        inside = self._photo_localisation().get("methods") or {}
        rows = [{"Method": name,
                 "Deletion AUC ↓": _num(r.get("deletion_auc"), "{:.3f}"),
                 "Insertion AUC ↑": _num(r.get("insertion_auc"), "{:.3f}"),
                 "Randomisation ρ ↓": _num(r.get("randomisation_rho"), "{:.2f}"),
                 "Passes randomisation": {True: "yes", False: "no"}.get(r.get("randomisation_passes"), "–"),
                 "Class ρ ↓": _num(r.get("class_rho"), "{:.2f}"),
                 "Passes class check": {True: "yes", False: "no"}.get(r.get("class_passes"), "–"),
                 "ROAD MoRF ↓": _num(r.get("road_morf_auc"), "{:.3f}"),
                 "ROAD LeRF ↑": _num(r.get("road_lerf_auc"), "{:.3f}"),
                 "Inside the garment (photos) ↑": _num((inside.get(name) or {}).get("mean_inside"), "{:.0%}"),
                 "Infidelity ↓": _num(r.get("infidelity"), "{:.4f}"),
                 "Sensitivity ↓": _num(r.get("sensitivity"), "{:.3f}"),
                 "Latency (ms)": _num(r.get("latency_ms"), "{:.1f}")} for name, r in methods.items()]
        return pd.DataFrame(rows)


    def trust_curves(self, kind: str) -> pd.DataFrame | None:
        """Mean deletion or insertion curves, long format (fraction, probability, method)."""
        t, rows = self.art.trust or {}, []
        for name, r in self.trust_methods(baseline=True).items():
            curve = r.get(f"mean_{kind}_curve")
            fractions = r.get("fractions", t.get("fractions"))
            if curve is None:
                continue
            if fractions is None or len(fractions) != len(curve):
                fractions = np.linspace(0, 1, len(curve)).tolist()
            rows += [{"fraction of pixels": float(f), "probability of the class": float(v), "method": name}
                     for f, v in zip(fractions, curve)]
        return pd.DataFrame(rows) if rows else None


    def randomisation_curves(self) -> pd.DataFrame | None:
        rows = []
        for name, r in self.trust_methods().items():
            curve, layers = r.get("randomisation_curve"), r.get("cascade_layers")
            if not curve:
                continue
            layers = layers if layers and len(layers) == len(curve) else list(range(len(curve)))
            rows += [{"layers randomised": i + 1, "layer": str(layer), "rank correlation": float(v), "method": name}
                     for i, (layer, v) in enumerate(zip(layers, curve))]
        return pd.DataFrame(rows) if rows else None


    def _photo_localisation(self) -> dict:
        loc = (self.art.trust or {}).get("photo_localisation")
        return loc if isinstance(loc, dict) else {}

    def localisation_markdown(self) -> str:
        """What the photos' localisation column measured, and the share an even map would score."""
        loc = self._photo_localisation()
        if not loc.get("n_photos") or loc.get("mean_mask_area") is None:
            return ("**Inside the garment (photos)** is not measured for these weights (`python -m "
                    "explain.photo_localisation <model folder> --photos <photo split>` adds it).")
        return (f"**Inside the garment (photos)** (higher is better): over {loc['n_photos']} segmented photos of "
                f"`{loc.get('split', '?')}`, the mean share of a map's positive attribution inside the garment "
                f"mask, for the predicted class; the mask covers {loc['mean_mask_area']:.0%} of the image on "
                f"average, what a map spread evenly would score.")

    def trust_verdict(self) -> str:
        """Which methods beat the random-order baseline on both curves and pass the randomisation test."""
        table = self.trust_methods()
        base = (self.art.trust or {}).get("random_order") or {}
        if not table or base.get("deletion_auc") is None:
            return ""
        earn, fail = [], []
        for name, r in table.items():
            beats = (r.get("deletion_auc") is not None and r["deletion_auc"] < base["deletion_auc"]
                     and r.get("insertion_auc") is not None and r["insertion_auc"] > base["insertion_auc"])
            # A method measured by the class check must pass it (older trust files lack it).
            class_ok = r.get("class_passes", True) is not False
            (earn if beats and r.get("randomisation_passes") and class_ok else fail).append(name)
        return (f"**Earn belief here:** {', '.join(earn) or 'none'} — better than removing pixels in random "
                f"order on both curves, their maps change when the weights are randomised and differ between "
                f"the predicted and the runner-up class. "
                f"**Not on this evidence:** {', '.join(fail) or 'none'}.")


    def agreement_frame(self, measure: str = "spearman") -> pd.DataFrame | None:
        """trust.json's mean pairwise agreement of the methods over the test sample, one row per method
        (measure: "spearman" or "top10_overlap")."""
        agree = (self.art.trust or {}).get("agreement") or {}
        names, matrix = agree.get("methods"), agree.get(measure)
        if not names or not matrix or len(matrix) != len(names):
            return None
        return pd.DataFrame([{"Method": a, **{b: _num(v, "{:.2f}") for b, v in zip(names, row)}}
                             for a, row in zip(names, matrix)])


    def trust_markdown(self) -> str:
        if self.art.trust is None:
            where = short_path(self.loaded.folder / EVALUATION / TRUST)
            return (f"**No trust results for these weights:** `{where}` is missing, so the per-method table "
                    f"and curves cannot be shown (they are computed once with `python -m explain.trust "
                    f"<model folder>`). The per-image deletion/insertion AUCs in the Explain view still work.")
        n = (self.art.trust or {}).get("n_images", "?")
        return (f"Measured over **{n}** test images, explaining the predicted class. "
                f"**Deletion AUC** (lower is better): the class probability as the most-attributed pixels "
                f"are removed first. **Insertion AUC** (higher is better): as they are restored first to a "
                f"blank image. *{RANDOM_ORDER}* is the baseline a method must beat. **Randomisation ρ** "
                f"(lower is better): rank correlation between a method's map and its map once the network's "
                f"weights are re-initialised layer by layer (Adebayo et al. 2018); a map that survives "
                f"randomisation is not explaining the model. **Class ρ** (lower is better): rank correlation "
                f"between the map for the predicted class and for the runner-up; a map that barely changes "
                f"does not say which class it explains. **ROAD** (Rong et al. 2022): the same removal with "
                f"pixels filled from their neighbours, so the removed region's shape does not give the class "
                f"away (MoRF: most relevant first, lower is better; LeRF: least relevant first, higher is "
                f"better). Rank correlations count the garment's pixels only. Latency: median per map when "
                f"measured.\n\n" + self.localisation_markdown() + "\n\n"
                + self.trust_verdict())


def _num(v, fmt: str) -> str:
    return fmt.format(v) if isinstance(v, (int, float)) else "–"


OUTLINE_RGB = np.array([255, 0, 200], dtype=np.uint8)   # magenta: rare in clothes and floors


def outline_image(work: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    """The working image as uint8 RGB with the kept region's outline drawn on it (no mask: as is)."""
    rgb = np.clip(work * 255, 0, 255).astype(np.uint8)
    if rgb.ndim == 2:
        rgb = np.repeat(rgb[..., None], 3, axis=2)
    if mask is None or not mask.any():
        return rgb
    padded = np.pad(mask, 1)
    inner = padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:]
    edge = mask & ~inner                                             # pixels of the mask on its border
    thick = edge | np.pad(edge, 1)[:-2, 1:-1] | np.pad(edge, 1)[1:-1, :-2]   # two pixels wide
    rgb[thick] = OUTLINE_RGB
    return rgb


def parameters_line(model) -> str:
    """What one answer runs, and what the file stores when photos meet copies of layers of their own."""
    served, stored = served_parameters(model), count_parameters(model)
    if served == stored:
        return f"**Parameters:** {stored:,}."
    return f"**Parameters:** {served:,} per answer; {stored:,} stored (photos meet copies of layers of their own)."
