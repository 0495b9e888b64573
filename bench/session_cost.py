"""What one Gradio session costs the app's memory, against what the app's own /explain path keeps.

Gradio keeps a `SessionState` per session (gradio/state_holder.py): the page's config for every
block, copied, plus the session's gr.State values. It drops the oldest once more than the launch's
`state_session_capacity` sessions are held, and a closed browser session's an hour after it closed.
A client of Gradio's REST API that does not reuse its session hash (bench/load.py's lean clients,
curl) opens a session per request, so the load runs' memory climbs by this cost per request until
that capacity. Here, in one process: the app's /explain function (`app.explain_image`, two methods,
20 real test images in turn) is called in rounds, the resident memory read after each, so that what
our own path keeps is seen apart from Gradio's server; then N sessions of the real page (app.demo) are
created and the resident memory is read before and after.

    python bench/session_cost.py             # 4 rounds of 200 /explain calls, then 1,000 sessions

Writes <results-dir>/session_cost.json + session_cost.md (default bench/results/).
"""
from __future__ import annotations

import argparse
import gc
import inspect
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as common  # noqa: E402  (puts the repository root on sys.path)


def rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 / 2**20


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sessions", type=int, default=1000)
    p.add_argument("--rounds", type=int, default=4, help="rounds of /explain calls")
    p.add_argument("--calls", type=int, default=200, help="/explain calls per round")
    p.add_argument("--results-dir", default=str(common.RESULTS))
    args = p.parse_args(argv)
    import gradio as gr
    from gradio.state_holder import SessionState

    import app
    from training.data import load_images
    capacity = inspect.signature(gr.Blocks.launch).parameters["state_session_capacity"].default
    images = load_images(str(common.REPO / "tests" / "data" / "fashion_mnist"), "test")[2][:20]
    explain_mib = [rss_mib()]
    for _ in range(args.rounds):
        for i in range(args.calls):
            app.explain_image(images[i % len(images)], ["Saliency", "Grad-CAM"], progress=None)
        gc.collect()
        explain_mib.append(rss_mib())
    gc.collect()
    before = rss_mib()
    held = [SessionState(app.demo) for _ in range(args.sessions)]
    gc.collect()
    per_session_kib = 1024 * (rss_mib() - before) / len(held)
    report = {"command": common.command_line("bench/session_cost.py"), "machine": common.machine_info(),
              "gradio": gr.__version__, "blocks": len(app.demo.blocks), "sessions": len(held),
              "explain_calls_per_round": args.calls, "explain_rss_mib": explain_mib,
              "per_session_kib": per_session_kib, "state_session_capacity": capacity,
              "bound_mib": per_session_kib * capacity / 1024}
    rounds = ", ".join(f"{m:.0f}" for m in explain_mib)
    md = "\n".join([
        "# Memory of one Gradio session of the dashboard, and of the app's own /explain path", "",
        f"The app's /explain function called in process, {args.calls} calls a round: resident memory before and after "
        f"each round {rounds} MiB.", "",
        f"Gradio {report['gradio']}, the page's {report['blocks']} blocks; {len(held):,} sessions created in one "
        f"process (`{report['command']}`): **{per_session_kib:.0f} KiB per session**. Gradio holds at most "
        f"{capacity:,} sessions (launch's `state_session_capacity`, left at its default), so sessions cost at most "
        f"**{report['bound_mib']:,.0f} MiB**: the bound of the memory the load runs add when each request "
        "opens a session of its own."])
    common.write_results(args.results_dir, "session_cost", report, md)
    print(md)


if __name__ == "__main__":
    main()
