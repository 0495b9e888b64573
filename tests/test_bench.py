"""Smoke tests of the bench/ scripts: each runs end to end on tiny settings and writes a well-formed table.

No timing assertions: the figures themselves are measured by the scripts and committed under
bench/results/. These only check that the scripts still run against the current code.

    pytest tests/test_bench.py -q          # ~1 min on 2 idle cores (starts the app once)
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DATA = "tests/data/fashion_mnist"


def run(args: list[str], timeout: float) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, *args], cwd=REPO, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{args[0]} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


@pytest.fixture(scope="module")
def tiny_weights(tmp_path_factory) -> Path:
    """A real (tiny) model folder, as train.py writes it: one epoch on the test slice."""
    weights = tmp_path_factory.mktemp("bench") / "weights"
    run(["train.py", "--dataset", DATA, "--epochs", "1", "--val-size", "100", "--batch-size", "64",
         "--out", str(weights), "--no-progress", "--trust-images", "0"], timeout=300)
    return weights


def test_recipes_writes_reference_and_shipped_rows(tmp_path, tiny_weights):
    weights = tiny_weights
    results = tmp_path / "results"
    run(["bench/recipes.py", "--dataset", DATA, "--val-size", "100", "--max-epochs", "1",
         "--recipes", "quickstart-mlp", "two-conv-cnn", "shipped", "--weights", str(weights),
         "--run", f"candidate={weights}", "--inference-repeats", "5", "--results-dir", str(results)], timeout=180)

    data = json.loads((results / "recipes.json").read_text())
    rows = {r["name"]: r for r in data["rows"]}
    assert list(rows) == ["quickstart-mlp", "two-conv-cnn", "shipped", "candidate"]
    # The references are the published architectures: their parameter counts say so.
    assert rows["quickstart-mlp"]["parameters"] == 784 * 512 + 512 + 512 * 512 + 512 + 512 * 10 + 10
    assert rows["two-conv-cnn"]["parameters"] == (9 * 32 + 32) + (9 * 32 * 64 + 64) + (9216 * 128 + 128) + (128 * 10 + 10)
    shipped_metrics = json.loads((weights / "evaluation" / "metrics.json").read_text())
    assert rows["shipped"]["test_accuracy"] == shipped_metrics["accuracy"]      # read, not re-evaluated
    assert rows["candidate"]["history"] == json.loads((weights / "training_history.json").read_text())
    for r in rows.values():
        assert 0.0 <= r["test_accuracy"] <= 1.0 and 0.0 <= r["val_accuracy"] <= 1.0
        assert r["inference"]["served"]["median_ms"] > 0
    for r in ("quickstart-mlp", "two-conv-cnn"):
        assert rows[r]["epochs_run"] == 1 and rows[r]["train_seconds"] > 0

    md = (results / "recipes.md").read_text()
    table = [line for line in md.splitlines() if line.startswith("| ")]
    assert len(table) == 1 + 4, md                                # header + one line per recipe
    assert all(line.count("|") == table[0].count("|") for line in table)
    assert "python bench/recipes.py" in md and "trained by `python train.py" in md


def test_ablation_runs_every_row_per_seed_and_its_paired_tests_agree_with_its_answers(tmp_path, tiny_weights):
    sys.path.insert(0, str(REPO / "bench"))
    from ablation import MLP_OPTIONS, NO_TTA, RECIPE, SHIPPED, unpacked
    results = tmp_path / "results"
    run(["bench/ablation.py", "--dataset", DATA, "--val-size", "100", "--budget-minutes", "0.02", "--seeds", "0", "1",
         "--mlp-epochs", "1", "--weights", str(tiny_weights), "--results-dir", str(results)], timeout=240)

    data = json.loads((results / "ablation.json").read_text())
    assert data["info"]["complete"] and set(data["mlp_grid"]) == set(MLP_OPTIONS)
    assert data["info"]["mlp_option"] == max(data["mlp_grid"], key=lambda o: data["mlp_grid"][o]["val_accuracy"])
    names = [RECIPE, NO_TTA, "no augmentation", "no EMA", "no label smoothing", "two-conv-cnn", "quickstart-mlp"]
    assert [s["name"] for s in data["summary"]] == names and all(s["runs"] == 2 for s in data["summary"])
    runs = {(r["name"], r["seed"]): r for r in data["runs"]}
    n = data["info"]["test_n"]
    for r in runs.values():        # the stored answers are the ones the accuracy was computed from
        assert unpacked(r["test_right_bits"], n).float().mean().item() == pytest.approx(r["test_accuracy"])
    def options(name, seed):       # train.py options but the output folder, which is named after the row
        argv = runs[(name, seed)]["train_options"]
        return argv[:argv.index("--out")] + argv[argv.index("--out") + 2:]
    for seed in (0, 1):            # an ablation changes only its own option
        base = options(RECIPE, seed)
        assert options("no EMA", seed) == base[:4] + ["--ema", "0"] + base[4:]
        assert options(NO_TTA, seed) == base
    sys.path.insert(0, str(REPO))
    from training import evaluate
    from training.data import load_images
    from model import load_model
    looks, labels, _ = load_images(DATA, "test")
    shipped = evaluate.predict_probs(load_model(tiny_weights), looks).argmax(1) == labels
    for t in data["mcnemar"]:      # each paired test, redone from the stored answers
        ours = shipped if t["ours"] == SHIPPED else unpacked(runs[(t["ours"], t["seed"])]["test_right_bits"], n)
        theirs = unpacked(runs[(t["reference"], t["seed"])]["test_right_bits"], n)
        assert {k: t[k] for k in ("ours_only", "theirs_only", "p_value")} == evaluate.mcnemar(ours, theirs)
    assert {(t["ours"], t["reference"]) for t in data["mcnemar"]} == {
        (SHIPPED, RECIPE), (SHIPPED, "two-conv-cnn"), (SHIPPED, "quickstart-mlp"),
        (RECIPE, "two-conv-cnn"), (RECIPE, "quickstart-mlp")}
    for s in data["summary"]:      # each row against the recipe, paired by seed
        assert (s["vs_recipe"] is None) == (s["name"] == RECIPE)
        if s["vs_recipe"]:
            d = [runs[(s["name"], seed)]["test_accuracy"] - runs[(RECIPE, seed)]["test_accuracy"] for seed in (0, 1)]
            assert s["vs_recipe"]["mean"] == pytest.approx(sum(d) / 2)
            assert s["vs_recipe"]["p_value"] == pytest.approx(evaluate.paired_t_p(d))
    md = (results / "ablation.md").read_text()
    # Three tables, each a header and its rows: 7 rows, 4 MLP options, 5 paired tests x 2 seeds.
    assert "python bench/ablation.py" in md and md.count("\n| ") == (1 + 7) + (1 + 4) + (1 + 10), md


def test_latency_reports_every_method(tmp_path, tiny_weights):
    sys.path.insert(0, str(REPO))
    import explain
    results = tmp_path / "results"
    run(["bench/latency.py", "--model", str(tiny_weights), "--repeats", "3", "--explain-repeats", "1", "--no-app",
         "--results-dir", str(results)], timeout=120)
    data = json.loads((results / "latency.json").read_text())
    assert list(data["local"]["methods"]) == list(explain.METHODS)
    md = (results / "latency.md").read_text()
    for name in explain.METHODS:
        assert f"| explain: {name} |" in md
    assert "| classify (28x28 test image) |" in md and "python bench/latency.py" in md


def test_load_checks_every_answer_of_the_real_app(tmp_path, tiny_weights):
    results = tmp_path / "results"
    run(["bench/load.py", "--model", str(tiny_weights), "--requests", "8", "--concurrency", "4", "--images", "3",
         "--full-every", "2", "--idle", "0", "--timeout", "120", "--results-dir", str(results)], timeout=240)
    data = json.loads((results / "load.json").read_text())
    assert data["stats"]["all"] == data["stats"]["all"] | {"sent": 8, "served": 8, "wrong": 0, "errors": 0}
    assert len(data["outcomes"]) == 8 and data["memory"]["peak_mib"] >= data["memory"]["start_mib"] > 0
    assert data["memory"]["warm_mib"] > 0 and "after - warm-up (MiB)" in (results / "load.md").read_text()


def test_session_cost_measures_the_real_page(tmp_path):
    run(["bench/session_cost.py", "--sessions", "100", "--rounds", "2", "--calls", "3", "--results-dir", str(tmp_path)],
        timeout=180)
    data = json.loads((tmp_path / "session_cost.json").read_text())
    assert data["sessions"] == 100 and data["blocks"] > 50 and data["per_session_kib"] > 0 and len(data["explain_rss_mib"]) == 3
    assert data["bound_mib"] == data["per_session_kib"] * data["state_session_capacity"] / 1024


def test_throughput_compares_float32_with_bf16(tmp_path):
    run(["bench/throughput.py", "--steps", "2", "--batch-size", "16", "--results-dir", str(tmp_path)], timeout=300)
    data = json.loads((tmp_path / "throughput.json").read_text())
    assert [(r["bf16"], r["channels_last"]) for r in data["rows"]] == [(False, False), (False, True), (True, False), (True, True)]
    assert all(r["images_per_s"] > 0 for r in data["rows"])
    assert "| float32 |" in (tmp_path / "throughput.md").read_text()
    assert [w["parameters"] for w in data["widths"]][:2] == [482_154, 865_402]   # 32/64/128, then 16/64/192
    assert all(w["images_per_s"] > 0 for w in data["widths"])


def test_report_gives_a_fine_tune_the_training_of_its_start(tmp_path, monkeypatch):
    """The README's model row: a fine-tune's minutes alone would hide the run it started from."""
    monkeypatch.setattr(sys, "path", [*sys.path, str(REPO / "bench")])   # after the root: bench/ood.py must not shadow ood.py
    import report
    (tmp_path / "recipes.json").write_text(json.dumps({"rows": [{"name": "shipped", "train_seconds": 3420.0,
                                                                 "source": "from weights/, trained by `python train.py`"}]}))
    monkeypatch.setattr(report.common, "RESULTS", tmp_path)
    tuned = {"command": "python train.py --init-from start --wise 0.5", "train_seconds": 180.0, "hardware": "CPU"}
    assert report.training_time(tuned, "3.0 min on CPU") == ("fine-tuned 3.0 min on CPU from the Fashion-MNIST model "
                                                              "(57.0 min): 60.0 min of training in all")
    photo = {"command": "python train.py --init-from start --photo-norms", "train_seconds": 120.0}
    assert report.training_time(photo, "2.0 min on CPU") == ("photo BatchNorm trained 2.0 min on CPU from the "
                                                              "Fashion-MNIST model (57.0 min): 59.0 min of training in all")
    assert report.training_time({"command": "python train.py"}, "57.0 min on CPU") == "last training run 57.0 min on CPU"
    # bench/recipes.py rerun after the fine-tune shipped: its 'shipped' row is the fine-tune, not its start.
    (tmp_path / "recipes.json").write_text(json.dumps({"rows": [{"name": "shipped", "train_seconds": 180.0,
                                                                 "source": "trained by `python train.py --init-from a`"}]}))
    assert report.training_time(tuned, "3.0 min on CPU") == ("fine-tuned 3.0 min on CPU, after the training of the "
                                                              "model it started from")
