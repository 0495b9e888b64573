"""What a visitor asks after the maps: which training images is this like, why A and not B, do the
methods agree, does a map look at the garment. For one look, on the service's networks; no Gradio.

`Insight` holds the nearest-training-images index shipped beside the served weights (or why there
is none: the page still serves) and answers, JSON-ready:

- `neighbours(look, photo)`: the k nearest training images (label, distance, training-split index,
  the 28x28 look as a PNG data URI) and the distance to the nearest training image of each class;
- `explain(look, methods, photo, pair, mask)`: the maps of the chosen methods, their agreement and
  consensus, the contrast "evidence for A over B" (default: the top two classes) with the signed
  methods among them, ROAD's curves beside the deletion/insertion areas, and for a segmented photo
  the share of each map's positive attribution inside the garment mask.

    >>> insight = Insight.of(service)
    >>> insight.neighbours(look)["neighbours"][0]   # {"label": "Shirt", "distance": 0.04, "train_index": 123, "image": ...}
"""
from __future__ import annotations

import base64
import io
import time

import numpy as np
import torch
import torch.nn.functional as F

from dashboard.service import RequestError, Service, checked_methods, view_image
from explain import explain as explain_one
from explain.agreement import agreement, localisation, mask_on_look
from explain.contrast import CONTRAST_METHODS, contrast_map
from explain.neighbours import DEFAULT_K, MAX_K, NeighbourIndex, NeighbourIndexError, embed
from explain.render import common_scale, render_overlay, share
from explain.road import road_many

DEFAULT_CONTRAST_METHODS = ("Integrated Gradients", "Occlusion")


def png_data_uri(look_u8: np.ndarray) -> str:
    """A (28, 28) uint8 look as a PNG data URI (about 400 bytes)."""
    from PIL import Image
    buffer = io.BytesIO()
    Image.fromarray(np.asarray(look_u8, np.uint8), mode="L").save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


class Insight:
    """Neighbours, contrast, agreement, localisation and ROAD for one look; thread-safe like the service."""

    def __init__(self, service: Service, index: NeighbourIndex | None, index_error: str | None = None):
        self.service, self.index, self.index_error = service, index, index_error

    @classmethod
    def of(cls, service: Service) -> "Insight":
        """The index beside the served weights; a missing or stale one is left out with the reason."""
        try:
            return cls(service, NeighbourIndex.load(service.loaded.folder, service.model))
        except NeighbourIndexError as e:
            return cls(service, None, str(e)[:300])

    def _networks(self, photo: bool):
        s = self.service
        return (s.photo_model, s.photo_serving) if photo else (s.model, s.serving)

    def neighbours(self, look: np.ndarray, photo: bool = False, k: int = DEFAULT_K,
                   features: np.ndarray | None = None) -> dict:
        """The k nearest training images of a look and the nearest distance per class (cosine distances).

        `features`: the look's penultimate features (D,) from the prediction's own forward pass
        (`Assessment.features`); without them the serving network is run once more.
        """
        if self.index is None:
            return {"neighbours": [], "class_distances": {}, "unavailable": self.index_error}
        if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= MAX_K:
            raise RequestError(f"k must be a whole number from 1 to {MAX_K}.")
        with torch.inference_mode():
            if features is None:
                q = embed(self._networks(photo)[1], self.service._input(look))   # (1, D)
            else:
                q = F.normalize(torch.as_tensor(features, dtype=torch.float32)[None], dim=1)
            found, per_class = self.index.lookup(q, k)
            per_class = per_class[0]
        labels = self.service.labels
        return {"neighbours": [{"label": labels[int(c)], "distance": round(float(d), 4), "train_index": int(i),
                                "image": png_data_uri(img.numpy())}
                               for c, d, i, img in zip(found.labels[0], found.distances[0], found.source_index[0],
                                                       found.looks[0])],
                "class_distances": {labels[c]: round(float(d), 4) for c, d in enumerate(per_class)},
                "metric": "cosine distance of the penultimate features (0 = same direction)"}

    def pair(self, probs: np.ndarray, pair) -> tuple[int, int]:
        """(A, B): the two classes named in `pair`, default the top two."""
        if pair is None:
            a, b = np.argsort(-probs, kind="stable")[:2]
            return int(a), int(b)
        labels = self.service.labels
        if not (isinstance(pair, (list, tuple)) and len(pair) == 2 and all(p in labels for p in pair)) or pair[0] == pair[1]:
            raise RequestError(f"pair must be two different classes from: {', '.join(labels)}.")
        return labels.index(pair[0]), labels.index(pair[1])

    def explain(self, look: np.ndarray, methods, photo: bool = False, pair=None, mask: np.ndarray | None = None,
                contrast_methods=DEFAULT_CONTRAST_METHODS, maps: dict | None = None, versus: str | None = None,
                material: np.ndarray | None = None) -> dict:
        """Maps of `methods` for the predicted class, and what is said about them (see the module doc),
        with the nearest training images (`neighbours`' answer under "neighbours").

        Args:
            look: (28, 28) in [0, 1]; photo: segmented from a photo (the photo network answers);
            pair: two class names for the contrast, default the top two;
            versus: without `pair`, the class B of "the predicted class over B" (the page's *Explain
                class*: "why not Shirt?"); the predicted class itself or None keep the top two;
            mask: the segmentation mask over the working image, for the localisation;
            material: a photo's preprocess.Seen.material, which its verdict weighs;
            contrast_methods: signed methods for the contrast (those not in CONTRAST_METHODS are skipped);
            maps: the methods' maps for the predicted class when the caller has them already (the
                page's result panel: `Service.explain` in shares); ranks, agreement and ROAD are
                unchanged by that positive scaling, so they are not computed twice.
        """
        methods = checked_methods(methods)
        s = self.service
        assessment = s.assess(look, photo, material=material)
        model, serving = self._networks(photo)
        target = int(assessment.probs.argmax())
        a, b = self.pair(assessment.probs, pair)
        if pair is None and versus is not None:
            if versus not in s.labels:
                raise RequestError(f"Unknown class {str(versus)[:40]!r}: choose one of {', '.join(s.labels)}.")
            if s.labels.index(versus) != target:
                a, b = target, s.labels.index(versus)
        x = s._input(look)[0]                                                 # (1, 28, 28)
        started = time.perf_counter()
        with s._turn():       # the explainers hook the network as trained: one at a time, as Service.explain does
            if maps is None or set(maps) != set(methods):
                maps = {m: explain_one(model, x, m, target) for m in methods}
            maps = {m: np.asarray(maps[m], np.float32) for m in methods}
            contrast = {m: contrast_map(model, x, m, a, b)[0] for m in checked_methods(contrast_methods)
                        if m in CONTRAST_METHODS}
        with torch.inference_mode():
            road = road_many(serving, x, maps, target)
        agree = agreement(maps, look)
        labels = s.labels
        out = {"label": labels[target], "maps": {m: share(v).tolist() for m, v in maps.items()},
               "agreement": {k: v for k, v in agree.items() if k != "consensus"},
               "consensus": agree["consensus"].tolist(),
               "contrast": {"a": labels[a], "b": labels[b], "title": f"evidence for {labels[a]} over {labels[b]}",
                            "maps": {m: share(v).tolist() for m, v in contrast.items()},
                            "logit_difference_sums": {m: float(v.sum()) for m, v in contrast.items()}},
               "road": {m: {k: r[k] for k in ("morf_auc", "lerf_auc", "fractions", "morf_curve", "lerf_curve")}
                        for m, r in road.items()},
               "seconds": round(time.perf_counter() - started, 3),
               "neighbours": self.neighbours(look, photo, features=assessment.features)}
        if mask is not None:
            out["localisation"] = localisation(maps, mask_on_look(mask))
        return out

    def summary(self, result: dict) -> str:
        """One markdown paragraph: the agreement warning (or the agreement), the contrast's pair, localisation."""
        ag = result["agreement"]
        lines = [ag["warning"] or (f"The {len(result['maps'])} maps agree: mean rank correlation "
                                   f"{ag['mean_spearman']:.2f} on the garment's pixels, mean top-10% overlap "
                                   f"{ag['mean_top10_overlap']:.0%}." if ag["mean_spearman"] is not None else "")]
        loc = result.get("localisation")
        if loc:
            inside = ", ".join(f"{m} {v['inside']:.0%}" for m, v in loc.items() if v["inside"] is not None)
            lines.append(f"Positive attribution inside the garment mask ({next(iter(loc.values()))['mask_area']:.0%} "
                         f"of the image): {inside}.")
        return " ".join(line for line in lines if line)



# ---------------------------------------------------------------------------------------------
# What the page shows (images and captions; app.py places them)
# ---------------------------------------------------------------------------------------------

def neighbour_gallery(answer: dict, size: int = 84) -> list[tuple[np.ndarray, str]]:
    """`Insight.neighbours`' answer as gallery items: each training image, its label and distance."""
    from PIL import Image
    items = []
    for n in answer["neighbours"]:
        look = np.asarray(Image.open(io.BytesIO(base64.b64decode(n["image"].split(",", 1)[1]))))
        # Short: six captions share one row; the training index is in the JSON answer.
        items.append((view_image(look / 255.0, size), f"{n['label']} {n['distance']:.3f}"))
    return items


def contrast_gallery(result: dict, look: np.ndarray) -> list[tuple[np.ndarray, str]]:
    """The contrast maps of `Insight.explain`'s result over the look, on one diverging scale."""
    c = result["contrast"]
    maps = {m: np.asarray(v, np.float32) for m, v in c["maps"].items()}
    scale = common_scale(list(maps.values()))
    return [(render_overlay(look, a, scale, signed=True), f"{m}: {c['title']} (red: for {c['a']}, blue: for {c['b']})")
            for m, a in maps.items()]


def consensus_image(result: dict, look: np.ndarray) -> np.ndarray:
    """The consensus map (mean rank of |a| over the methods, in [0, 1]) over the look."""
    return render_overlay(look, np.asarray(result["consensus"], np.float32), 1.0, signed=False)
