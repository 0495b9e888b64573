"""dashboard/views.py: what the Mistakes, Trust and Model views show, checked against the files
they are made from; and a served folder whose evaluation files are missing or damaged, where
each view must say what is missing instead of failing.

In process, no Gradio server: `Views(Service(load_weights(folder)))` as app.py builds them.

    pytest tests/test_views.py -q
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from dashboard.service import Service, load_weights
from dashboard.views import MISTAKES_SHOWN, RANDOM_ORDER, Views

REPO = Path(__file__).resolve().parents[1]
WEIGHTS = REPO / "weights"
EVAL = WEIGHTS / "evaluation"


@pytest.fixture(scope="module")
def views() -> Views:
    return Views(Service(load_weights(str(WEIGHTS))))


@pytest.fixture(scope="module")
def metrics() -> dict:
    return json.loads((EVAL / "metrics.json").read_text())


@pytest.fixture(scope="module")
def trust() -> dict:
    return json.loads((EVAL / "trust.json").read_text())


@pytest.fixture(scope="module")
def mistakes() -> dict:
    with np.load(EVAL / "misclassified.npz") as z:
        return {k: z[k] for k in z.files}


# --- Mistakes ----------------------------------------------------------------------------------

def test_all_mistakes_most_confident_first(views, mistakes, metrics):
    gallery, shown, text = views.filter_mistakes("All", "All")
    n = len(mistakes["true"])
    cm = np.array(metrics["confusion_matrix"])
    assert n == cm.sum() - np.trace(cm)                        # every test-set mistake is in the file
    assert len(gallery) == len(shown) == min(n, MISTAKES_SHOWN)
    conf = mistakes["confidence"][shown]
    assert (np.diff(conf) <= 0).all()                          # most confident first
    assert conf[0] == mistakes["confidence"].max()
    assert text.startswith(f"{n} of {n} misclassified test images match")
    image, caption = gallery[0]
    assert image.shape == (84, 84) and image.dtype == np.uint8 and image.max() > 0
    r = shown[0]
    assert caption == (f"{views.labels[mistakes['true'][r]]} → {views.labels[mistakes['pred'][r]]} "
                       f"({float(mistakes['confidence'][r]):.0%})")


def test_filters_match_the_confusion_matrix(views, metrics):
    cm = np.array(metrics["confusion_matrix"])
    labels = views.labels
    shirt, tshirt = labels.index("Shirt"), labels.index("T-shirt/top")
    gallery, shown, text = views.filter_mistakes("Shirt", "All")
    assert text.startswith(f"{cm[shirt].sum() - cm[shirt, shirt]} of ")
    assert gallery and all(caption.startswith("Shirt → ") for _, caption in gallery)
    gallery, shown, text = views.filter_mistakes("Shirt", "T-shirt/top")
    assert len(shown) == min(cm[shirt, tshirt], MISTAKES_SHOWN)
    assert all(caption.startswith("Shirt → T-shirt/top (") for _, caption in gallery)
    # A cell with no mistakes (the diagonal) shows nothing, and says so.
    gallery, shown, text = views.filter_mistakes("Trouser", "Trouser")
    assert gallery == [] and shown == [] and text.startswith("0 of ")


def test_mistake_detail_is_the_selected_image(views, mistakes):
    _, shown, _ = views.filter_mistakes("Coat", "All")
    look, text = views.mistake_detail(shown, 1)
    r = shown[1]
    assert look.shape == (28, 28) and 0 <= look.min() and look.max() <= 1 and look.max() > 0.5
    assert f"Test image #{int(mistakes['index'][r])}:" in text
    assert "true class **Coat**" in text and f"predicted **{views.labels[mistakes['pred'][r]]}**" in text


def test_per_class_accuracy_is_the_recall(views, metrics):
    df = views.per_class_accuracy()
    assert list(df["class"]) == views.labels
    assert np.allclose(df["accuracy"], [metrics["per_class"][c]["recall"] for c in views.labels])


# --- Trust -------------------------------------------------------------------------------------

def test_trust_table_has_a_row_per_method_and_the_baseline(views, trust):
    df = views.trust_table()
    assert list(df["Method"]) == trust["methods"] + [RANDOM_ORDER]
    for _, row in df.iterrows():
        r = trust["random_order"] if row["Method"] == RANDOM_ORDER else trust[row["Method"]]
        assert row["Deletion AUC ↓"] == f"{r['deletion_auc']:.3f}"
        assert row["Insertion AUC ↑"] == f"{r['insertion_auc']:.3f}"
    baseline = df[df["Method"] == RANDOM_ORDER].iloc[0]
    assert baseline["Randomisation ρ ↓"] == "–" and baseline["Passes randomisation"] == "–"


@pytest.mark.parametrize("kind", ["deletion", "insertion"])
def test_trust_curves_follow_trust_json(views, trust, kind):
    df = views.trust_curves(kind)
    assert set(df["method"]) == set(trust["methods"]) | {RANDOM_ORDER}
    saliency = df[df["method"] == "Saliency"]
    assert list(saliency["probability of the class"]) == pytest.approx(trust["Saliency"][f"mean_{kind}_curve"])
    assert list(saliency["fraction of pixels"]) == pytest.approx(trust["fractions"])


def test_randomisation_curves_count_layers_from_one(views, trust):
    df = views.randomisation_curves()
    assert RANDOM_ORDER not in set(df["method"])
    gc = df[df["method"] == "Grad-CAM"]
    assert list(gc["layers randomised"]) == list(range(1, len(trust["Grad-CAM"]["randomisation_curve"]) + 1))
    assert list(gc["rank correlation"]) == pytest.approx(trust["Grad-CAM"]["randomisation_curve"])


def test_trust_verdict_sorts_every_method_by_the_evidence(views, trust):
    verdict = views.trust_verdict()
    earn_part, fail_part = verdict.split("**Not on this evidence:**")
    base = trust["random_order"]
    for name in trust["methods"]:
        r = trust[name]
        earns = (r["deletion_auc"] < base["deletion_auc"] and r["insertion_auc"] > base["insertion_auc"]
                 and r["randomisation_passes"] and r.get("class_passes", True))
        assert name in (earn_part if earns else fail_part), name
    assert views.trust_markdown().startswith(f"Measured over **{trust['n_images']}** test images")


def test_a_method_that_fails_the_class_check_does_not_earn_belief(tmp_path):
    """Guided Backprop's map barely depends on the class: a trust file that says so moves it (and any
    method) to 'not on this evidence', whatever its curves and randomisation say."""
    def class_blind(folder: Path) -> None:
        path = folder / "evaluation" / "trust.json"
        t = json.loads(path.read_text())
        for name in t["methods"]:
            t[name].update(class_rho=0.2, class_passes=True, road_morf_auc=0.3, road_lerf_auc=0.6)
        t["Grad-CAM"].update(class_rho=0.99, class_passes=False)
        t["agreement"] = {"methods": ["Saliency", "Grad-CAM"], "spearman": [[1.0, 0.25], [0.25, 1.0]],
                          "top10_overlap": [[1.0, 0.5], [0.5, 1.0]]}
        path.write_text(json.dumps(t))
    views, _ = served(tmp_path, class_blind)
    earn, fail = views.trust_verdict().split("**Not on this evidence:**")
    assert "Grad-CAM" in fail and "Grad-CAM" not in earn
    row = views.trust_table().set_index("Method").loc["Grad-CAM"]
    assert row["Class ρ ↓"] == "0.99" and row["Passes class check"] == "no" and row["ROAD LeRF ↑"] == "0.600"
    matrix = views.agreement_frame().set_index("Method")
    assert matrix.loc["Saliency", "Grad-CAM"] == "0.25" and matrix.loc["Grad-CAM", "Grad-CAM"] == "1.00"
    assert views.agreement_frame("top10_overlap").set_index("Method").loc["Grad-CAM", "Saliency"] == "0.50"


# --- Model -------------------------------------------------------------------------------------

def test_model_markdown_reports_the_files(views, metrics):
    md = views.model_markdown()
    assert f"**Test accuracy:** {metrics['accuracy']:.2%}" in md
    assert f"on {metrics['n']:,} test images" in md
    assert f"expected calibration error {metrics['calibration']['ece']:.3f}" in md
    widths = json.loads((WEIGHTS / "config.json").read_text())["widths"]
    assert f"stages of {', '.join(map(str, widths))} channels" in md and "Missing" not in md and "⚠" not in md


def test_training_curves_show_the_base_run_then_the_photo_layers(views):
    base = json.loads((WEIGHTS / "base_training_history.json").read_text())
    last = json.loads((WEIGHTS / "training_history.json").read_text())
    (base_title, base_df), (last_title, last_df) = views.history_frames()
    assert base_title == "Base run, Fashion-MNIST, 57 min"
    assert last_title == "Then photo layers, 20 min"
    train = base_df[base_df["series"] == "train accuracy (augmented)"]
    assert list(train["epoch"]) == [h["epoch"] for h in base]
    assert list(train["accuracy"]) == pytest.approx([h["train_accuracy"] for h in base])
    # The photo layers were chosen on the selection part of the photo train split, scored each epoch.
    sel = last_df[last_df["series"] == "photo selection part (strict)"]
    assert list(sel["accuracy"]) == pytest.approx([h["photo_selection_strict"] for h in last])
    # The base run was a final fit with nothing held out: the page says so instead of a validation curve.
    assert set(base_df["series"]) == {"train accuracy (augmented)"}
    assert "The base run held out no validation images" in views.history_note()
    assert "copies of stage1, stage2, stage3, head" in views.history_note()


def test_weights_trained_from_others_without_the_base_history_say_so(tmp_path):
    views, _ = served(tmp_path, lambda folder: (folder / "base_training_history.json").unlink())
    assert [title for title, _ in views.history_frames()] == \
        ["Then photo layers, 20 min"]
    assert "has no `base_training_history.json`" in views.history_note()


# --- a served folder with missing or damaged evaluation files ----------------------------------

def served(tmp_path: Path, damage) -> tuple[Views, Service]:
    folder = tmp_path / "weights"
    shutil.copytree(WEIGHTS, folder)
    damage(folder)
    service = Service(load_weights(str(folder)))
    return Views(service), service


def test_a_folder_with_no_evaluation_says_what_is_missing(tmp_path):
    views, service = served(tmp_path, lambda f: (shutil.rmtree(f / "evaluation"),
                                                 (f / "training_history.json").unlink()))
    gallery, shown, text = views.filter_mistakes("All", "All")
    assert gallery == [] and shown == [] and "`evaluation/misclassified.npz` is missing" in text
    assert views.trust_table() is None and views.trust_curves("deletion") is None
    assert views.randomisation_curves() is None and views.trust_verdict() == ""
    assert "No trust results for these weights" in views.trust_markdown()
    assert "evaluation/trust.json" in views.trust_markdown()
    assert views.per_class_accuracy() is None
    assert [title for title, _ in views.history_frames()] == ["Base run, Fashion-MNIST, 57 min"]   # still there
    md = views.model_markdown()
    assert "Test accuracy" not in md and "**Missing evaluation artefacts:**" in md
    for name in ("metrics.json", "training_history.json", "trust.json", "misclassified.npz", "samples.npz"):
        assert name in md, name
        assert any(name in p for p in service.info()["missing_artefacts"]), name
    assert service.info()["test_accuracy"] is None
    # The model itself is served: predictions still work.
    assert service.predict(np.zeros((28, 28), np.float32)).shape == (10,)


def _corrupt(folder: Path) -> None:
    ev = folder / "evaluation"
    (ev / "metrics.json").write_text("{not json")
    (ev / "trust.json").write_text("[1, 2, 3]")                       # JSON, but not the schema
    (ev / "misclassified.npz").write_bytes(b"PK\x03\x04 this is not a zip archive")
    (folder / "training_history.json").write_text(json.dumps({"epoch": 1}))   # an object, not a list
    (folder / "base_training_history.json").write_text(json.dumps([{"train_accuracy": 0.5}]))   # no epoch


def test_damaged_files_are_named_and_the_views_still_render(tmp_path):
    views, service = served(tmp_path, _corrupt)
    problems = service.info()["missing_artefacts"]
    for name in ("metrics.json", "trust.json", "misclassified.npz", "/training_history.json",
                 "base_training_history.json"):
        (problem,) = [p for p in problems if name in p]
        assert "could not be read" in problem, problem
    assert not any("samples.npz" in p for p in problems)             # the intact one is used
    gallery, _, text = views.filter_mistakes("Shirt", "All")
    assert gallery == [] and "misclassified.npz` is missing" in text
    assert views.trust_table() is None and "No trust results" in views.trust_markdown()
    assert views.per_class_accuracy() is None and views.history_frames() == []
    md = views.model_markdown()
    assert "could not be read" in md and "metrics.json" in md


def test_a_partial_trust_file_shows_dashes_not_errors(tmp_path):
    def partial(folder: Path) -> None:
        path = folder / "evaluation" / "trust.json"
        t = json.loads(path.read_text())
        for name in t["methods"]:
            t[name] = {"deletion_auc": t[name]["deletion_auc"]}      # everything else lost
        t.pop("random_order")
        path.write_text(json.dumps(t))
    views, _ = served(tmp_path, partial)
    df = views.trust_table()
    assert list(df["Method"]) == json.loads((EVAL / "trust.json").read_text())["methods"]
    assert (df["Insertion AUC ↑"] == "–").all() and (df["Passes randomisation"] == "–").all()
    assert (df["Deletion AUC ↓"] != "–").all()
    assert views.trust_curves("insertion") is None and views.randomisation_curves() is None
    assert views.trust_verdict() == ""                               # no baseline: no verdict


def test_a_confusion_cell_filters_the_mistakes_to_that_cell(views, metrics):
    cm = np.asarray(metrics["confusion_matrix"])
    frame = views.confusion_frame()
    assert frame.iloc[:, 1:].to_numpy().tolist() == cm.tolist()
    labels = views.labels
    for true, pred in [(6, 0), (0, 6), (4, 2), (9, 7)]:                 # off the diagonal: mistakes
        filters = views.cell_filters(true, pred + 1)                    # column 0 holds the class names
        assert filters == (labels[true], labels[pred])
        _, shown, text = views.filter_mistakes(*filters)
        assert text.startswith(f"{cm[true, pred]} of "), text
        d = views.art.mistakes
        assert all(d["true"][r] == true and d["pred"][r] == pred for r in shown)
    assert views.cell_filters(3, 0) == (labels[3], "All")               # a row's name: its true class
    assert views.filter_mistakes(*views.cell_filters(3, 4))[2].startswith("0 of ")   # the diagonal: none
    with pytest.raises(ValueError, match="no confusion-matrix cell"):
        views.cell_filters(10, 0)


def test_the_trust_table_shows_where_the_maps_of_photos_fall(tmp_path):
    def measured(folder: Path) -> None:
        path = folder / "evaluation" / "trust.json"
        trust = json.loads(path.read_text())
        trust["photo_localisation"] = {"n_photos": 12, "mean_mask_area": 0.31, "split": "photos/validation",
                                       "methods": {"Grad-CAM": {"mean_inside": 0.62, "n": 12},
                                                   "Saliency": {"mean_inside": None, "n": 0}}}
        path.write_text(json.dumps(trust))
    views, _ = served(tmp_path, measured)
    column = views.trust_table().set_index("Method")["Inside the garment (photos) ↑"]
    assert column["Grad-CAM"] == "62%" and column["Saliency"] == "–" and column[RANDOM_ORDER] == "–"
    assert "over 12 segmented photos of `photos/validation`" in views.trust_markdown()
    assert "covers 31% of the image" in views.trust_markdown()


def test_a_trust_file_without_photo_localisation_says_how_to_add_it(tmp_path):
    def unmeasured(folder: Path) -> None:
        path = folder / "evaluation" / "trust.json"
        trust = json.loads(path.read_text())
        trust.pop("photo_localisation", None)
        path.write_text(json.dumps(trust))
    views, _ = served(tmp_path, unmeasured)
    assert set(views.trust_table()["Inside the garment (photos) ↑"]) == {"–"}
    assert "python -m explain.photo_localisation" in views.trust_markdown()
