"""Where a request's time goes in the real app: py-spy samples of the server under load, by stage.

Starts `python app.py`, warms it up, then, while `py-spy record` samples every thread of the app
process, drives it the way bench/load.py does (one event loop, raw HTTP, each request uploads its
PNG then calls the endpoint). Two scenarios, one after the other, each sampled on its own:

- `classify`: a burst of /classify requests from --concurrency clients;
- `explain`: one client asking /explain with --explain-methods (default: every method),
  --explain-requests times.

Each sample (a thread's stack while it runs, idle threads left out) is given to the first stage,
from the innermost frame outwards, whose pattern matches a frame; the share of samples of a stage
times the app's CPU time per request (psutil, over the same window) estimates that stage's CPU per
request.

    python bench/server_profile.py                        # both scenarios (~1 min on 2 cores)
    python bench/server_profile.py --requests 40 --explain-requests 3 --results-dir /tmp/bench   # smoke

Needs py-spy (requirements-dev.txt) and the right to trace a child process (root, or
ptrace_scope 0). Writes <results-dir>/server_profile.json and server_profile.md.
"""
from __future__ import annotations

import argparse
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as common  # noqa: E402  (puts the repository root on sys.path)
import load  # noqa: E402

# (stage, substrings of a frame "function (file:line)"): the first stage matched from the
# innermost frame outwards takes the sample.
STAGES = [
    ("network: prediction batch", ["_forward (dashboard/service.py"]),
    ("network: attribution methods (Captum)", ["explain_batch (explain/methods.py"]),
    ("network: deletion/insertion curves", ["deletion_insertion_many (explain/faithfulness.py"]),
    ("rendering the maps", ["render_overlay (", "view_image (", "common_scale ("]),
    ("decoding + preprocessing the upload", ["decode (dashboard/uploads.py", "look_and_mask (", "fashion_look ("]),
    ("our handler, other", ["app.py", "dashboard/"]),
    ("Gradio: saving outputs to its cache", ["save_img_array_to_cache", "save_pil_to_cache", "move_files_to_cache",
                                             "move_resource_to_block_cache"]),
    ("Gradio: upload route (multipart, file write, hash)", ["upload_file (gradio/routes.py", "GradioMultiPartParser",
                                                            "upload_fn ("]),
    ("Gradio: pre/postprocessing", ["preprocess_data (gradio/blocks.py", "postprocess_data (gradio/blocks.py"]),
    ("Gradio: session state", ["restore_session_state", "SessionState"]),
    ("Gradio: analytics summary (pandas)", ["compute_analytics_summary"]),
    ("Gradio: queue and event stream", ["gradio/queueing.py", "StreamingResponse", "gradio/route_utils.py",
                                        "gradio/blocks.py", "gradio/utils.py"]),
    ("HTTP: uvicorn, starlette, FastAPI, middleware", ["uvicorn/", "starlette/", "fastapi/", "h11", "gradio/brotli",
                                                       "gradio/routes.py", "anyio/", "asyncio/"]),
]
# Innermost frames of a thread that waits (a lock, a condition, the selector): not CPU.
WAITING = ("Condition.wait (", "EpollSelector.select (", "Queue.get (", "Event.wait (", "Thread.join (",
           "Lock.acquire", "_wait_for_tstate_lock")


def stage_of(frames: list[str]) -> str | None:
    """The stage of one stack (outermost frame first); None for a waiting thread."""
    if frames and frames[-1].startswith(WAITING):
        return None
    for frame in reversed(frames):
        for stage, patterns in STAGES:
            if any(p in frame for p in patterns):
                return stage
    return "other (threads, interpreter)"


def breakdown(raw_path: Path) -> Counter:
    """Samples per stage from py-spy's raw (collapsed stacks) output."""
    counts: Counter = Counter()
    for line in raw_path.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        if not stack or not n.isdigit():
            continue
        stage = stage_of(stack.split(";"))
        if stage is not None:
            counts[stage] += int(n)
    return counts


def sampled(app, out: Path, rate: int, drive, gil: bool = False) -> tuple[Counter, float, int, list[str]]:
    """Run drive() while py-spy samples the app; (samples per stage, app CPU s, requests served, py-spy log)."""
    spy = subprocess.Popen([str(Path(sys.executable).with_name("py-spy")), "record", "--pid", str(app.proc.pid),
                            "--rate", str(rate), "--format", "raw", "--output", str(out), "--nonblocking",
                            *(["--gil"] if gil else [])],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    time.sleep(1.0)                                   # py-spy attached before the first request
    cpu0 = load.cpu_seconds(app.sampler.proc)
    served = drive()
    cpu = load.cpu_seconds(app.sampler.proc) - cpu0
    spy.send_signal(signal.SIGINT)                    # py-spy writes its samples on Ctrl-C
    log, _ = spy.communicate(timeout=60)
    if spy.returncode != 0 or not out.exists():
        raise RuntimeError(f"py-spy failed ({spy.returncode}): {log[-1000:]}")
    return breakdown(out), cpu, served, log.strip().splitlines()[-2:]


def table(counts: Counter, cpu_ms_per_request: float) -> list[list]:
    total = sum(counts.values()) or 1
    return [[stage, f"{100 * n / total:.1f}%", round(cpu_ms_per_request * n / total, 2)]
            for stage, n in counts.most_common()]


def markdown(res: dict) -> str:
    parts = [f"""# Where a request's time goes (py-spy, sampled in the app process)

The real app (`python app.py`, {res['info']['model']}) on 127.0.0.1, driven by bench/load.py's lean client
(raw HTTP, one event loop: each request uploads a real test image as PNG, then calls the endpoint).
py-spy samples every running thread of the app {res['settings']['rate']} times a second; each sample goes to the
first stage matched from the innermost frame outwards (bench/server_profile.py `STAGES`), threads waiting
on a lock or the selector left out. CPU ms per request = the stage's share of samples x the app's
CPU time (psutil, user + system) over the window / requests served.
""" + ("""
**--gil**: only the thread holding Python's lock is sampled. An event loop waiting in C (uvloop)
releases it, so idle time no longer counts as work; so do torch's kernels, so the network's share
is low and the CPU ms of every stage are estimates of Python work scaled to the whole CPU time.
""" if res['settings'].get('gil') else "")]
    for name, sc in res["scenarios"].items():
        parts.append(f"""## {name}: {sc['description']}

{sc['served']} requests served in {sc['wall_s']:.1f} s; app CPU {sc['cpu_ms_per_request']:.1f} ms per request;
{sum(sc['samples'].values())} samples.

{common.md_table(['stage', 'share of samples', 'CPU ms per request (estimate)'], table(Counter(sc['samples']), sc['cpu_ms_per_request']))}
""")
    m = res["info"]["machine"]
    parts.append(f"""Machine: {m['cpu_model']}, {m['cpu_count']} cores, torch {m['torch']}; the client runs on the same
cores. Load average before the run: {m['load_average_1_5_15min'][0]:.2f}.

```bash
{res['info']['command']}
```
""")
    return "\n".join(parts)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--model", default=None, help="model folder (default: weights/)")
    p.add_argument("--requests", type=int, default=600, help="classify requests in the burst")
    p.add_argument("--concurrency", type=int, default=50, help="clients of the classify burst")
    p.add_argument("--explain-requests", type=int, default=10, help="explain requests, one at a time")
    p.add_argument("--explain-methods", nargs="+", default=None, help="methods of each explain request (default: all)")
    p.add_argument("--images", type=int, default=20, help="distinct test images")
    p.add_argument("--rate", type=int, default=100, help="py-spy samples per second")
    p.add_argument("--gil", action="store_true",
                   help="sample only the thread holding the GIL (under uvloop, the only way to leave idle time out)")
    p.add_argument("--results-dir", default=str(common.RESULTS))
    return p.parse_args(argv)


def main(argv=None) -> int:
    cli = parse_args(argv)
    import explain
    model_dir, note = (Path(cli.model), common.model_note(cli.model)) if cli.model else common.default_model_dir()
    info = {"model": note, "machine": common.machine_info(), "command": common.command_line("bench/server_profile.py")}
    methods = cli.explain_methods or list(explain.METHODS)
    load_cli = load.parse_args(["--concurrency", str(cli.concurrency), "--timeout", "600"])
    api = {"classify": "/classify", "explain": "/explain"}
    scenarios = {}
    with tempfile.TemporaryDirectory(prefix="bench-server-profile-") as tmp:
        paths = load.save_test_images(Path(tmp), cli.images)
        expected = load.expected_answers(model_dir, paths)
        with common.AppProcess(model_dir, Path(tmp) / "app.log") as app:
            load.warm_up(app.url, paths[0], api, methods)
            plans = {
                "classify": (f"{cli.requests} /classify requests from {cli.concurrency} clients at once",
                             [load.Request(i, "classify", i % len(paths), []) for i in range(cli.requests)],
                             cli.concurrency),
                "explain": (f"{cli.explain_requests} /explain requests with {', '.join(methods)}, one client",
                            [load.Request(i, "explain", i % len(paths), methods) for i in range(cli.explain_requests)], 1),
            }
            for name, (description, reqs, clients) in plans.items():
                load_cli.concurrency = clients
                box = {}

                def drive(reqs=reqs, box=box):
                    t0 = time.perf_counter()
                    outcomes, _, _ = load.burst_lean(app.url, reqs, paths, expected, load_cli, api)
                    box["wall"], box["outcomes"] = time.perf_counter() - t0, outcomes
                    return sum(o.status == "ok" for o in outcomes)

                counts, cpu, served, log = sampled(app, Path(tmp) / f"{name}.txt", cli.rate, drive, cli.gil)
                problems = [o.detail for o in box["outcomes"] if o.status != "ok"][:5]
                scenarios[name] = {"description": description, "served": served, "wall_s": box["wall"],
                                   "cpu_ms_per_request": 1000 * cpu / max(served, 1), "samples": dict(counts),
                                   "problems": problems, "py_spy": log}
    res = {"info": info, "settings": vars(cli), "scenarios": scenarios}
    md = markdown(res)
    json_path, md_path = common.write_results(cli.results_dir, "server_profile", res, md)
    print(md)
    print(f"[server_profile] wrote {json_path} and {md_path}")
    return 0 if all(not s["problems"] for s in scenarios.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
