"""How coarse may the dashboard's deletion/insertion curves be? Fewer steps, against 28 steps.

For --images training images of the shipped test slice's train split (not the test set), every
method's map for the predicted class is scored with `explain.deletion_insertion_many` at 28 steps
and at each candidate step count. Reported: how often two maps whose areas differ by more than
0.02 at 28 steps keep their order, and the absolute change of each area.

    python bench/curve_steps.py                  # ~1 min on 2 cores

Writes <results-dir>/curve_steps.json and curve_steps.md (default bench/results/).
"""
from __future__ import annotations

import argparse
import copy
import itertools
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as common  # noqa: E402  (puts the repository root on sys.path)

import torch  # noqa: E402

import explain  # noqa: E402
from dashboard.service import CURVE_STEPS  # noqa: E402
from training.data import load_images  # noqa: E402
from model import load_model  # noqa: E402
from imaging.preprocess import fashion_look, normalize  # noqa: E402

REFERENCE, MARGIN = 28, 0.02


def compare(model, serving, raw: np.ndarray, candidates: list[int]) -> dict:
    kept = {k: [] for k in candidates}
    change = {k: [] for k in candidates}
    for image in raw:
        x = normalize(fashion_look(image), model.config.mean, model.config.std)[None]
        t = int(model(x[None]).argmax())
        maps = {n: explain.explain(model, x, n, t) for n in explain.METHODS}
        with torch.inference_mode():
            ref = explain.deletion_insertion_many(serving, x, maps, t, REFERENCE)
            for k in candidates:
                got = explain.deletion_insertion_many(serving, x, maps, t, k)
                for key in ("deletion_auc", "insertion_auc"):
                    kept[k] += [np.sign(ref[a][key] - ref[b][key]) == np.sign(got[a][key] - got[b][key])
                                for a, b in itertools.combinations(maps, 2) if abs(ref[a][key] - ref[b][key]) > MARGIN]
                    change[k] += [abs(ref[n][key] - got[n][key]) for n in maps]
    return {k: {"pairs": len(kept[k]), "order_kept": float(np.mean(kept[k])),
                "mean_abs_change": float(np.mean(change[k])), "p95_abs_change": float(np.quantile(change[k], 0.95))}
            for k in candidates}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--images", type=int, default=40)
    p.add_argument("--steps", type=int, nargs="+", default=[14, 10, 7])
    p.add_argument("--results-dir", default=str(common.RESULTS))
    cli = p.parse_args(argv)
    model = load_model(common.REPO / "weights").eval()
    serving = copy.deepcopy(model).optimize_for_inference_()
    _, _, raw = load_images(str(common.REPO / "tests" / "data" / "fashion_mnist"), "train")
    raw = raw[np.random.default_rng(0).choice(len(raw), cli.images, replace=False)]
    rows = compare(model, serving, raw, cli.steps)
    res = {"info": {"machine": common.machine_info(), "command": common.command_line("bench/curve_steps.py")},
           "reference_steps": REFERENCE, "margin": MARGIN, "images": cli.images, "dashboard_steps": CURVE_STEPS,
           "rows": rows}
    md = f"""# Deletion/insertion curves: fewer steps against {REFERENCE}

{cli.images} training images, every method's map for the predicted class, both areas. "Order kept": of the
pairs of maps whose areas differ by more than {MARGIN} at {REFERENCE} steps, the share still in the same order.
The dashboard uses {CURVE_STEPS} steps (`dashboard/service.py` CURVE_STEPS).

{common.md_table(['steps', 'pairs', 'order kept', 'mean |change| of an area', 'p95 |change|'],
                 [[k, r['pairs'], f"{r['order_kept']:.1%}", f"{r['mean_abs_change']:.4f}", f"{r['p95_abs_change']:.4f}"]
                  for k, r in rows.items()])}

```bash
{res['info']['command']}
```
"""
    json_path, md_path = common.write_results(cli.results_dir, "curve_steps", res, md)
    print(md)
    print(f"[curve_steps] wrote {json_path} and {md_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
