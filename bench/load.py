"""A bounded burst of concurrent API requests against the real app; checks every answer, the
server's CPU time per request and its memory.

Starts `python app.py --port P` on 127.0.0.1 and releases all workers at once: they share a fixed
list of requests (mixed /classify and /explain on real Fashion-MNIST test images saved as PNG)
until it is empty or the global timeout passes. Two kinds of client:

- `--client lean` (default): one process, one event loop, raw HTTP against Gradio's REST API
  (bench/gradio_http.py): each request uploads its PNG, then calls the endpoint, in a session of
  its own as curl would. It costs the shared cores little, so the figures describe the server.
- `--client api`: the same event loop against the app's inference API (dashboard/api.py), one
  POST /api/v1/classify per prediction with the PNG's bytes as the body (classify only).
- `--client gradio`: one gradio_client.Client (one session) per worker, as a Python user connects.

Every answer is compared with a direct call in this process (`model.load_model` +
`model.preprocess` + `predict_proba`): the top label must be equal and each returned probability
within --tolerance. The app's CPU time (user + system, children included) is read before and after
each burst: its difference over the requests served is the server's CPU per request. The app's
resident memory (with children) is sampled every 50 ms: at start, peak during the burst, and after
--idle seconds of rest.

    python bench/load.py --explain-share 0 --name load_classify   # classify only, 50 clients
    python bench/load.py --explain-share 0 --client api --name load_classify_api   # the same, /api/v1
    python bench/load.py --bursts 3                               # mixed, 40% explain, 3 bursts
    python bench/load.py --concurrency 100 --name load_crowd      # a crowd of 100
    python bench/load.py --model outputs/smoke --requests 20 --concurrency 5 --idle 1 \\
        --results-dir /tmp/bench                                  # smoke run

Writes <results-dir>/<name>.json and <name>.md (default bench/results/load.*).
"""
from __future__ import annotations

import argparse
import asyncio
import queue
import random
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

if str(Path(__file__).resolve().parent) not in sys.path:   # imported by bench/server_profile.py: already there
    sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as common  # noqa: E402  (puts the repository root on sys.path, ahead of bench/)

import torch  # noqa: E402
from PIL import Image  # noqa: E402

from model import load_model  # noqa: E402
from imaging.preprocess import preprocess  # noqa: E402

PREDICTED = "predicted class"


@dataclass
class Request:
    index: int
    endpoint: str            # "classify" or "explain"
    image: int               # index into the saved test images
    methods: list[str]       # explain only


@dataclass
class Outcome:
    index: int
    endpoint: str
    methods: int
    status: str              # "ok", "wrong" (answered, but not what a direct call gives) or "error"
    detail: str
    started_s: float         # since the burst began
    latency_ms: float


def save_test_images(folder: Path, n: int) -> list[Path]:
    """The first n images of the repository's real test slice, as the PNG files a user would upload."""
    from training.data import load_images
    _, _, raw = load_images("tests/data/fashion_mnist", "test")
    paths = []
    for i in range(n):
        paths.append(folder / f"test{i:03d}.png")
        Image.fromarray(raw[i]).save(paths[-1])
    return paths


def expected_answers(model_dir: Path, paths: list[Path]) -> list[dict[str, float]]:
    """{class name: probability} for each file by a direct call, the reference every answer must match."""
    model = load_model(model_dir)
    with torch.inference_mode():
        probs = [model.predict_proba(preprocess(Image.open(p))[None])[0].numpy() for p in paths]
    return [{name: float(v) for name, v in zip(model.label_names, p)} for p in probs]


def plan(cli, n_images: int, method_names: list[str]) -> list[Request]:
    """A seeded, fixed mix: --explain-share of the requests are /explain, every --full-every-th with all methods."""
    rng = random.Random(cli.seed)
    reqs, n_explain = [], 0
    for i in range(cli.requests):
        image = rng.randrange(n_images)
        if rng.random() < cli.explain_share:
            n_explain += 1
            full = cli.full_every and n_explain % cli.full_every == 0
            reqs.append(Request(i, "explain", image, method_names if full else list(cli.explain_methods)))
        else:
            reqs.append(Request(i, "classify", image, []))
    return reqs


def check_label(value, expected: dict[str, float], tol: float) -> str:
    """'' when a gr.Label answer matches the direct call, else what differs."""
    if not isinstance(value, dict) or "label" not in value or not value.get("confidences"):
        return f"not a label value with confidences: {str(value)[:200]}"
    return check_probabilities(value["label"], {c["label"]: c["confidence"] for c in value["confidences"]},
                               expected, tol)


def check_probabilities(label: str, probs: dict[str, float], expected: dict[str, float], tol: float) -> str:
    """'' when `label` is the direct call's top class and each of `probs` is within `tol` of it."""
    top = max(expected, key=expected.get)
    if label != top:
        return f"top label {label!r}, expected {top!r}"
    worst = max(probs, key=lambda c: abs(probs[c] - expected[c]))
    return f"P({worst}) = {probs[worst]:.5f}, expected {expected[worst]:.5f}" \
        if abs(probs[worst] - expected[worst]) > tol else ""


def check_analysis(value, expected: dict[str, float], tol: float) -> str:
    """'' when an inference-API answer (Service.analysis) matches the direct call, else what differs."""
    probs = value.get("probabilities") if isinstance(value, dict) else None
    if not isinstance(probs, dict) or probs.keys() != expected.keys():
        return f"not an analysis with every class: {str(value)[:200]}"
    return check_probabilities(value.get("label"), probs, expected, tol)


def check(req: Request, result, expected: dict[str, float], tol: float) -> str:
    if req.endpoint == "classify":
        return (check_analysis if "probabilities" in result else check_label)(result, expected, tol)
    if not isinstance(result, (list, tuple)) or len(result) != 4:
        return f"explain returned {type(result).__name__} of length {len(result) if hasattr(result, '__len__') else '?'}"
    view, label, gallery, scores = result
    problem = check_label(label, expected, tol)
    if problem:
        return problem
    if not view:
        return "no model view image"
    if len(gallery or []) != len(req.methods):
        return f"{len(gallery or [])} maps for {len(req.methods)} methods"
    if sorted((scores or {}).get("methods", {})) != sorted(req.methods):
        return f"scores for {sorted((scores or {}).get('methods', {}))}, asked {sorted(req.methods)}"
    return ""


def open_clients(url: str, n: int, shared: bool = False) -> list:
    """n independent clients (each fetches the app's config, has its own session), opened in parallel.

    With `shared`, one client (one session) used by all n workers: its pool is sized so all n jobs are in flight.
    """
    from gradio_client import Client
    if shared:
        return [Client(url, verbose=False, download_files=False, max_workers=n)] * n
    with ThreadPoolExecutor(max_workers=min(n, 8)) as pool:
        return list(pool.map(lambda _: Client(url, verbose=False, download_files=False), range(n)))


def warm_up(url: str, path: Path, api: dict, methods: list[str]) -> None:
    """One classify and one explain with every method: what any first visitor triggers once.

    The first call of each method fills caches that stay for the process's life (oneDNN kernels for
    each batch shape, Captum's and Gradio's lazy imports); the memory after this is the baseline a
    burst should return to.
    """
    from gradio_client import handle_file
    client = open_clients(url, 1)[0]
    client.predict(handle_file(str(path)), api_name=api["classify"])
    client.predict(handle_file(str(path)), methods, PREDICTED, api_name=api["explain"])
    client.close()


def burst(clients: list, reqs: list[Request], paths: list[Path], expected: list[dict], cli, api: dict) -> tuple:
    """All workers start together (a barrier), then take requests until none are left or time runs out."""
    from gradio_client import handle_file
    todo: queue.Queue[Request] = queue.Queue()
    for r in reqs:
        todo.put(r)
    outcomes: list[Outcome] = []
    lock, start_line, t0_box = threading.Lock(), threading.Barrier(len(clients) + 1), []

    def worker(client):
        start_line.wait()
        t0 = t0_box[0]
        while True:
            try:
                req = todo.get_nowait()
            except queue.Empty:
                return
            remaining = cli.timeout - (time.perf_counter() - t0)
            if remaining <= 0:
                return                                             # left in the queue: "not sent"
            args = [handle_file(str(paths[req.image]))] + ([req.methods, PREDICTED] if req.endpoint == "explain" else [])
            began = time.perf_counter()
            try:
                result = client.submit(*args, api_name=api[req.endpoint]).result(timeout=remaining)
                problem = check(req, result, expected[req.image], cli.tolerance)
                status, detail = ("wrong", problem) if problem else ("ok", "")
            except Exception as e:  # timeouts, queue full, server errors: all counted, none hidden
                status, detail = "error", f"{type(e).__name__}: {str(e)[:300]}"
            done = time.perf_counter()
            with lock:
                outcomes.append(Outcome(req.index, req.endpoint, len(req.methods), status, detail,
                                        began - t0, (done - began) * 1000))

    threads = [threading.Thread(target=worker, args=(c,), daemon=True) for c in clients]
    for t in threads:
        t.start()
    t0_box.append(time.perf_counter())
    start_line.wait()
    for t in threads:
        t.join(timeout=cli.timeout + 60)
    wall = time.perf_counter() - t0_box[0]
    not_sent = todo.qsize()
    return outcomes, wall, not_sent


def burst_lean(url: str, reqs: list[Request], paths: list[Path], expected: list[dict], cli, api: dict) -> tuple:
    """The same burst as `burst`, from one event loop speaking raw HTTP (bench/gradio_http.py):
    Gradio's API, or with --client api the app's own /api/v1/classify (classify requests only)."""
    from gradio_http import ApiHTTP, GradioHTTP
    images = [p.read_bytes() for p in paths]
    todo = list(reversed(reqs))
    outcomes: list[Outcome] = []

    async def answer(client, req: Request):
        if cli.client == "api":                  # one POST with the file's bytes: classify only
            return await client.classify(images[req.image])
        data = [await client.upload(images[req.image], paths[req.image].name)]
        data += [req.methods, PREDICTED] if req.endpoint == "explain" else []
        result = await client.call(api[req.endpoint].strip("/"), data)
        return result[0] if req.endpoint == "classify" else result

    async def one(client, req: Request, t0: float) -> None:
        began = time.perf_counter()
        try:
            problem = check(req, await answer(client, req), expected[req.image], cli.tolerance)
            status, detail = ("wrong", problem) if problem else ("ok", "")
        except Exception as e:  # refusals, timeouts, server errors: all counted, none hidden
            status, detail = "error", f"{type(e).__name__}: {str(e)[:300]}"
        outcomes.append(Outcome(req.index, req.endpoint, len(req.methods), status, detail,
                                began - t0, (time.perf_counter() - began) * 1000))

    async def run() -> float:
        http_client = ApiHTTP if cli.client == "api" else GradioHTTP
        async with http_client(url, max_connections=2 * cli.concurrency, timeout=cli.timeout) as client:
            t0 = time.perf_counter()

            async def worker() -> None:
                while todo and time.perf_counter() - t0 < cli.timeout:
                    await one(client, todo.pop(), t0)

            await asyncio.gather(*(worker() for _ in range(cli.concurrency)))
            return time.perf_counter() - t0

    wall = asyncio.run(run())
    return outcomes, wall, len(todo)


def cpu_seconds(proc) -> float:
    """CPU time so far of a psutil process and its children (user + system)."""
    total = 0.0
    for p in [proc, *proc.children(recursive=True)]:
        t = p.cpu_times()
        total += t.user + t.system + t.children_user + t.children_system
    return total


def endpoint_stats(outcomes: list[Outcome], endpoint: str | None, methods: int | None = None) -> dict:
    sel = [o for o in outcomes if (endpoint is None or o.endpoint == endpoint)
           and (methods is None or o.methods == methods)]
    served = [o for o in sel if o.status == "ok"]
    lat = common.summarize_ms([o.latency_ms for o in sel if o.status != "error"])
    return {"sent": len(sel), "served": len(served), "wrong": sum(o.status == "wrong" for o in sel),
            "errors": sum(o.status == "error" for o in sel), "p50_ms": lat["median_ms"], "p95_ms": lat["p95_ms"],
            "max_ms": lat["max_ms"]}


def markdown(res: dict) -> str:
    info, mem, cli = res["info"], res["memory"], res["settings"]
    who = ("raw HTTP from one event loop (bench/gradio_http.py): each request uploads its PNG, then calls the "
           "endpoint, in a session of its own" if cli.get("client", "gradio") == "lean"
           else "raw HTTP from one event loop (bench/gradio_http.py ApiHTTP): each request is one POST "
                "/api/v1/classify with the PNG's bytes as its body" if cli["client"] == "api"
           else "sharing one gradio_client client, so one session per burst" if cli.get("shared_client")
           else "one gradio_client client each, each its own session; new clients each burst")
    rows = []
    for key, s in res["stats"].items():
        rows.append([key, s["sent"], s["served"], s["wrong"], s["errors"],
                     f"{s['p50_ms']:.0f}" if s["p50_ms"] is not None else "",
                     f"{s['p95_ms']:.0f}" if s["p95_ms"] is not None else "",
                     f"{s['max_ms']:.0f}" if s["max_ms"] is not None else ""])
    errors = "\n".join(f"- {e}" for e in res["first_problems"]) or "- none"
    return f"""# Load test: {cli['requests']} requests, {cli['concurrency']} at once{f" (x {cli['bursts']} bursts)" if cli['bursts'] > 1 else ""}

The real app (`python app.py`, {info['model']}) on 127.0.0.1, {cli['concurrency']} workers ({who}) released together by a barrier, sharing {cli['requests']} requests until
done or {cli['timeout']:.0f} s passed. Requests (seeded mix, seed {cli['seed']}): /classify, or with probability
{cli['explain_share']} /explain with methods {cli['explain_methods']} (every explain request
number {cli['full_every']}, {2*cli['full_every']}, ...: all {len(info['methods'])} methods), target "{PREDICTED}", on {cli['images']} real test images
uploaded as PNG files. Each answer is checked against a direct call in the bench process (`load_model` +
`preprocess` + `predict_proba`): same top label, every returned probability within {cli['tolerance']}; an
explain answer must also carry one map and one score entry per asked method. Clients do not download the
returned image files.

{common.md_table(['requests', 'sent', 'served (correct)', 'wrong', 'errors', 'p50 ms', 'p95 ms', 'max ms'], rows)}

Burst wall time {res['wall_seconds']:.1f} s in all: **{res['throughput_per_s']:.1f} requests/s** served; not sent before the
timeout: {res['not_sent']}. Latency is the round trip seen by a client, queueing included.
**Server CPU: {res['server_cpu_ms_per_request']:.1f} ms per request served** (the app process and its children, user +
system, over the bursts).

{common.md_table(['burst', 'requests served', 'wall s', 'server CPU ms / request', 'app RSS after start-up (MiB)', 'after warm-up (MiB)',
                  'peak during burst (MiB)', f"after {cli['idle']:.0f} s idle (MiB)", 'after - start-up (MiB)',
                  'after - warm-up (MiB)'],
                 [[b['burst'], b['served'], f"{b['wall_seconds']:.1f}", b['server_cpu_ms_per_request'], mem['start_mib'], mem.get('warm_mib', ''),
                   b['peak_mib'], b['after_idle_mib'], round(b['after_idle_mib'] - mem['start_mib'], 1),
                   round(b['after_idle_mib'] - mem['warm_mib'], 1) if 'warm_mib' in mem else '']
                  for b in mem['bursts']])}

Resident memory of the app process and its children, sampled every 50 ms ({mem['samples']} samples).
Warm-up: before the first burst, one client sends one /classify and one /explain with all
{len(info['methods'])} methods (what the first visitor triggers once: oneDNN kernels per batch shape,
lazy imports), then the app rests a few seconds.
Problems (first {len(res['first_problems'])}):
{errors}

App environment added: {cli.get('app_env') or 'none'}. Machine: {info['machine']['cpu_model']}, {info['machine']['cpu_count']} cores, torch {info['machine']['torch']};
the clients run on the same cores as the app. Load average before the run: {info['machine']['load_average_1_5_15min'][0]:.2f}.

```bash
{info['command']}
```
"""


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--model", default=None, help="model folder (default: weights/ if it holds model.safetensors, else outputs/smoke)")
    p.add_argument("--requests", type=int, default=500, help="requests in all")
    p.add_argument("--concurrency", type=int, default=50, help="clients released at once")
    p.add_argument("--explain-share", type=float, default=0.4, help="fraction of requests sent to /explain")
    p.add_argument("--explain-methods", nargs="+", default=["Saliency", "Grad-CAM"], help="methods of most explain requests")
    p.add_argument("--full-every", type=int, default=10, help="every n-th explain request asks for all methods (0: never)")
    p.add_argument("--images", type=int, default=20, help="distinct test images")
    p.add_argument("--tolerance", type=float, default=1e-3, help="largest accepted probability difference")
    p.add_argument("--timeout", type=float, default=600, help="global limit in seconds for the burst")
    p.add_argument("--idle", type=float, default=20, help="seconds of rest before the 'after' memory reading")
    p.add_argument("--bursts", type=int, default=1, help="bursts in a row, each with new clients (memory: plateau or growth?)")
    p.add_argument("--client", choices=["lean", "gradio", "api"], default="lean",
                   help="lean: raw HTTP to Gradio's API from one event loop; api: raw HTTP to /api/v1/classify "
                        "(dashboard/api.py) from one event loop; gradio: one gradio_client.Client per worker")
    p.add_argument("--shared-client", action="store_true", help="with --client gradio: one Client (one session) for all workers")
    p.add_argument("--app-env", nargs="*", default=[], metavar="KEY=VALUE", help="extra environment of the app process")
    p.add_argument("--name", default="load", help="results file name (<name>.json, <name>.md)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--classify-api", default="/classify")
    p.add_argument("--explain-api", default="/explain")
    p.add_argument("--results-dir", default=str(common.RESULTS), help="where load.json and load.md go")
    return p.parse_args(argv)


def main(argv=None) -> int:
    cli = parse_args(argv)
    if cli.client == "api" and cli.explain_share:
        sys.exit("the inference API classifies only: run --client api with --explain-share 0")
    import explain
    unknown = [m for m in cli.explain_methods if m not in explain.METHODS]
    if unknown:
        sys.exit(f"unknown methods {unknown}; known: {list(explain.METHODS)}")
    model_dir, note = (Path(cli.model), common.model_note(cli.model)) if cli.model else common.default_model_dir()
    info = {"model": note, "model_dir": common.rel(model_dir), "machine": common.machine_info(),
            "methods": list(explain.METHODS), "command": common.command_line("bench/load.py")}
    api = {"classify": cli.classify_api, "explain": cli.explain_api}
    with tempfile.TemporaryDirectory(prefix="bench-load-") as tmp:
        paths = save_test_images(Path(tmp), cli.images)
        expected = expected_answers(model_dir, paths)
        reqs = plan(cli, len(paths), list(explain.METHODS))
        app_env = dict(kv.split("=", 1) for kv in cli.app_env)
        with common.AppProcess(model_dir, Path(tmp) / "app.log", env=app_env) as app:
            time.sleep(1.0)
            start_rss = app.sampler.rss()
            processes = app.sampler.breakdown()
            warm_up(app.url, paths[0], api, list(explain.METHODS))
            time.sleep(max(3.0, min(cli.idle, 10.0)))         # the app gives memory back after 2 s idle
            warm_rss = app.sampler.rss()
            outcomes, walls, not_sent, per_burst = [], [], 0, []
            for b in range(cli.bursts):
                clients = [] if cli.client in ("lean", "api") else open_clients(app.url, cli.concurrency, cli.shared_client)
                t_start = app.sampler.samples[-1][0]
                print(f"[load] burst {b + 1}/{cli.bursts}: {cli.concurrency} {cli.client} clients; app RSS "
                      f"{common.mib(app.sampler.rss())} MiB; sending {len(reqs)} requests", flush=True)
                cpu_start = cpu_seconds(app.sampler.proc)
                if cli.client in ("lean", "api"):
                    got, wall, left = burst_lean(app.url, reqs, paths, expected, cli, api)
                else:
                    got, wall, left = burst(clients, reqs, paths, expected, cli, api)
                cpu = cpu_seconds(app.sampler.proc) - cpu_start
                for o in got:
                    o.index += b * len(reqs)
                outcomes += got
                walls.append(wall)
                not_sent += left
                peak = app.sampler.peak(since=t_start)
                for c in {id(c): c for c in clients}.values():          # a shared client once
                    c.close()
                time.sleep(cli.idle)
                served = sum(o.status == "ok" for o in got)
                per_burst.append({"burst": b + 1, "wall_seconds": wall, "served": served,
                                  "server_cpu_s": round(cpu, 3), "server_cpu_ms_per_request": round(1000 * cpu / max(served, 1), 2),
                                  "peak_mib": common.mib(peak), "after_idle_mib": common.mib(app.sampler.rss())})
            samples = app.sampler.samples
            log_tail = (Path(tmp) / "app.log").read_text()[-3000:]
    outcomes.sort(key=lambda o: o.index)
    stats = {"all": endpoint_stats(outcomes, None), "classify": endpoint_stats(outcomes, "classify"),
             f"explain ({len(cli.explain_methods)} methods)": endpoint_stats(outcomes, "explain", len(cli.explain_methods)),
             f"explain (all {len(explain.METHODS)} methods)": endpoint_stats(outcomes, "explain", len(explain.METHODS))}
    stats = {k: v for k, v in stats.items() if v["sent"]}
    problems = [f"#{o.index} {o.endpoint}: {o.status}: {o.detail}" for o in outcomes if o.status != "ok"][:10]
    step = max(1, len(samples) // 300)
    res = {"info": info, "settings": vars(cli) | {"explain_methods": cli.explain_methods}, "stats": stats,
           "wall_seconds": sum(walls), "not_sent": not_sent,
           "throughput_per_s": stats["all"]["served"] / sum(walls) if sum(walls) else 0.0,
           "server_cpu_ms_per_request": round(1000 * sum(b["server_cpu_s"] for b in per_burst)
                                              / max(stats["all"]["served"], 1), 2),
           "memory": {"start_mib": common.mib(start_rss), "warm_mib": common.mib(warm_rss), "peak_mib": max(b["peak_mib"] for b in per_burst),
                      "after_idle_mib": per_burst[-1]["after_idle_mib"], "bursts": per_burst,
                      "samples": len(samples), "processes_at_start": processes,
                      "series_s_mib": [(round(t, 2), common.mib(b)) for t, b in samples[::step]]},
           "first_problems": problems, "app_log_tail": log_tail,
           # Every request's record, for audit, while it stays small (one default burst).
           "outcomes": [asdict(o) for o in outcomes] if len(outcomes) <= 500 else "omitted (over 500 requests)"}
    md = markdown(res)
    json_path, md_path = common.write_results(cli.results_dir, cli.name, res, md)
    print(md)
    print(f"[load] wrote {json_path} and {md_path}")
    ok = stats["all"]["served"] == cli.requests * cli.bursts
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
