"""Fair comparisons: every recipe at one wall-time budget, several seeds, and a paired test.

* The shipped recipe (train.py's defaults) and the same recipe with one trick removed at a time:
  augmentation (shift, flip, erasing), the EMA of the weights, label smoothing; test-time
  augmentation (flip averaging) is removed at evaluation, on the very models of the recipe's runs.
* The two-conv CNN of pytorch/examples, trained the usual way (Adam, no tricks), at the same budget.
* The Quickstart MLP trained properly: its optimiser chosen on validation from a small grid, its
  epoch chosen on validation; the chosen option then rerun with the other seeds.
* Each row against the recipe at the same seeds (same split, same initialisation): the mean
  difference and a paired t-test. McNemar's exact test of the shipped weights against each
  reference run, and of the recipe against the references of its seed, on the test set.

Every choice (checkpoint epoch, the MLP's optimiser) is made on the validation split; the test set
is read once per trained model and decides nothing. Each run's budget is wall time
(train.py --budget-minutes), so the machine must be otherwise idle.

    python bench/ablation.py                       # ~1 hour on 2 idle cores
    python bench/ablation.py --dataset tests/data/fashion_mnist --val-size 100 --budget-minutes 0.05 \\
        --seeds 0 1 --mlp-epochs 1 --results-dir /tmp/bench             # smoke run, seconds
    python bench/ablation.py --summarize           # the tables again from the saved runs, no training

Writes <results-dir>/ablation.json and ablation.md (default bench/results/); both are rewritten after
every run, so an interrupted study keeps what it finished.
"""
from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import math
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as common  # noqa: E402  (puts the repository root on sys.path)

import numpy as np  # noqa: E402
import torch  # noqa: E402

from training import evaluate  # noqa: E402
from training.config import cpu_has_fast_bf16  # noqa: E402
from training.data import load_images, split_train_val  # noqa: E402
from model import count_parameters, load_model  # noqa: E402
from recipes import NO_TRICKS, QuickstartMLP, Recipe, TwoConvCNN, fit, images_per_s  # noqa: E402

RECIPE = "our recipe"
NO_TTA = "no test-time flip"
SHIPPED = "shipped weights"


def budget_recipes(minutes: float) -> list[Recipe]:
    """The rows trained at the shared budget: the recipe, its ablations, the two-conv CNN."""
    budget = ["--epochs", "200", "--budget-minutes", f"{minutes:g}"]
    return [
        Recipe(RECIPE, budget),                        # train.py's defaults, one-cycle fitted to the budget
        Recipe("no augmentation", budget + ["--translate", "0", "--flip", "0", "--erase", "0"]),
        Recipe("no EMA", budget + ["--ema", "0"]),
        Recipe("no label smoothing", budget + ["--label-smoothing", "0"]),
        Recipe("two-conv-cnn", ["--optimizer", "adam", "--lr", "1e-3", "--schedule", "constant", "--batch-size", "128",
                                *budget, *NO_TRICKS], TwoConvCNN),
    ]


# The MLP's options, all without augmentation (it has no spatial prior for shifts to teach): the
# tutorial's plain SGD, then what one would try first. The epoch is chosen on validation in each.
MLP_OPTIONS = {
    "tutorial: SGD lr 1e-3, no momentum, constant": ["--optimizer", "sgd", "--momentum", "0", "--lr", "1e-3",
                                                     "--schedule", "constant"],
    "SGD Nesterov lr 0.05, one-cycle": ["--optimizer", "sgd", "--lr", "0.05", "--schedule", "onecycle"],
    "Adam lr 1e-3, constant": ["--optimizer", "adam", "--lr", "1e-3", "--schedule", "constant"],
    "Adam lr 1e-3, one-cycle": ["--optimizer", "adam", "--lr", "1e-3", "--schedule", "onecycle"],
}


def mlp_recipe(option: str, epochs: int) -> Recipe:
    return Recipe(f"quickstart-mlp ({option})", MLP_OPTIONS[option] + ["--batch-size", "64", "--epochs", str(epochs),
                                                                       *NO_TRICKS], QuickstartMLP)


def without_tta(model: torch.nn.Module) -> torch.nn.Module:
    """The same weights, served from one view instead of the image and its mirror."""
    plain = copy.deepcopy(model)
    plain.config = dataclasses.replace(plain.config, flip_tta=False)
    return plain


def accuracy(model: torch.nn.Module, looks: torch.Tensor, labels: torch.Tensor) -> tuple[float, torch.Tensor]:
    right = evaluate.predict_probs(model, looks).argmax(1) == labels          # (N,) bool
    return right.float().mean().item(), right


def validation(looks: torch.Tensor, labels: torch.Tensor, val_size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The validation images train.py held out for this seed."""
    val_idx = split_train_val(len(looks), val_size, seed)[1]
    return looks[val_idx], labels[val_idx]


def packed(right: torch.Tensor) -> str:
    """Right/wrong per test image as hex (1 bit an image), so any paired test can be redone from the JSON."""
    return np.packbits(right.numpy()).tobytes().hex()


def unpacked(hex_bits: str, n: int) -> torch.Tensor:
    return torch.from_numpy(np.unpackbits(np.frombuffer(bytes.fromhex(hex_bits), dtype=np.uint8))[:n].astype(bool))


def run_row(recipe: Recipe, cli, data, split: dict, out_dir: Path, seed: int) -> tuple[dict, torch.nn.Module]:
    model, history, val_acc, seconds, argv = fit(recipe, cli, data, out_dir, seed)
    test_acc, right = accuracy(model, *split["test"])
    row = {"name": recipe.name, "seed": seed, "train_options": argv, "val_accuracy": val_acc,
           "test_accuracy": test_acc, "train_seconds": seconds, "epochs_run": len(history),
           "best_epoch": max(history, key=lambda h: h["val_accuracy"])["epoch"],
           "images_per_s": images_per_s(history), "parameters": count_parameters(model), "right": right}
    return row, model


def spread(xs: list[float]) -> float:
    return statistics.stdev(xs) if len(xs) > 1 else 0.0


def versus_recipe(rs: list[dict], runs: list[dict]) -> dict | None:
    """A row against the recipe at the same seeds (same split, same initialisation): the mean of
    the per-seed test differences, its standard error and the paired t-test's p."""
    recipe = {r["seed"]: r["test_accuracy"] for r in runs if r["name"] == RECIPE}
    d = [r["test_accuracy"] - recipe[r["seed"]] for r in rs if r["seed"] in recipe]
    if len(d) < 2 or rs[0]["name"] == RECIPE:
        return None
    return {"mean": statistics.mean(d), "se": statistics.stdev(d) / math.sqrt(len(d)),
            "p_value": evaluate.paired_t_p(d), "seeds": len(d)}


def summary(runs: list[dict]) -> list[dict]:
    """Mean and sample standard deviation per row name, in first-seen order, and each row against
    the recipe."""
    names = list(dict.fromkeys(r["name"] for r in runs))
    out = []
    for name in names:
        rs = [r for r in runs if r["name"] == name]
        out.append({"name": name, "runs": len(rs), "seeds": [r["seed"] for r in rs],
                    "val_mean": statistics.mean(r["val_accuracy"] for r in rs),
                    "val_sd": spread([r["val_accuracy"] for r in rs]),
                    "test_mean": statistics.mean(r["test_accuracy"] for r in rs),
                    "test_sd": spread([r["test_accuracy"] for r in rs]),
                    "epochs_mean": statistics.mean(r["epochs_run"] for r in rs),
                    "images_per_s": statistics.mean(r["images_per_s"] for r in rs),
                    "parameters": rs[0]["parameters"], "vs_recipe": versus_recipe(rs, runs)})
    return out


def markdown(data: dict) -> str:
    info, rows = data["info"], data["summary"]
    table = [[r["name"], r["runs"], f"{r['val_mean']:.2%} ± {r['val_sd']:.2%}",
              f"{r['test_mean']:.2%} ± {r['test_sd']:.2%}",
              (f"{r['vs_recipe']['mean'] * 100:+.2f} ± {r['vs_recipe']['se'] * 100:.2f} (p {r['vs_recipe']['p_value']:.2g})"
               if r.get("vs_recipe") else ""),
              f"{r['epochs_mean']:.1f}", f"{r['images_per_s']:,.0f}", f"{r['parameters']:,}"] for r in rows]
    grid = [[option, f"{v['val_accuracy']:.2%}", v["best_epoch"]] for option, v in data["mlp_grid"].items()]
    tests = [[t["ours"], t["reference"], t["seed"], t["ours_only"], t["theirs_only"], f"{t['p_value']:.1e}"]
             for t in data["mcnemar"]]
    m = info["machine"]
    return f"""# Fair comparisons: one budget, {len(info['seeds'])} seeds, a paired test

Every FashionCNN and two-conv CNN row trained for the same {info['budget_minutes']:g} minutes of wall time
(`train.py --budget-minutes`), seeds {', '.join(map(str, info['seeds']))}; mean ± sample standard deviation over seeds. Checkpoint
epoch chosen on validation ({info['val_size']:,} training images held out); the test set ({info['test_n']:,} images)
read once per model. "{NO_TTA}" is {RECIPE}'s own models evaluated from one view. The Δ column:
the test accuracy minus {RECIPE}'s at the same seed (same split and initialisation), mean ± standard
error, and the two-sided p of the paired t-test over seeds.
{"" if info.get("complete") else chr(10) + "**Incomplete**: the study was interrupted; the rows below are the runs it finished." + chr(10)}
{common.md_table(["row", "runs", "val acc", "test acc", "test Δ vs recipe, paired (points, p)", "epochs", "train img/s",
                  "params"], table)}

The MLP's optimiser, chosen on validation (seed {info['seeds'][0]}, up to {info['mlp_epochs']} epochs, best epoch kept);
the chosen one is the `quickstart-mlp` row above:

{common.md_table(["MLP option", "val acc", "best epoch"], grid)}

McNemar's exact test on the test set, two-sided: the {SHIPPED} (`{info['weights']}`, test accuracy
{info['weights_test_accuracy']:.2%}) against each reference run, and {RECIPE} against the references of its
seed at the same budget. "Ours only": test images the first model gets right and the reference wrong.

{common.md_table(["model", "reference", "seed", "ours only", "reference only", "p"], tests)}

Machine: {m['cpu_model']}, {m['cpu_count']} cores, torch {m['torch']} ({m['torch_threads']} threads),
{info['train_precision']}; load average at the start {m['load_average_1_5_15min'][0]:.2f}, at the end
{info['load_average_end'][0]:.2f}. Whole study: {info['total_seconds'] / 60:.1f} min.

```bash
{info['command']}
```
"""


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--dataset", default="../shared/data/fashion_mnist", help="Hub dataset id or local folder")
    p.add_argument("--weights", default="weights", help="the shipped model, tested against the references")
    p.add_argument("--budget-minutes", type=float, default=3.0, help="wall time of every budget run")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--mlp-epochs", type=int, default=20, help="most epochs of an MLP run (best kept on validation)")
    p.add_argument("--val-size", type=int, default=5000, help="training images held out for validation")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument("--results-dir", default=str(common.RESULTS), help="where ablation.json and ablation.md go")
    p.add_argument("--summarize", action="store_true",
                   help="no training: recompute the summary and the tables from the runs saved in ablation.json")
    cli = p.parse_args(argv)
    cli.max_epochs = 0                                 # recipes.fit's smoke cap: the budget bounds these runs
    return cli


def main(argv=None) -> int:
    cli = parse_args(argv)
    if cli.summarize:
        data = json.loads((Path(cli.results_dir) / "ablation.json").read_text())
        data["summary"] = summary(data["runs"])
        common.write_results(cli.results_dir, "ablation", data, markdown(data))
        return 0
    if cli.threads:
        torch.set_num_threads(cli.threads)
    t0 = time.perf_counter()
    looks, labels, _ = load_images(cli.dataset, "train")
    split = {"test": load_images(cli.dataset, "test")[:2]}
    shipped = load_model(cli.weights)
    shipped_acc, shipped_right = accuracy(shipped, *split["test"])
    info = {"machine": common.machine_info(), "dataset": cli.dataset, "weights": common.rel(cli.weights),
            "weights_test_accuracy": shipped_acc, "budget_minutes": cli.budget_minutes, "seeds": cli.seeds,
            "mlp_epochs": cli.mlp_epochs, "val_size": cli.val_size, "test_n": len(split["test"][1]),
            "train_precision": "bf16 autocast" if cpu_has_fast_bf16(torch.device("cpu")) else "float32",
            "command": common.command_line("bench/ablation.py"), "complete": False}
    data = {"info": info, "runs": [], "summary": [], "mlp_grid": {}, "mcnemar": []}

    def record(row: dict, against: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        """Add a finished run; `against`: the models it is tested against (McNemar), by name."""
        right = row.pop("right")
        row["test_right_bits"] = packed(right)
        data["runs"].append(row)
        for ours, ours_right in (against or {}).items():
            data["mcnemar"].append({"ours": ours, "reference": row["name"], "seed": row["seed"],
                                    **evaluate.mcnemar(ours_right, right)})
        data["summary"] = summary(data["runs"])
        info.update(total_seconds=time.perf_counter() - t0, load_average_end=os.getloadavg())
        common.write_results(cli.results_dir, "ablation", data, markdown(data))
        print(f"[ablation] {row['name']} seed {row['seed']}: val {row['val_accuracy']:.4f} "
              f"test {row['test_accuracy']:.4f} ({row['epochs_run']} epochs)", flush=True)
        return right

    with tempfile.TemporaryDirectory(prefix="bench-ablation-") as tmp:
        out = Path(tmp)
        for seed in cli.seeds:             # seed-major: an interrupted study still has every row at some seed
            ours = {SHIPPED: shipped_right}
            for recipe in budget_recipes(cli.budget_minutes):
                row, model = run_row(recipe, cli, (looks, labels), split, out, seed)
                right = record(row, against=ours if recipe.name in (RECIPE, "two-conv-cnn") else None)
                if recipe.name == RECIPE:
                    ours[RECIPE] = right                   # the same-budget, same-seed pair for the CNN
                    plain, val = dict(row, name=NO_TTA), validation(looks, labels, cli.val_size, seed)
                    plain["val_accuracy"] = accuracy(without_tta(model), *val)[0]
                    plain["test_accuracy"], plain["right"] = accuracy(without_tta(model), *split["test"])
                    record(plain)
            if seed == cli.seeds[0]:       # the MLP's options, chosen on this seed's validation split
                grid = {}
                for option in MLP_OPTIONS:
                    row, _ = run_row(mlp_recipe(option, cli.mlp_epochs), cli, (looks, labels), split, out, seed)
                    grid[option] = row
                    data["mlp_grid"][option] = {"val_accuracy": row["val_accuracy"], "best_epoch": row["best_epoch"]}
                info["mlp_option"] = max(grid, key=lambda o: grid[o]["val_accuracy"])
                row = grid[info["mlp_option"]]
            else:
                row, _ = run_row(mlp_recipe(info["mlp_option"], cli.mlp_epochs), cli, (looks, labels), split, out, seed)
            record(dict(row, name="quickstart-mlp"), against=ours)
    info["complete"] = True
    record_final = markdown(data)
    common.write_results(cli.results_dir, "ablation", data, record_final)
    print(record_final)
    return 0


if __name__ == "__main__":
    sys.exit(main())
