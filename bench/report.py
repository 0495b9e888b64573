"""The README's results table, generated from the artefacts so that no measured figure is typed.

Reads weights/evaluation/metrics.json and ood.json and bench/results/*.json (verdict.json,
ood_http.json, ...), and rewrites the
block between the `results:start` and `results:end` markers of README.md. A missing artefact
leaves its row out.

    python bench/report.py            # after training, evaluate.py and the bench scripts
"""
from __future__ import annotations

import json
import re
import sys

import _common as common  # noqa: E402  (puts the repository root on sys.path)
from training.evaluate import wilson_interval  # noqa: E402

EVALUATION = common.REPO / "weights" / "evaluation"
START, END = "<!-- results:start", "<!-- results:end -->"


def read(path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def pct(v: float, digits: int = 1) -> str:
    return f"{100 * v:.{digits}f}%"


def model_rows(m: dict) -> list[str]:
    lo, hi = m["accuracy_ci95"]
    rows = [f"| Fashion-MNIST test accuracy | **{pct(m['accuracy'], 2)}** (95% Wilson interval {pct(lo, 2)} to "
            f"{pct(hi, 2)}, n={m['n']:,}); macro F1 {m['macro_f1']:.4f} |",
            f"| Calibration | expected calibration error {m['calibration']['ece']:.4f} at softmax temperature "
            f"{m.get('temperature', '?')} |"]
    photos = m.get("photos")
    if photos:
        folders = ", ".join(f"{k} {pct(v['strict'], 0)}" for k, v in photos["per_folder"].items())
        lo, hi = wilson_interval(round(photos["strict_accuracy"] * photos["n"]), photos["n"])
        # The photo protocol (docs/decision_log.md): a figure is held out only when the photo layers
        # trained on the `fit` part and every choice was made on `selection`.
        held_out = m.get("photo_trained_on") == "fit"
        caveat = (" (read once for these weights, whose photo options were chosen on a selection part of the photo "
                  "train split; the segmentation's parameters and the Fashion-MNIST share of photo batches were "
                  "chosen on this split before that protocol: docs/decision_log.md)" if held_out else
                  " (this split chose the recipe, so it is not a held-out figure: "
                  "docs/results.md, photos under the held-out protocol)")
        rows.append(f"| Real phone photos ({photos['split']} split, {photos['n']} mapped){caveat} | strict accuracy "
                    f"**{pct(photos['strict_accuracy'])}** (95% interval {pct(lo)}-{pct(hi)}), coarse "
                    f"{pct(photos['coarse_accuracy'])}; per folder (strict): {folders} |")
    if m.get("parameters"):
        trained = f"{m['train_seconds'] / 60:.1f} min on {m.get('hardware', '?')}" if m.get("train_seconds") else "n/a"
        rows.append(f"| Model | {parameter_text(m['parameters'])}; {training_time(m, trained)} |")
    return rows


def parameter_text(stored: int) -> str:
    """Parameters as a reader counts them: those one answer runs, and the file's when photo layers add more."""
    from model import load_model
    from modelrepo.card import served_parameters
    served = served_parameters(load_model(common.REPO / "weights"))
    return f"{served:,} parameters per answer ({stored:,} stored: photos meet copies of their own)" \
        if served != stored else f"{stored:,} parameters"


def is_fine_tune(command: str | None) -> bool:
    """Whether a train.py command (or a recipes.json source naming one) started from trained weights."""
    return "--init-from" in (command or "")


def training_time(m: dict, trained: str) -> str:
    """The last run's training time; for a fine-tune, with the run it started from (recipes.json's
    'shipped' row, the Fashion-MNIST model) and the sum of the two."""
    if not is_fine_tune(m.get("command")):
        return f"last training run {trained}"
    base = next((r for r in (read(common.RESULTS / "recipes.json") or {}).get("rows", []) if r["name"] == "shipped"), None)
    if not base or is_fine_tune(base.get("source")) or not m.get("train_seconds"):   # rerun on the fine-tune itself
        return f"fine-tuned {trained}, after the training of the model it started from"
    total = (base["train_seconds"] + m["train_seconds"]) / 60
    layers = photo_layers(m["command"])
    what = f"{layers} trained" if layers else "fine-tuned"
    return (f"{what} {trained} from the Fashion-MNIST model ({base['train_seconds'] / 60:.1f} min): "
            f"{total:.1f} min of training in all")


def photo_layers(command: str | None) -> str | None:
    """What a photo run trained, from its command: BatchNorm alone, or copies of whole stages too."""
    if "--photo-norms" not in (command or ""):
        return None
    if "--photo-layers" not in command:
        return "photo BatchNorm"
    layers = command.split("--photo-layers", 1)[1].split(" --", 1)[0].split()
    return f"photo BatchNorm and photo copies of {', '.join(layers)}"


def ood_rows(o: dict) -> list[str]:
    ev, sets = o["evaluation"], o["evaluation"]["sets"]
    flagged = "; ".join(f"{name} {pct(s['flagged'])} (AUROC {s['auroc']:.3f})" for name, s in sets.items())
    rows = [f"| Out-of-distribution ({o['chosen']}, threshold set on validation) | Fashion-MNIST test flagged "
            f"{pct(ev['fmnist_test']['flagged'])}; flagged: {flagged} |"]
    inside = ev.get("photos_in_class_validation")
    if inside:
        rows.append(f"| In-class phone photos flagged | {pct(inside['flagged'])} of {inside['n']}; strict accuracy on "
                    f"the unflagged {pct(inside['accuracy_unflagged'])}, on the flagged {pct(inside['accuracy_flagged'])} |")
    return rows


def both_natural(v: dict) -> str:
    """"; the two natural selection sets together ..." when bench/verdict.py read the fresh set too."""
    b = v.get("natural_both")
    if not b:
        return ""
    return (f"; the two natural selection sets together {pct(b['not_a_garment'])} ({pct(b['ci95'][0])} to "
            f"{pct(b['ci95'][1])}, n={b['n']})")


def verdict_rows() -> list[str]:
    """The three-way verdict (bench/verdict.py) against issue 30's bars, and the same through the app."""
    rows = []
    v = read(common.RESULTS / "verdict.json")
    if v:
        def cell(name, s):
            lo, hi = s["not_a_garment_ci95"]
            bar = v["bars"].get(name)
            aim = ("" if not bar else f", bar {'<=' if bar['at_most'] is not None else '>='} "
                   f"{pct(bar['at_most'] if bar['at_most'] is not None else bar['at_least'], 0)}")
            return f"{name} {pct(s['not_a_garment'])} ({pct(lo)} to {pct(hi)}, n={s['n']:,}{aim})"
        rows.append("| Three-way verdict (fashion-mnist-like / garment-photo / not-a-garment; photo threshold set on "
                    "held-out train photos, the drawings' on held-out validation drawings, validation photos read once) | "
                    "called not-a-garment (95% Wilson interval): "
                    + "; ".join(cell(name, s) for name, s in v["sets"].items()) + both_natural(v) + " |")
    drawn = read(common.RESULTS / "draw_browser.json")
    if drawn:
        right, called = drawn["shares"]["right"], drawn["shares"]["not_a_garment"]
        rows.append(f"| Drawings drawn with the mouse on the real Sketchpad (bench/draw_browser.py, {drawn['drawings']} "
                    f"drawings; load average {drawn['machine']['load_average_1_5_15min'][0]:.1f} on "
                    f"{drawn['machine']['cpu_count']} cores) | read right {pct(right['share'])} ({pct(right['ci95'][0])} to "
                    f"{pct(right['ci95'][1])}, bar >= 80%); called not-a-garment {pct(called['share'])} "
                    f"({pct(called['ci95'][0])} to {pct(called['ci95'][1])}, bar <= 20%) |")
    http = read(common.RESULTS / "ood_http.json")
    if http and "kinds_http" in next(iter(http["sets"].values()), {}):
        sent = sum(s["n"] for s in http["sets"].values())
        agree = sum(s["agreement"] * s["n"] for s in http["sets"].values()) / sent
        rows.append(f"| The verdict through the app's /analyse over HTTP ({sent:,} PNG uploads"
                    f"{', first ' + str(http['limit']) + ' per set' if http['limit'] else ''}) | `kind` equal to the "
                    f"verdict in process for {pct(agree, 2)}; not-a-garment (or refused as blank): "
                    + "; ".join(f"{k} {pct(s['kinds_http']['not-a-garment'])}" for k, s in http["sets"].items()) + " |")
    return rows


ABLATION_NAMES = {"quickstart-mlp": "Quickstart MLP (optimiser chosen on validation)"}


def bench_rows() -> list[str]:
    rows = []
    uploads = read(common.RESULTS / "product_uploads.json")
    if uploads:
        rows.append(f"| Product uploads ({uploads['n']:,} test images on white, tinted, enlarged, off-centre) | "
                    f"{pct(uploads['new_segmented']['accuracy'])} (threshold crop before segmentation: "
                    f"{pct(uploads['old_threshold']['accuracy'])}) |")
    drawings = read(common.RESULTS / "drawings.json")
    if drawings:
        validation = drawings.get("validation") or {}
        also = (f"; validation drawings (other shapes and jitter) {pct(validation['recognised'])}"
                if "recognised" in validation else "")
        rows.append(f"| Drawings (tests/drawings.py, {drawings['n']} outlined, filled and scribbled) | "
                    f"{pct(drawings['recognised'])} recognised{also} |")
    ablation = read(common.RESULTS / "ablation.json")
    if ablation and ablation["info"].get("complete"):
        rows_by = {r["name"]: r for r in ablation["summary"]}
        shown = [(n, r) for n, r in rows_by.items() if n != "no test-time flip"]
        rows.append(f"| Equal budgets: {ablation['info']['budget_minutes']:g} min of training each, "
                    f"{len(ablation['info']['seeds'])} seeds (bench/ablation.py, test mean ± sd) | "
                    + "; ".join(f"{ABLATION_NAMES.get(n, n)} {pct(r['test_mean'], 2)} ± {pct(r['test_sd'], 2)}"
                                for n, r in shown)
                    + f"; test-time flip removed {pct(rows_by['no test-time flip']['test_mean'], 2)} |")
    latency = (read(common.RESULTS / "latency.json") or {}).get("local") or {}
    if "classify" in latency and "classify_phone_jpeg" in latency:
        rows.append(f"| Classify, in the app's process (bench/latency.py) | 28x28 image: median "
                    f"{latency['classify']['median_ms']:.1f} ms; 4000x3000 phone JPEG file (decode, segment, predict): "
                    f"{latency['classify_phone_jpeg']['median_ms']:.0f} ms |")
    return rows


def explanation_rows() -> list[str]:
    """The nearest-training-images index (bench/neighbours.py): size, k-NN accuracy, lookup time."""
    rows = []
    nb = read(common.RESULTS / "neighbours.json")
    if nb:
        test = nb["test"]
        k1, k5 = test["shipped k=1"], test["shipped k=5"]
        latency = (read(common.RESULTS / "neighbours_latency.json") or nb)["latency"]
        rows.append(f"| Nearest training images ({nb['size']['images']:,} in the index, "
                    f"{common.mib(nb['size']['index_bytes']):.1f} MiB; bench/neighbours.py) | test k-NN accuracy "
                    f"k=1 {pct(k1['accuracy'], 2)} ({pct(k1['ci95'][0], 2)} to {pct(k1['ci95'][1], 2)}), k=5 "
                    f"{pct(k5['accuracy'], 2)}; search median {latency['search_only_ms']['median_ms']:.1f} ms |")
    an = read(common.RESULTS / "analyse_neighbours.json")
    if an:
        st = an["steps"]
        own, reused = st["neighbours with a forward pass of their own"], st["neighbours from the prediction's features"]
        rows.append(f"| Nearest training images added to /analyse, in process (bench/analyse_neighbours.py) | "
                    f"median {an['added_median_ms']:.1f} ms more than without (bar <= {an['bar_ms']:.0f} ms); the "
                    f"lookup from the prediction's own features alone: median {reused['median_ms']:.1f} ms, p95 "
                    f"{reused['p95_ms']:.1f} ms (with a forward pass of its own: {own['median_ms']:.1f} ms); load "
                    f"average {an['info']['machine']['load_average_1_5_15min'][0]:.1f} on "
                    f"{an['info']['machine']['cpu_count']} cores |")
    return rows


def serving_rows() -> list[str]:
    """The app under load (bench/load.py, lean HTTP client): throughput, p95, server CPU, memory."""
    rows = []
    runs = {name: read(common.RESULTS / f"{name}.json") for name in
            ("load_classify_api", "load_classify", "load_classify_gradio_client", "load_mixed", "load_crowd",
             "load_one_classify", "load_one_explain")}
    for name, what in (("load_classify_api", "POST /api/v1/classify (the inference API)"),
                       ("load_classify", "/classify only (Gradio's REST API)"),
                       ("load_classify_gradio_client", "/classify through gradio_client"),
                       ("load_mixed", "mixed: 40% /explain with two methods"), ("load_crowd", "mixed, a crowd")):
        r = runs[name]
        if r:
            a, mem = r["stats"]["all"], r["memory"]
            back = max(b["after_idle_mib"] for b in mem["bursts"]) - mem["warm_mib"]
            rows.append(f"| Serving {what}, {r['settings']['concurrency']} clients at once | **{r['throughput_per_s']:.0f} "
                        f"requests/s**, p95 {a['p95_ms'] / 1000:.1f} s, {a['served']:,} of {a['sent']:,} answered right, "
                        f"{a['errors']} errors; server CPU {r['server_cpu_ms_per_request']:.1f} ms per request; memory "
                        f"after {r['settings']['idle']:.0f} s idle {back:+.0f} MiB from warm; load average before "
                        f"the run {r['info']['machine']['load_average_1_5_15min'][0]:.1f} on 2 cores |")
    one, explain = runs["load_one_classify"], runs["load_one_explain"]
    if one and explain:
        rows.append(f"| One client alone (HTTP round trip, upload included) | /classify median "
                    f"{one['stats']['all']['p50_ms']:.0f} ms; /explain with all seven methods median "
                    f"{explain['stats']['all']['p50_ms']:.0f} ms |")
    return rows


def results_block() -> str:
    rows = ["| | |", "|---|---|"]
    metrics = read(EVALUATION / "metrics.json")
    if metrics:
        rows += model_rows(metrics)
    ood = read(common.RESULTS / "ood.json")       # bench/ood.py measures; weights/evaluation holds the fit record
    if ood:
        rows += ood_rows(ood)
    rows += verdict_rows()
    rows += bench_rows()
    rows += explanation_rows()
    rows += serving_rows()
    command = (metrics or {}).get("command")
    verb = "fine-tuned (its start: docs/results.md)" if is_fine_tune(command) else "trained"
    if trained := photo_layers(command):
        verb = f"given their {trained} (the start and why: docs/results.md)"
    tail = ["", f"The shipped weights were {verb} with `{command}`."] if command else []
    return "\n".join(rows + tail)


def main() -> int:
    readme = common.REPO / "README.md"
    text = readme.read_text()
    pattern = re.compile(re.escape(START) + r".*?-->\n.*?" + re.escape(END), re.S)
    match = pattern.search(text)
    if not match:
        print(f"README.md has no {START} ... {END} block", file=sys.stderr)
        return 2
    head = match.group(0).split("\n", 1)[0]
    readme.write_text(text[:match.start()] + f"{head}\n{results_block()}\n{END}" + text[match.end():])
    print(f"README.md results block: {results_block().count(chr(10)) + 1} lines")
    return 0


if __name__ == "__main__":
    sys.exit(main())
