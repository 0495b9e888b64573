"""Train candidate recipes through train.py's own loop, side by side with two reference models.

Every recipe runs through `train.train` (same data, same validation split, same checkpoint choice
on validation), then is evaluated once on the test set with `evaluate.predict_probs` +
`evaluate.classification_metrics`. The references are what a user would otherwise pick:

* quickstart-mlp: the PyTorch "Quickstart" Fashion-MNIST MLP (784-512-512-10), plain SGD lr 1e-3,
  batch 64, 5 epochs, no augmentation, as in the tutorial.
* two-conv-cnn: the pytorch/examples mnist `Net` (two convs, max-pool, dropout, 9216-128-10),
  Adam lr 1e-3 constant, batch 128, 10 epochs, no augmentation.

The shipped recipe takes ~57 min on 2 CPU cores, so its row is read from weights/ (metrics.json and
training_history.json, written by the run that produced the weights) unless --rerun-shipped; `--run`
adds rows read the same way from other train.py output folders (the validation runs that chose it).
`shipped-budget` is the shipped recipe with its one-cycle fitted to a short wall-time budget
(train.py --budget-minutes; 7 minutes by default): what the recipe gives when time is short.

    python bench/recipes.py                                             # ~20 min on 2 idle cores
    python bench/recipes.py --recipes quickstart-mlp two-conv-cnn shipped
    python bench/recipes.py --rerun-shipped                             # + ~57 min
    python bench/recipes.py --run val-run-16-64-192=outputs/w16-64-192   # + a row per train.py run
    python bench/recipes.py --dataset tests/data/fashion_mnist --val-size 100 --max-epochs 1 \\
        --results-dir /tmp/bench                                        # smoke run, seconds

Writes <results-dir>/recipes.json and recipes.md (default bench/results/).
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import shlex
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

if str(Path(__file__).resolve().parent) not in sys.path:    # imported by another bench script: its sys.path
    sys.path.insert(0, str(Path(__file__).resolve().parent))  # already puts the repository first (bench/ood.py shadows ood)
import _common as common  # noqa: E402  (puts the repository root on sys.path)

import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from training import evaluate  # noqa: E402
import train  # noqa: E402
from training.config import cpu_has_fast_bf16, setup_runtime  # noqa: E402
from training.data import load_images  # noqa: E402
from model import count_parameters, load_model  # noqa: E402
from imaging.preprocess import normalize  # noqa: E402

# Every recipe trick of train.py switched off: what "trained the usual way" means here.
NO_TRICKS = ["--translate", "0", "--flip", "0", "--erase", "0", "--ema", "0", "--label-smoothing", "0",
             "--tta", "0", "--weight-decay", "0"]


class QuickstartMLP(nn.Module):
    """The PyTorch Quickstart tutorial's NeuralNetwork (pytorch.org/tutorials/beginner/basics/quickstart_tutorial)."""

    def __init__(self):
        super().__init__()
        self.flatten = nn.Flatten()
        self.linear_relu_stack = nn.Sequential(nn.Linear(28 * 28, 512), nn.ReLU(), nn.Linear(512, 512), nn.ReLU(),
                                               nn.Linear(512, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear_relu_stack(self.flatten(x))                 # (B, 784) -> (B, 10)


class TwoConvCNN(nn.Module):
    """pytorch/examples mnist/main.py `Net`; returns logits (the original's log_softmax is folded into the loss)."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, 3, 1)
        self.conv2 = nn.Conv2d(32, 64, 3, 1)
        self.dropout1 = nn.Dropout(0.25)
        self.dropout2 = nn.Dropout(0.5)
        self.fc1 = nn.Linear(9216, 128)
        self.fc2 = nn.Linear(128, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.conv1(x))                                      # (B, 32, 26, 26)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)                     # (B, 64, 12, 12)
        x = torch.flatten(self.dropout1(x), 1)                         # (B, 9216)
        return self.fc2(self.dropout2(F.relu(self.fc1(x))))           # (B, 10)


@dataclass
class Recipe:
    name: str
    argv: list[str]                                   # train.py options
    build: Callable[[], nn.Module] | None = None      # None: train.py's FashionCNN from the options
    notes: list[str] = field(default_factory=list)


def recipes(shipped_budget_minutes: float) -> dict[str, Recipe]:
    return {r.name: r for r in [
        Recipe("quickstart-mlp", ["--optimizer", "sgd", "--momentum", "0", "--lr", "1e-3", "--schedule", "constant",
                                  "--batch-size", "64", "--epochs", "5", *NO_TRICKS], QuickstartMLP, notes=[
            "PyTorch Quickstart MLP: SGD lr 1e-3 without momentum, batch 64, 5 epochs, no augmentation, as the tutorial.",
            "Differences from the tutorial: inputs are normalised (mean 0.2860, std 0.3530; the tutorial's ToTensor() "
            "leaves [0, 1]) and pass train.py's preprocessing; it trains on the 55,000 images left after the "
            "validation hold-out (the tutorial: 60,000) and keeps its best epoch on validation."]),
        Recipe("two-conv-cnn", ["--optimizer", "adam", "--lr", "1e-3", "--schedule", "constant", "--batch-size", "128",
                                "--epochs", "10", "--max-minutes", "10", *NO_TRICKS], TwoConvCNN, notes=[
            "pytorch/examples mnist Net (conv 32, conv 64, max-pool, dropout 0.25/0.5, fc 9216-128-10).",
            "Trained 'the usual way' in our loop: Adam lr 1e-3 constant, batch 128, 10 epochs (10-minute cap), no "
            "augmentation. The examples' Adadelta lr 1.0 + StepLR(0.7) for 14 epochs is not an option of train.py."]),
        Recipe("shipped-budget", ["--epochs", "200", "--budget-minutes", str(shipped_budget_minutes)],
               notes=[f"The shipped recipe (train.py defaults: FashionCNN, SGD Nesterov + one-cycle, shift/flip/erase, "
                      f"EMA, label smoothing, flip TTA, temperature) with its one-cycle fitted to "
                      f"{shipped_budget_minutes:g} minutes of wall time (--budget-minutes)."]),
    ]}


def with_max_epochs(argv: list[str], max_epochs: int) -> list[str]:
    """Cap --epochs (smoke runs); the cap is part of the recorded command."""
    if not max_epochs:
        return argv
    out, i = [], 0
    while i < len(argv):
        if argv[i] == "--epochs":
            out += ["--epochs", str(min(int(argv[i + 1]), max_epochs))]
            i += 2
        else:
            out.append(argv[i])
            i += 1
    return out if "--epochs" in out else out + ["--epochs", str(max_epochs)]


@torch.inference_mode()
def inference_ms(model: nn.Module, looks: torch.Tensor, repeats: int) -> dict:
    """Batch-1 latency: one forward pass, and the served path (predict_proba: flip TTA if the model has it;
    BatchNorm folded and channels-last for FashionCNN, as app.py serves it)."""
    model.eval()
    if hasattr(model, "optimize_for_inference_"):
        model = copy.deepcopy(model).optimize_for_inference_()         # as app.py serves it
    x = normalize(looks[:1][:, None])                                  # (1, 1, 28, 28)
    proba = getattr(model, "predict_proba", lambda xb: model(xb).float().softmax(-1))
    return {"forward": common.time_calls(lambda: model(x), repeats, warmup=5),
            "served": common.time_calls(lambda: proba(x), repeats, warmup=5)}


def fit(recipe: Recipe, cli, data, out_dir: Path, seed: int) -> tuple[nn.Module, list[dict], float | None, float, list[str]]:
    """Train `recipe` through train.py's own loop; returns its best-on-validation model, the history,
    the validation accuracy, the seconds and the train.py options it ran with."""
    argv = with_max_epochs(recipe.argv, cli.max_epochs)
    argv += ["--dataset", cli.dataset, "--out", str(out_dir / recipe.name), "--val-size", str(cli.val_size),
             "--seed", str(seed), "--no-progress"]
    if cli.threads:
        argv += ["--threads", str(cli.threads)]
    cfg = train.parse_config(argv)
    runtime = setup_runtime(cfg.runtime)
    torch.manual_seed(cfg.data.seed)                                   # same init for every run of a recipe
    model = recipe.build() if recipe.build else None
    print(f"[{Path(sys.argv[0]).stem}] {recipe.name}: python train.py {shlex.join(argv)}", flush=True)
    run = train.train(cfg, runtime, model=model, data=data)
    return run.model, run.history, run.val_accuracy, run.seconds, argv


def images_per_s(history: list[dict]) -> float:
    """Training throughput over the whole run (augmentation + forward + backward)."""
    return sum(h["images_per_s"] * h["seconds"] for h in history) / sum(h["seconds"] for h in history)


def train_recipe(recipe: Recipe, cli, data, test, out_dir: Path) -> dict:
    model, history, val_acc, seconds, argv = fit(recipe, cli, data, out_dir, cli.seed)
    metrics = evaluate.classification_metrics(evaluate.predict_probs(model, test[0]), test[1])   # test: once
    return {"name": recipe.name, "source": "trained in this run", "train_options": argv,
            "test_accuracy": metrics["accuracy"], "test_accuracy_ci95": metrics["accuracy_ci95"],
            "macro_f1": metrics["macro_f1"], "val_accuracy": val_acc, "parameters": count_parameters(model),
            "train_seconds": seconds, "images_per_s": images_per_s(history),
            "epochs_run": len(history), "best_epoch": max(history, key=lambda h: h["val_accuracy"])["epoch"],
            "inference": inference_ms(model, test[0], cli.inference_repeats), "notes": recipe.notes,
            "history": history}


def row_from_run(name: str, folder: Path, test_looks: torch.Tensor, repeats: int) -> dict:
    """A row as recorded by the train.py run that produced `folder` (no retraining, test set not re-read)."""
    metrics = json.loads((folder / "evaluation" / "metrics.json").read_text())
    history = json.loads((folder / "training_history.json").read_text())
    model = load_model(folder)
    return {"name": name, "source": f"from {common.rel(folder)}/, trained by `{metrics.get('command', '?')}`",
            "test_accuracy": metrics["accuracy"], "test_accuracy_ci95": metrics["accuracy_ci95"],
            "macro_f1": metrics["macro_f1"], "val_accuracy": metrics.get("val_accuracy"),
            "parameters": count_parameters(model), "widths": list(model.config.widths),
            "train_seconds": metrics.get("train_seconds"),
            "images_per_s": images_per_s(history) if history else None,
            "epochs_run": metrics.get("epochs_run", len(history)), "best_epoch": metrics.get("best_epoch"),
            "inference": inference_ms(model, test_looks, repeats), "history": history,
            "notes": [f"Read from {common.rel(folder)}/evaluation/metrics.json and training_history.json: the training "
                      "time is that run's own measurement."]
            + (["A final fit (--val-size 0): trained on every training image, last epoch kept, no validation "
                "accuracy; its recipe was chosen on validation."] if metrics.get("val_accuracy") is None else [])}


def shipped_rerun_recipe(folder: Path) -> Recipe:
    """The exact options of the run that produced `folder` (its metrics.json command), minus output/dataset."""
    command = json.loads((folder / "evaluation" / "metrics.json").read_text())["command"]
    argv, keep, i = shlex.split(command)[2:], [], 0               # drop "python train.py"
    while i < len(argv):
        if argv[i] in ("--out", "--dataset", "--val-size", "--seed", "--threads", "--temperature"):
            i += 2
        elif argv[i] == "--no-progress":
            i += 1
        else:
            keep.append(argv[i])
            i += 1
    return Recipe("shipped", keep, notes=[f"The shipped recipe retrained in this run: `{command}`."])


def ratio(value, reference) -> str:
    return f"{value / reference:.2f}x" if value and reference else ""


def markdown(rows: list[dict], info: dict, cli_command: str, dataset: str) -> str:
    headers = ["recipe", "test acc", "val acc", "params", "train time", "train img/s", "inference ms/img",
               "test error vs MLP", "test error vs CNN", "train time vs CNN", "inference vs CNN"]
    ref = {r["name"]: r for r in rows}
    mlp, cnn = ref.get("quickstart-mlp"), ref.get("two-conv-cnn")
    table = []
    for r in rows:
        err = 1 - r["test_accuracy"]
        ms = r["inference"]["served"]["median_ms"]
        table.append([
            r["name"], f"{r['test_accuracy']:.2%}", f"{r['val_accuracy']:.2%}" if r["val_accuracy"] is not None else "",
            f"{r['parameters']:,}",
            f"{r['train_seconds'] / 60:.1f} min" if r["train_seconds"] else "",
            f"{r['images_per_s']:,.0f}" if r["images_per_s"] else "", f"{ms:.3f}",
            ratio(err, 1 - mlp["test_accuracy"]) if mlp else "", ratio(err, 1 - cnn["test_accuracy"]) if cnn else "",
            ratio(r["train_seconds"], cnn["train_seconds"]) if cnn else "",
            ratio(ms, cnn["inference"]["served"]["median_ms"]) if cnn else ""])
    notes = "\n".join(f"- **{r['name']}** ({r['source']}; epochs run: {r['epochs_run']}, best: {r['best_epoch']}): "
                      + " ".join(r["notes"]) for r in rows)
    return f"""# Recipes against reference models

{common.md_table(headers, table)}

Test accuracy on the {rows[0].get('test_n', 'full')} test images, reported once per recipe; every choice
(checkpoint epoch) made on the validation split ({info['val_size']:,} training images held out). Ratios are
against the references trained in the same run on the same machine (error = 1 - accuracy; below 1x is better).
Train img/s: training throughput (augmentation + forward + backward), {info['train_precision']}. Inference: batch 1, median of
{info['inference_repeats']} calls of the served path (`predict_proba`: the shipped model averages 2 views, flip
TTA; the references 1 view), `torch.inference_mode`.

{notes}

Dataset: `{dataset}`. Machine: {info['machine']['cpu_model']}, {info['machine']['cpu_count']} cores, torch
{info['machine']['torch']} ({info['machine']['torch_threads']} threads); load average at the start
{info['machine']['load_average_1_5_15min'][0]:.2f}, at the end {info['load_average_end'][0]:.2f}. Whole run:
{info['total_seconds'] / 60:.1f} min.

```bash
{cli_command}
```
"""


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--dataset", default="../shared/data/fashion_mnist", help="Hub dataset id or local folder (train.py's --dataset)")
    p.add_argument("--recipes", nargs="+", default=["quickstart-mlp", "two-conv-cnn", "shipped-budget", "shipped"],
                   choices=["quickstart-mlp", "two-conv-cnn", "shipped-budget", "shipped"], help="rows, in order")
    p.add_argument("--weights", default="weights", help="the shipped model folder (its row is read from here)")
    p.add_argument("--rerun-shipped", action="store_true", help="retrain the shipped recipe (its metrics.json command) instead of reading it")
    p.add_argument("--run", nargs="+", default=[], metavar="NAME=FOLDER",
                   help="more rows read from train.py output folders (a candidate judged on validation, say)")
    p.add_argument("--shipped-budget-minutes", type=float, default=7, help="wall-time budget of the shipped-budget row")
    p.add_argument("--val-size", type=int, default=5000, help="training images held out for validation")
    p.add_argument("--max-epochs", type=int, default=0, help="cap every recipe's epochs (0: none; for smoke runs)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument("--inference-repeats", type=int, default=200, help="batch-1 calls timed per model")
    p.add_argument("--results-dir", default=str(common.RESULTS), help="where recipes.json and recipes.md go")
    return p.parse_args(argv)


def main(argv=None) -> int:
    cli = parse_args(argv)
    if cli.threads:
        torch.set_num_threads(cli.threads)
    t0 = time.perf_counter()
    looks, labels, _ = load_images(cli.dataset, "train")
    test_looks, test_labels, _ = load_images(cli.dataset, "test")
    print(f"[recipes] data: {len(looks)} train, {len(test_looks)} test ({time.perf_counter() - t0:.0f} s)", flush=True)
    table = recipes(cli.shipped_budget_minutes)
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-recipes-") as tmp:
        for name in cli.recipes:
            if name == "shipped" and not cli.rerun_shipped:
                if not (Path(cli.weights) / "evaluation" / "metrics.json").is_file():
                    print(f"[recipes] skipping shipped: no {cli.weights}/evaluation/metrics.json", flush=True)
                    continue
                row = row_from_run("shipped", Path(cli.weights), test_looks, cli.inference_repeats)
            else:
                recipe = shipped_rerun_recipe(Path(cli.weights)) if name == "shipped" else table[name]
                row = train_recipe(recipe, cli, (looks, labels), (test_looks, test_labels), Path(tmp))
            rows.append(row)
        rows += [row_from_run(name, Path(folder), test_looks, cli.inference_repeats)
                 for name, folder in (spec.split("=", 1) for spec in cli.run)]
        for row in rows:
            row["test_n"] = len(test_labels)
            print(f"[recipes] {row['name']}: test {row['test_accuracy']:.4f} val {row['val_accuracy']} "
                  f"{row['train_seconds'] or 0:.0f} s", flush=True)
    if not rows:
        print("[recipes] nothing to report", file=sys.stderr)
        return 1
    amx = cpu_has_fast_bf16(torch.device("cpu"))
    info = {"train_precision": "bf16 autocast (train.py --amp auto: this CPU has bf16 units)" if amx else "float32",
            "machine": common.machine_info(), "dataset": cli.dataset, "val_size": cli.val_size, "seed": cli.seed,
            "inference_repeats": cli.inference_repeats, "command": common.command_line("bench/recipes.py"),
            "total_seconds": time.perf_counter() - t0, "load_average_end": os.getloadavg()}
    md = markdown(rows, info, info["command"], cli.dataset)
    json_path, md_path = common.write_results(cli.results_dir, "recipes", {"info": info, "rows": rows}, md)
    print(md)
    print(f"[recipes] wrote {json_path} and {md_path} in {info['total_seconds'] / 60:.1f} min")
    return 0


if __name__ == "__main__":
    sys.exit(main())
