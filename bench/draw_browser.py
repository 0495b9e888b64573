"""Drawings drawn with the mouse on the real Sketchpad: how many are read right, how many called not a garment.

Runs tests/test_draw_browser.py (a real Chromium against the real app: every drawable class outlined
and filled at the default brush, outlined at a thin one, drawn with page.mouse) and records what the
page showed, which that test leaves in tests/artifacts/draw_browser.json, with the machine's load.
Issue 30's bars: at least 80% right, at most 20% called not a garment.

    python bench/draw_browser.py          # minutes: the page is drawn on once

Writes bench/results/draw_browser.json + draw_browser.md.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as common  # noqa: E402  (puts the repository root on sys.path)

from training.evaluate import wilson_interval  # noqa: E402

ARTIFACT = common.REPO / "tests" / "artifacts" / "draw_browser.json"
BARS = {"right": (None, 0.80), "not_a_garment": (0.20, None)}     # (at most, at least)


def main() -> None:
    before = common.machine_info()
    ARTIFACT.unlink(missing_ok=True)
    test = subprocess.run([sys.executable, "-m", "pytest", "tests/test_draw_browser.py", "-q", "-p", "no:cacheprovider"],
                          cwd=common.REPO, capture_output=True, text=True)
    if not ARTIFACT.is_file():
        raise SystemExit(f"the browser test drew nothing:\n{test.stdout[-3000:]}\n{test.stderr[-2000:]}")
    seen = json.loads(ARTIFACT.read_text())
    n = seen["drawings"]
    counts = {"right": seen["right"], "not_a_garment": seen["not_a_garment"]}
    report = {"command": common.command_line("bench/draw_browser.py"), "model": common.model_note(common.REPO / "weights"),
              "machine": before, "load_average_after": common.machine_info()["load_average_1_5_15min"],
              "tests_passed": test.returncode == 0, "drawings": n,
              "shares": {k: {"count": c, "share": c / n, "ci95": list(wilson_interval(c, n))} for k, c in counts.items()},
              "bars": {k: {"at_most": lo, "at_least": hi} for k, (lo, hi) in BARS.items()}, "results": seen["results"]}
    common.write_results(common.RESULTS, "draw_browser", report, markdown(report))
    print(markdown(report))


def markdown(r: dict) -> str:
    rows = []
    for name, s in r["shares"].items():
        lo, hi = BARS[name]
        met = s["share"] <= lo if lo is not None else s["share"] >= hi
        rows.append([name.replace("_", " "), f"{s['count']} of {r['drawings']}", f"{100 * s['share']:.1f}%",
                     f"{100 * s['ci95'][0]:.1f}% to {100 * s['ci95'][1]:.1f}%",
                     f"<= {lo:.0%}" if lo is not None else f">= {hi:.0%}", "yes" if met else "**no**"])
    wrong = [f"{d['class']} {d['style']} (brush {d['brush']}): {d['label']}" for d in r["results"] if d["label"] != d["class"]]
    return "\n".join([
        "# Drawings on the real Sketchpad (tests/test_draw_browser.py)", "",
        f"Model: {r['model']}. Command: `{r['command']}`. Load average before {r['machine']['load_average_1_5_15min'][0]:.1f}, "
        f"after {r['load_average_after'][0]:.1f} on {r['machine']['cpu_count']} cores. Browser tests passed: "
        f"{r['tests_passed']}. Interval: 95% Wilson.", "",
        common.md_table(["", "drawings", "share", "95% CI", "bar", "met"], rows), "",
        "Read wrong: " + ("; ".join(wrong) or "none") + "."])


if __name__ == "__main__":
    main()
