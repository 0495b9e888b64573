"""The committed Subject.ipynb, read as JSON (no kernel, so this is in the fast lane): its stored
outputs name no path of the machine that ran it, its result comes first, and the numbers it shows
are those of the artefacts it quotes. A notebook left unexecuted after new weights or new benchmark
results fails here: re-execute it (the command in tests/test_notebook.py's docstring).

    .venv/bin/python -m pytest tests/test_notebook_outputs.py -q
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import nbformat
import pytest

from training.evaluate import wilson_interval

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK = ROOT / "Subject.ipynb"

# An absolute path of a machine: /work/..., /home/..., /tmp/..., C:\Users\... Not a URL's path
# ("github.com/home/x"): the character before the slash may not be a letter, digit, dot or slash.
MACHINE_PATH = re.compile(r"(?<![\w./:])/(?:work|home|tmp|root|usr|opt|var|mnt|srv|Users|private)/|\b[A-Z]:\\\\?Users")


def machine_paths(text: str) -> list[str]:
    """Each line of `text` that names an absolute path of a machine."""
    return [line.strip()[:200] for line in text.splitlines() if MACHINE_PATH.search(line)]


def output_text(out: dict) -> str:
    """Every readable part of one stored output: stream text, text/plain/markdown/html, a traceback."""
    data = out.get("data", {})
    parts = [out.get("text", ""), *(data.get(k, "") for k in ("text/plain", "text/markdown", "text/html")),
             "\n".join(out.get("traceback", []))]
    return "\n".join(p if isinstance(p, str) else "".join(p) for p in parts)


@pytest.fixture(scope="module")
def notebook():
    return nbformat.read(NOTEBOOK, as_version=4)


def stored(notebook, key: str) -> tuple[int, dict]:
    """(cell index, value) of the one output whose metadata carries `key`."""
    found = [(i, out["metadata"][key]) for i, c in enumerate(notebook.cells) if c.cell_type == "code"
             for out in c.outputs if key in out.get("metadata", {})]
    assert len(found) == 1, f"expected one output with metadata {key!r}, found {len(found)}: re-execute Subject.ipynb"
    return found[0]


def test_the_machine_path_check_catches_paths_and_spares_urls():
    assert machine_paths("python    /work/main/.venv/bin/python")
    assert machine_paths("photos: '/home/me/data/clothing_photos'")
    assert machine_paths("wrote /tmp/bench-ablation-x/our recipe")
    assert not machine_paths("python    .venv/bin/python; data: ../shared/data/fashion_mnist")
    assert not machine_paths("https://github.com/home/tmp/x and docs/results.md")


def test_the_committed_notebook_was_executed_without_errors(notebook):
    code = [c for c in notebook.cells if c.cell_type == "code"]
    assert code and all(c.execution_count for c in code), "every code cell must carry its output: re-execute Subject.ipynb"
    errors = [i for i, c in enumerate(notebook.cells) for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors, f"cells with an error output: {errors}"


def test_no_output_names_a_path_of_the_machine_that_ran_it(notebook):
    flagged = [(i, line) for i, c in enumerate(notebook.cells) if c.cell_type == "code"
               for out in c.outputs for line in machine_paths(output_text(out))]
    assert not flagged, "\n".join(f"cell {i}: {line}" for i, line in flagged)


def test_the_test_accuracy_is_in_the_first_three_cells(notebook):
    metrics = json.loads((ROOT / "weights" / "evaluation" / "metrics.json").read_text())
    index, _ = stored(notebook, "headline")
    assert index <= 2, f"the result box is cell {index}; it must be among the first three"
    shown = "".join(output_text(o) for o in notebook.cells[index].outputs)
    assert f"{metrics['accuracy']:.2%}" in shown and "Test accuracy" in shown


def test_the_headline_numbers_are_those_of_the_artefacts(notebook):
    metrics = json.loads((ROOT / "weights" / "evaluation" / "metrics.json").read_text())
    recipes = json.loads((ROOT / "bench" / "results" / "recipes.json").read_text())
    base = next(r for r in recipes["rows"] if r["name"] == "shipped")
    photos = metrics["photos"]
    _, h = stored(notebook, "headline")
    assert h["test_accuracy"] == pytest.approx(metrics["accuracy"])
    assert h["test_ci95"] == pytest.approx(metrics["accuracy_ci95"])
    assert h["test_n"] == metrics["n"] and h["parameters"] == metrics["parameters"]
    assert h["fmnist_train_minutes"] == pytest.approx(base["train_seconds"] / 60)
    assert h["last_train_minutes"] == pytest.approx(metrics["train_seconds"] / 60)
    assert (h["photo_split"], h["photo_n"]) == (photos["split"], photos["n"])
    assert h["photo_strict"] == pytest.approx(photos["strict_accuracy"])
    assert h["photo_ci95"] == pytest.approx(wilson_interval(round(photos["strict_accuracy"] * photos["n"]), photos["n"]))
    # Held out only under the photo protocol (docs/decision_log.md, eighth decision).
    assert h["photo_held_out"] == (metrics.get("photo_trained_on") == "fit")


def test_the_ablation_numbers_are_those_of_ablation_json(notebook):
    ablation = json.loads((ROOT / "bench" / "results" / "ablation.json").read_text())
    _, shown = stored(notebook, "ablation")
    per_seed = {}
    for r in ablation["runs"]:
        per_seed.setdefault(r["name"], []).append(r["test_accuracy"])
    assert set(shown["per_seed_test"]) == set(per_seed)
    for name, accuracies in per_seed.items():
        assert shown["per_seed_test"][name] == pytest.approx(accuracies), name
    assert set(shown["verdicts"]) == {"augmentation (shift, flip, erase)", "EMA of the weights", "label smoothing",
                                      "test-time flip"}


def test_the_verdict_numbers_are_those_of_verdict_json(notebook):
    verdict = json.loads((ROOT / "bench" / "results" / "verdict.json").read_text())
    _, shown = stored(notebook, "verdict")
    assert shown == pytest.approx({name: s["not_a_garment"] for name, s in verdict["sets"].items()})
