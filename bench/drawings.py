"""How often a visitor's drawings are recognised: tests/drawings.py's sets through the serving path.

Every drawing (outlined, filled and scribbled over; thin and thick strokes; black and blue) goes
through the served preprocessing and prediction, as the Draw tab's upload does, and, for comparison, through the photo
path alone (`segment.photo_look`, which drawings took before `strokes` read them). Two sets: the
reported one (`drawings()`) and the validation one (`validation_drawings()`: other shapes, seeds and
jitter), on which the drawing look's parameters were chosen. Writes bench/results/drawings.md and
.json: the share recognised, per class and per style, and how often the three styles of one
drawing get the same class.

    python bench/drawings.py [--model weights] [--grid]

--grid adds the validation set's accuracy over the parameters chosen on it: strokes.FILL_LEVEL x
strokes.RAMP_SHARE (a ramp share of 0 is a uniform silhouette) and strokes.HANDLE_SHARE x
strokes.OPEN_WIDTH_SHARE (which enclosed regions stay open). The rule: the middle of the range
where the accuracy is flat.
"""
from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from contextlib import contextmanager
from pathlib import Path

import _common as common  # noqa: E402  (puts the repository root on sys.path)

sys.path.insert(0, str(common.REPO / "tests"))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from imaging import segment  # noqa: E402
from imaging import strokes  # noqa: E402
from drawings import drawings, validation_drawings  # noqa: E402
from model import load_model  # noqa: E402
from _looks import routed  # noqa: E402
from imaging.preprocess import look_and_mask, normalize, to_array  # noqa: E402

GRID_FILL = (0.4, 0.5, 0.6, 0.7, 0.8, 1.0)
GRID_RAMP = (0.0, 0.08, 0.12, 0.16, 0.2, 0.24, 0.3)
GRID_HANDLE = (0.1, 0.2, 0.3)
GRID_OPEN_WIDTH = (0.05, 0.1, 0.15, 0.2, 0.25)
PARAMETERS = ("FILL_LEVEL", "RAMP_SHARE", "HANDLE_SHARE", "OPEN_WIDTH_SHARE")


def predict(model, looks: list[np.ndarray]) -> list[str]:
    """Class names the served model gives looks (28, 28) in [0, 1]."""
    x = normalize(np.stack(looks), model.config.mean, model.config.std)[:, None]     # (N, 1, 28, 28)
    with torch.inference_mode():
        return [model.label_names[i] for i in model.predict_proba(x).argmax(1).tolist()]


def recognise(model, items: list) -> list[dict]:
    """One row per drawing: its class, variant, style and the served and photo-path predictions."""
    seen = [look_and_mask(image) for _, _, image in items]
    served = routed(predict, model, [s.look for s in seen], [s.photo for s in seen])
    photo = predict(model.for_photos(), [segment.photo_look(to_array(image))[0] for _, _, image in items])
    return [{"class": name, "variant": variant, "style": variant.split("-")[0], "predicted": s,
             "right": s == name, "photo_path_predicted": p, "photo_path_right": p == name}
            for (name, variant, _), s, p in zip(items, served, photo)]


def share(rows: list[dict], key: str, right: str = "right") -> dict[str, float]:
    groups = defaultdict(list)
    for r in rows:
        groups[r[key]].append(r[right])
    return {k: sum(v) / len(v) for k, v in groups.items()}


def agreement(rows: list[dict], predicted: str = "predicted") -> float:
    """Share of drawings (one shape, stroke, colour and seed) whose styles all get the same class."""
    by_drawing = defaultdict(list)
    for r in rows:
        by_drawing[(r["class"], r["variant"].split("-", 1)[1])].append(r[predicted])
    return float(np.mean([len(set(classes)) == 1 for classes in by_drawing.values()]))


def summary(rows: list[dict]) -> dict:
    return {"n": len(rows), "recognised": float(np.mean([r["right"] for r in rows])),
            "photo_path_recognised": float(np.mean([r["photo_path_right"] for r in rows])),
            "styles_agree": agreement(rows), "photo_path_styles_agree": agreement(rows, "photo_path_predicted"), "per_style": share(rows, "style"),
            "photo_path_per_style": share(rows, "style", "photo_path_right")}


def grid(model, items: list) -> dict[str, list[dict]]:
    """Validation accuracy for each (fill level, ramp share) of the look and each (handle share,
    open width share) of the garment."""
    names = [name for name, _, _ in items]
    works = [to_array(image) for _, _, image in items]
    masks = [strokes.drawn_garment(w) for w in works]
    assert all(m is not None for m in masks), "a validation drawing was not read as a drawing"

    def recognised(looks: list[np.ndarray]) -> float:
        return float(np.mean([p == n for p, n in zip(predict(model, looks), names)]))

    look = [{"fill": fill, "ramp_share": ramp, "recognised": recognised(
             [segment.look_from_mask(1.0 - strokes.levels(m, fill, ramp), m) for m in masks])}
            for fill in GRID_FILL for ramp in GRID_RAMP]
    holes = []
    for handle in GRID_HANDLE:
        for width in GRID_OPEN_WIDTH:
            with constants(HANDLE_SHARE=handle, OPEN_WIDTH_SHARE=width):
                looks = [strokes.drawing_look(w)[0] for w in works]
            holes.append({"handle_share": handle, "open_width_share": width, "recognised": recognised(looks)})
    return {"look": look, "holes": holes}


@contextmanager
def constants(**values):
    """strokes' module constants set to `values` inside the block, restored after."""
    before = {name: getattr(strokes, name) for name in values}
    try:
        for name, value in values.items():
            setattr(strokes, name, value)
        yield
    finally:
        for name, value in before.items():
            setattr(strokes, name, value)


def grid_table(rows: list[dict], row_key: str, col_key: str, rows_of: tuple, cols_of: tuple) -> list[str]:
    table = {(r[row_key], r[col_key]): r["recognised"] for r in rows}
    return ([f"| {row_key} / {col_key} | " + " | ".join(map(str, cols_of)) + " |", "|---|" + "---|" * len(cols_of)]
            + [f"| {a} | " + " | ".join(f"{table[(a, b)]:.1%}" for b in cols_of) + " |" for a in rows_of])


def markdown(result: dict) -> str:
    rep, val, par = result["reported"], result["validation"], result["parameters"]
    lines = [f"# Drawings recognised ({rep['n']} generated by tests/drawings.py)", "",
             f"Model: {result['model']}. Command: `{result['command']}`. Parameters (strokes.py): "
             + ", ".join(f"{k} {v}" for k, v in par.items()) + ".", "",
             f"**Recognised: {result['recognised']:.1%}** ({sum(r['right'] for r in result['rows'])} of "
             f"{rep['n']}); through the photo path alone (`segment.photo_look`, before drawings were read as "
             f"drawings): {rep['photo_path_recognised']:.1%}.", "",
             f"The outlined, filled and scribbled versions of one drawing all get the same class in "
             f"{rep['styles_agree']:.0%} of drawings (photo path: {rep['photo_path_styles_agree']:.0%}).", "",
             f"Validation set (tests/drawings.validation_drawings, {val['n']} drawings of other shapes, seeds and "
             f"jitter; the parameters were chosen on it): {val['recognised']:.1%} (photo path: "
             f"{val['photo_path_recognised']:.1%}), the styles agree in {val['styles_agree']:.0%}.", "",
             "| class | recognised | photo path |", "|---|---|---|"]
    lines += [f"| {k} | {v:.0%} | {result['photo_path_per_class'][k]:.0%} |" for k, v in result["per_class"].items()]
    lines += ["", "| style | recognised | photo path | validation | validation, photo path |", "|---|---|---|---|---|"]
    lines += [f"| {k} | {v:.0%} | {rep['photo_path_per_style'][k]:.0%} | {val['per_style'][k]:.0%} | "
              f"{val['photo_path_per_style'][k]:.0%} |" for k, v in rep["per_style"].items()]
    if result.get("grid"):
        lines += ["", "Validation accuracy by the look's fill level and ramp share (0: a uniform silhouette):", ""]
        lines += grid_table(result["grid"]["look"], "fill", "ramp_share", GRID_FILL, GRID_RAMP)
        lines += ["", "Validation accuracy by which enclosed regions stay open (handle share, open width share):", ""]
        lines += grid_table(result["grid"]["holes"], "handle_share", "open_width_share", GRID_HANDLE, GRID_OPEN_WIDTH)
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", type=Path, default=common.REPO / "weights", help="model folder (default weights/)")
    p.add_argument("--out", type=Path, default=common.RESULTS, help="results folder (default bench/results)")
    p.add_argument("--grid", action="store_true", help="also the validation grid of the look's parameters")
    cli = p.parse_args(argv)
    model = load_model(cli.model)   # unfused: for_photos() copies its BatchNorm
    rows, validation = recognise(model, drawings()), validation_drawings()
    val_rows = recognise(model, validation)
    result = {"command": common.command_line("bench/drawings.py"), "model": common.model_note(cli.model),
              "machine": common.machine_info(),
              "parameters": {name: getattr(strokes, name) for name in PARAMETERS},
              "n": len(rows), "recognised": summary(rows)["recognised"],
              "per_class": share(rows, "class"), "photo_path_per_class": share(rows, "class", "photo_path_right"),
              "reported": summary(rows), "validation": summary(val_rows),
              "grid": grid(model, validation) if cli.grid else None, "rows": rows}
    cli.out.mkdir(parents=True, exist_ok=True)
    (cli.out / "drawings.json").write_text(json.dumps(result, indent=2))
    (cli.out / "drawings.md").write_text(markdown(result))
    print(f"recognised={result['recognised']:.4f} validation={result['validation']['recognised']:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
