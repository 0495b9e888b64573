"""Latency of one image through each step, each explanation method, and the app's memory.

Measured in this process, median of repeated calls on a real Fashion-MNIST test image:
preprocessing (`model.preprocess`), the model's forward pass alone (1 image, `torch.inference_mode`),
`predict_proba` (2 views, flip TTA), the app's `classify`, every method of `explain.METHODS` through
`explain.explain`, and all methods for one image (the sum of one call of each). Then the real app
(`python app.py --port P`) is started as a subprocess and driven with gradio_client (classify, and
explain with every method, a few dozen calls) while its resident memory (with children) is sampled.

    python bench/latency.py                                  # weights/ if present, else outputs/smoke
    python bench/latency.py --model outputs/smoke --repeats 5 --explain-repeats 2 --app-rounds 1 \\
        --results-dir /tmp/bench                             # smoke run

Targets (2-core CPU): classify < 10 ms; each method < 150 ms; all methods for one image < 500 ms;
single-image inference < 2 ms. Writes <results-dir>/latency.json and latency.md.
"""
from __future__ import annotations

import argparse
import asyncio
import copy
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as common  # noqa: E402  (puts the repository root on sys.path)

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from model import load_model  # noqa: E402
from imaging.preprocess import preprocess  # noqa: E402

# classify: a 28x28 image; photo: an upload that is segmented (issue #18's budget for a phone photo).
TARGETS_MS = {"classify": 10.0, "photo": 100.0, "method": 150.0, "all_methods": 500.0, "inference": 2.0}
PHONE_SIZE = (4000, 3000)


def test_images(n: int) -> list[tuple[Image.Image, int]]:
    """Real test images (PIL, label) from the small slice that ships with the repository."""
    from training.data import load_images
    _, labels, raw = load_images("tests/data/fashion_mnist", "test")
    return [(Image.fromarray(raw[i]), int(labels[i])) for i in range(n)]


def as_upload(img: Image.Image, size: int = 1024) -> Image.Image:
    """The same garment as a phone-sized RGB product photo: dark on white, 1024x1024."""
    inverted = Image.fromarray(255 - np.asarray(img))
    return inverted.resize((size, size), Image.Resampling.BICUBIC).convert("RGB")


def phone_jpeg(folder: Path) -> Path:
    """A committed phone photo (examples/photos) enlarged to 4000x3000 and saved as a JPEG file in
    `folder`, the size a phone sends; the app reads it from the file as it reads an upload."""
    source = sorted((common.REPO / "examples" / "photos").glob("*.jpg"))[0]
    path = folder / "phone-4000x3000.jpg"
    with Image.open(source) as img:
        img.convert("RGB").resize(PHONE_SIZE, Image.Resampling.BICUBIC).save(path, quality=90)
    return path


def app_classify(model_dir: Path):
    """app.classify as a plain call, if app.py is importable (it loads the model named by MODEL_ID);
    else None. The endpoint is a coroutine: each call runs it to its answer on one event loop, as
    the server's loop does."""
    os.environ["MODEL_ID"] = str(model_dir)
    try:
        import app
    except Exception as e:  # app.py absent or failing: reported, the rest still measured
        print(f"[latency] app.py not importable ({type(e).__name__}: {e}); classify = preprocess + predict_proba")
        return None
    loop = asyncio.new_event_loop()

    def classify(image) -> dict:
        answer = loop.run_until_complete(app.classify(image))
        if not isinstance(answer, dict) or "label" not in answer:
            raise RuntimeError(f"app.classify answered {answer!r}, not a label")
        return answer
    return classify


def measure_local(model_dir: Path, cli) -> dict:
    import explain
    model = load_model(model_dir)
    served = copy.deepcopy(model).optimize_for_inference_()            # what app.py predicts with
    image, _ = test_images(1)[0]
    upload = as_upload(image)
    x = preprocess(image)[None]                                       # (1, 1, 28, 28)
    out = {}
    with torch.inference_mode():
        out["preprocess_28px"] = common.time_calls(lambda: preprocess(image), cli.repeats)
        out["preprocess_1024px_rgb"] = common.time_calls(lambda: preprocess(upload), cli.repeats)
        out["forward_1_image"] = common.time_calls(lambda: model(x), cli.repeats, warmup=10)
        out["predict_proba_1_image"] = common.time_calls(lambda: model.predict_proba(x), cli.repeats, warmup=10)
        out["forward_1_image_fused"] = common.time_calls(lambda: served(x), cli.repeats, warmup=10)
        out["predict_proba_1_image_fused"] = common.time_calls(lambda: served.predict_proba(x), cli.repeats, warmup=10)
    classify = app_classify(model_dir)
    if classify is not None:
        import app                                                 # its own folder is an allowed root
        small = app.APP_FOLDER.path / "test-image.png"              # a 28x28 upload, as the API gets it
        image.save(small)
        out["classify"] = common.time_calls(lambda: classify({"path": str(small)}), cli.repeats, warmup=5)
        out["classify_1024px_rgb"] = common.time_calls(lambda: classify(upload), cli.repeats, warmup=2)
        phone = {"path": str(phone_jpeg(app.APP_FOLDER.path))}
        out["classify_phone_jpeg"] = common.time_calls(lambda: classify(phone), max(5, cli.repeats // 10), warmup=2)
        out["classify_source"] = ("app.classify (a 28x28 test image's PNG file; a 1024x1024 RGB upload as a PIL "
                                  "image; a 4000x3000 JPEG file made from examples/photos)")
    else:
        def composed(img):
            with torch.inference_mode():
                p = model.predict_proba(preprocess(img)[None])[0]
            return {n: float(v) for n, v in zip(model.label_names, p)}
        out["classify"] = common.time_calls(lambda: composed(image), cli.repeats, warmup=5)
        out["classify_1024px_rgb"] = common.time_calls(lambda: composed(upload), cli.repeats, warmup=2)
        out["classify_source"] = "preprocess + predict_proba + dict (app.py not importable)"
    methods = {}
    for name in explain.METHODS:
        methods[name] = common.time_calls(lambda name=name: explain.explain(model, x, name), cli.explain_repeats, warmup=1)
        print(f"[latency] {name}: {methods[name]['median_ms']:.1f} ms", flush=True)
    out["methods"] = methods
    out["all_methods_sum_of_medians_ms"] = sum(m["median_ms"] for m in methods.values())

    def all_once():
        for name in explain.METHODS:
            explain.explain(model, x, name)
    out["all_methods_loop"] = common.time_calls(all_once, max(1, cli.explain_repeats // 2), warmup=0)
    return out


def endpoints(client) -> dict:
    """The app's named endpoints and their parameter names (gradio_client's view of the API)."""
    api = client.view_api(print_info=False, return_format="dict")
    return {name: [p.get("parameter_name") for p in info["parameters"]]
            for name, info in api["named_endpoints"].items()}


def measure_app(model_dir: Path, cli) -> dict:
    """Start the real app, drive it with gradio_client, sample its RSS (with children)."""
    import explain
    from gradio_client import Client, handle_file
    with tempfile.TemporaryDirectory(prefix="bench-latency-") as tmp:
        paths = []
        for i, (img, _) in enumerate(test_images(cli.app_images)):
            paths.append(Path(tmp) / f"test{i}.png")
            img.save(paths[-1])
        with common.AppProcess(model_dir, Path(tmp) / "app.log") as app:
            time.sleep(1.0)                                           # let start-up allocations settle
            start_rss = app.sampler.rss()
            processes = app.sampler.breakdown()
            client = Client(app.url, verbose=False, download_files=Path(tmp) / "dl")
            api = endpoints(client)
            classify_ms, explain_ms, t_drive = [], {}, app.sampler.samples[-1][0]
            everything = list(explain.METHODS)
            for _ in range(cli.app_rounds):
                for p in paths:
                    t0 = time.perf_counter()
                    client.predict(handle_file(str(p)), api_name=cli.classify_api)
                    classify_ms.append((time.perf_counter() - t0) * 1000)
                    # One method per call, then all methods in one call (what the UI sends).
                    for key, methods in [*((m, [m]) for m in everything), ("all methods, one call", everything)]:
                        t0 = time.perf_counter()
                        client.predict(handle_file(str(p)), methods, "predicted class", api_name=cli.explain_api)
                        explain_ms.setdefault(key, []).append((time.perf_counter() - t0) * 1000)
            peak, startup_peak = app.sampler.peak(since=t_drive), app.sampler.peak()
            end_rss = app.sampler.rss()
            client.close()
            log_tail = (Path(tmp) / "app.log").read_text()[-2000:]
    calls = len(classify_ms) + sum(len(v) for v in explain_ms.values())
    return {"endpoints": api, "calls": calls, "start_rss_mib": common.mib(start_rss), "peak_rss_mib": common.mib(peak),
            "peak_rss_including_startup_mib": common.mib(startup_peak),
            "end_rss_mib": common.mib(end_rss), "processes_at_start": processes, "ready_seconds": app.ready_s,
            "classify_http": common.summarize_ms(classify_ms),
            "explain_http": {k: common.summarize_ms(v) for k, v in explain_ms.items()},
            "drive_started_at_s": t_drive, "app_log_tail": log_tail}


def verdict(value: float, target: float) -> str:
    return "yes" if value < target else "**MISSED**"


def markdown(res: dict) -> str:
    loc, info = res["local"], res["info"]
    def row(label: str, m: dict, target: str = "", key: str = ""):
        met = verdict(m["median_ms"], TARGETS_MS[key]) if key else ""
        return [label, m["median_ms"], m["min_ms"], m["p95_ms"], target, met]

    rows = [row("preprocess (28x28 test image)", loc["preprocess_28px"]),
            row("preprocess (1024x1024 RGB upload)", loc["preprocess_1024px_rgb"]),
            row("model forward, 1 image (as trained)", loc["forward_1_image"]),
            row("predict_proba, 1 image (as trained; 2 views, flip TTA)", loc["predict_proba_1_image"]),
            row("model forward, 1 image (BN folded, channels-last)", loc["forward_1_image_fused"], "< 2 ms", "inference"),
            row("predict_proba, 1 image (BN folded, channels-last; 2 views: what the app serves)",
                loc["predict_proba_1_image_fused"], "< 2 ms", "inference"),
            row("classify (28x28 test image)", loc["classify"], "< 10 ms", "classify"),
            row("classify (1024x1024 RGB upload, segmented)", loc["classify_1024px_rgb"], "< 100 ms", "photo")]
    if "classify_phone_jpeg" in loc:
        rows.append(row("classify (4000x3000 phone JPEG file: decode, segment, predict)", loc["classify_phone_jpeg"],
                        "< 100 ms", "photo"))
    rows += [row(f"explain: {name}", m, "< 150 ms", "method") for name, m in loc["methods"].items()]
    total = loc["all_methods_sum_of_medians_ms"]
    rows += [["all methods, one image (sum of medians)", total, "", "", "< 500 ms",
              verdict(total, TARGETS_MS["all_methods"])],
             row("all methods, one image (one loop)", loc["all_methods_loop"], "< 500 ms", "all_methods")]
    text = f"""# Latency and memory

Model: {info['model']}. Machine: {info['machine']['cpu_model']}, {info['machine']['cpu_count']} cores,
torch {info['machine']['torch']} with {info['machine']['torch_threads']} threads. Median of {info['repeats']} calls
({info['explain_repeats']} per explanation method) in one process, on a real Fashion-MNIST test image;
inference under `torch.inference_mode()`; classify = {loc['classify_source']}.
Load average (1 min) when the measurement started: {info['machine']['load_average_1_5_15min'][0]:.2f}, at the end:
{info['load_average_end'][0]:.2f} (2 cores: above ~0.5 means other work shared the CPU).

{common.md_table(['step', 'median ms', 'min ms', 'p95 ms', 'target', 'met (median)'], rows)}
"""
    if "app" in res:
        app = res["app"]
        http = [["classify", app["classify_http"]["n"], app["classify_http"]["median_ms"], app["classify_http"]["p95_ms"]]]
        http += [[f"explain: {k}", v["n"], v["median_ms"], v["p95_ms"]] for k, v in app["explain_http"].items()]
        text += f"""
## The app process (`python app.py`, driven by gradio_client over HTTP on 127.0.0.1)

{app['calls']} calls, one at a time: per test image, classify, explain with each method alone, and explain
with all methods in one call; {info['app_images']} test image(s), {info['app_rounds']} round(s). The explain endpoint also
computes each map's deletion/insertion AUC and renders the overlays, so it costs more than `explain.explain`.

Resident memory of the app process and its children, sampled every 50 ms:

{common.md_table(['after start-up (MiB)', 'peak while serving (MiB)', 'end (MiB)', 'peak incl. start-up (MiB)'],
                 [[app['start_rss_mib'], app['peak_rss_mib'], app['end_rss_mib'], app['peak_rss_including_startup_mib']]])}

Round trip through the HTTP API (client included):

{common.md_table(['endpoint', 'calls', 'median ms', 'p95 ms'], http)}
"""
    return text + f"\n```bash\n{info['command']}\n```\n"


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--model", default=None, help="model folder (default: weights/ if it holds model.safetensors, else outputs/smoke)")
    p.add_argument("--repeats", type=int, default=200, help="timed calls per classify/inference step")
    p.add_argument("--explain-repeats", type=int, default=20, help="timed calls per explanation method")
    p.add_argument("--app-rounds", type=int, default=2, help="rounds over --app-images test images x (classify + every method) against the app")
    p.add_argument("--app-images", type=int, default=4, help="distinct test images sent to the app per round")
    p.add_argument("--no-app", action="store_true", help="skip starting the app (no memory figures)")
    p.add_argument("--classify-api", default="/classify", help="the app's classify endpoint")
    p.add_argument("--explain-api", default="/explain", help="the app's explain endpoint (image, methods, target)")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads in this process (0: torch's default)")
    p.add_argument("--results-dir", default=str(common.RESULTS), help="where latency.json and latency.md go")
    return p.parse_args(argv)


def main(argv=None) -> int:
    cli = parse_args(argv)
    if cli.threads:
        torch.set_num_threads(cli.threads)
    model_dir, note = (Path(cli.model), common.model_note(cli.model)) if cli.model else common.default_model_dir()
    info = {"model": note, "model_dir": common.rel(model_dir), "machine": common.machine_info(),
            "repeats": cli.repeats, "explain_repeats": cli.explain_repeats, "app_rounds": cli.app_rounds, "app_images": cli.app_images,
            "command": common.command_line("bench/latency.py"), "targets_ms": TARGETS_MS}
    res = {"info": info, "local": measure_local(model_dir, cli)}
    if not cli.no_app:
        res["app"] = measure_app(model_dir, cli)
    info["load_average_end"] = os.getloadavg()
    md = markdown(res)
    json_path, md_path = common.write_results(cli.results_dir, "latency", res, md)
    print(md)
    print(f"[latency] wrote {json_path} and {md_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
