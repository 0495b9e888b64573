"""The three-way verdict through the real app's /analyse over HTTP, on whole sets, checked against the verdict in process.

Starts `python app.py` on 127.0.0.1 (bench/_common.AppProcess), encodes every image of each set as
a PNG, uploads it and calls /analyse through Gradio's HTTP API (bench/gradio_http.py: POST
/gradio_api/upload, POST /gradio_api/call/analyse, the result from the event stream), with
--concurrency requests in flight. Each answer's `kind` (fashion-mnist-like, garment-photo,
not-a-garment) is compared with the verdict computed in this process on the same image, as
bench/verdict.py computes it (`served_verdicts`: `preprocess.look_and_mask`, then the network and
the detector the app gives that image: for a segmented photo `for_photos()` and the photo detector,
for a drawing the network as trained and the drawings' detector, else the network as trained and the
Fashion-MNIST detector): the verdict must agree, and the score's
difference is reported (the app serves a BatchNorm-folded copy of the network, equal to float rounding).

The sets are bench/verdict.py's (the same seed): Fashion-MNIST test, MNIST test, uniform noise,
constant images, the natural non-garment photos, sketches, garment drawings, photos of hats,
shorts and skirts, and the in-class validation photos. PNG is lossless, so the app decodes the very
pixels scored here. The app refuses a blank image (a single flat colour) with a message instead of a
verdict; such answers are counted as refused, and a refusal agrees with not-a-garment (neither
presents a class as trustworthy).

    python bench/ood_http.py                                       # every set in full
    python bench/ood_http.py --limit 20 --results-dir /tmp/bench   # smoke run: 20 images per set
    python bench/ood_http.py --sets "Fashion-MNIST test" "MNIST test digits"

Writes <results-dir>/ood_http.json and ood_http.md (default bench/results/).
"""
from __future__ import annotations

import argparse
import asyncio
import io
import re
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as common  # noqa: E402  (puts the repository root on sys.path)

import httpx  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from gradio_http import CallError, GradioHTTP  # noqa: E402
from ood_sets import PER_FAMILY  # noqa: E402
from verdict import IN_CLASS, reported_sets, served_verdicts  # noqa: E402
from modelrepo.folder import open_model  # noqa: E402
from modelrepo.verdict import DRAWING_FILES, KINDS, NOT_A_GARMENT, Verdict  # noqa: E402

DATA = common.REPO.parent / "shared" / "data"


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--model", default=str(common.REPO / "weights"), help="model folder (with its ood.* and verdict.* files)")
    p.add_argument("--fashion-mnist", default=str(DATA / "fashion_mnist"))
    p.add_argument("--mnist", default=str(DATA / "mnist"))
    p.add_argument("--photos", default=str(DATA / "clothing_photos"))
    p.add_argument("--results-dir", default=str(common.RESULTS))
    p.add_argument("--per-family", type=int, default=PER_FAMILY, help="images per synthetic set (as bench/ood.py)")
    p.add_argument("--seed", type=int, default=0, help="seed of the synthetic sets (as bench/ood.py)")
    p.add_argument("--limit", type=int, default=0, help="send only the first N images of each set (0: all)")
    p.add_argument("--sets", nargs="*", default=None, help="only these sets, by name (default: all)")
    p.add_argument("--concurrency", type=int, default=8, help="requests in flight")
    return p.parse_args(argv)


# ---------------------------------------------------------------------------------------------
# The sets
# ---------------------------------------------------------------------------------------------

def all_sets(args) -> dict[str, list]:
    """Every set by name, as images for the serving path (uint8 arrays or PIL images)."""
    sets = reported_sets(args)
    sets[IN_CLASS] = [img for img, _ in sets[IN_CLASS]]
    unknown = set(args.sets or ()) - set(sets)
    if unknown:
        raise SystemExit(f"unknown set(s) {sorted(unknown)}: choose from {list(sets)}")
    return {k: v[:args.limit or None] for k, v in sets.items() if not args.sets or k in args.sets}


def png_bytes(image) -> bytes:
    buf = io.BytesIO()
    (image if isinstance(image, Image.Image) else Image.fromarray(image)).save(buf, format="PNG")
    return buf.getvalue()


# ---------------------------------------------------------------------------------------------
# Through the app
# ---------------------------------------------------------------------------------------------

async def analyse_all(url: str, images: list, concurrency: int) -> list[dict]:
    """/analyse's answer for every image, in order: {"answer": dict}, {"refused": the app's message}
    or {"failed": what went wrong on the way (an HTTP status, a timeout, a broken stream)}."""
    gate = asyncio.Semaphore(concurrency)

    async def one(client: GradioHTTP, image) -> dict:
        async with gate:
            try:
                upload = await client.upload(png_bytes(image), "image.png")
                return {"answer": (await client.call("analyse", [upload]))[0]}
            except CallError as e:
                # An error event carries the app's message; anything else is the transport's failure.
                transport = ": HTTP " in str(e) or "ended without" in str(e)
                return {"failed": str(e)[:300]} if transport else {"refused": app_message(str(e))}
            except httpx.HTTPError as e:
                return {"failed": f"{type(e).__name__}: {str(e)[:200]}"}

    async with GradioHTTP(url, max_connections=2 * concurrency) as client:
        return await asyncio.gather(*(one(client, image) for image in images))


def app_message(error: str) -> str:
    """The user-facing sentence of an error event ({'error': '...', ...}), else the error as it came."""
    found = re.search(r"""'error': (['"])(.*?)\1""", error)
    return found.group(2) if found else error[:300]


def app_kind(answer: dict) -> str | None:
    """The app's verdict: its `kind`, not-a-garment for a refusal, None for a request that failed."""
    if "failed" in answer:
        return None
    return NOT_A_GARMENT if "refused" in answer else answer["answer"]["kind"]


def compare(answers: list[dict], direct: dict) -> dict:
    """One set's figures: the app's verdicts against those computed in process."""
    kinds = [app_kind(a) for a in answers]
    answered = [i for i, a in enumerate(answers) if "answer" in a]
    gaps = [abs(answers[i]["answer"]["ood_score"] - float(direct["scores"][i])) for i in answered]
    n = len(answers)
    return {"n": n, "answered": len(answered),
            "kinds_http": {k: sum(v == k for v in kinds) / n for k in KINDS},
            "refused": sum("refused" in a for a in answers) / n, "failed": sum("failed" in a for a in answers),
            "not_a_garment_direct": sum(k == NOT_A_GARMENT for k in direct["kinds"]) / n,
            "agreement": sum(a == d for a, d in zip(kinds, direct["kinds"])) / n,
            "disagreements": [{"index": i, "direct": direct["kinds"][i], "direct_score": float(direct["scores"][i]),
                               "app": answers[i]} for i in range(n) if kinds[i] != direct["kinds"][i]][:20],
            "max_score_difference": max(gaps, default=None),
            "thresholds_reported": sorted({answers[i]["answer"]["ood_threshold"] for i in answered}),
            "refusal_messages": dict(Counter(a["refused"] for a in answers if "refused" in a).most_common(5)),
            "failure_messages": dict(Counter(a["failed"] for a in answers if "failed" in a).most_common(5))}


def main(argv=None) -> None:
    args = parse_args(argv)
    opened = open_model(args.model)
    model, detector = opened.model, opened.detector
    if detector is None:
        raise SystemExit(f"{args.model}: no usable OOD detector ({opened.detector_error}); bench/ood.py fits one")
    photo_verdict = Verdict.load(args.model, model)
    drawing_verdict = Verdict.load(args.model, model, DRAWING_FILES)
    sets = all_sets(args)
    print(f"[ood_http] judging {sum(map(len, sets.values())):,} images in process ...", flush=True)
    with torch.no_grad():
        direct = {name: served_verdicts(model, detector, photo_verdict, images, drawing_verdict) for name, images in sets.items()}
    results = {}
    with tempfile.TemporaryDirectory() as tmp, common.AppProcess(args.model, Path(tmp) / "app.log") as app:
        for name, images in sets.items():
            t0 = time.perf_counter()
            answers = asyncio.run(analyse_all(app.url, images, args.concurrency))
            seconds = time.perf_counter() - t0
            results[name] = compare(answers, direct[name]) | {
                "seconds": round(seconds, 1), "requests_per_s": round(len(images) / seconds, 1)}
            r = results[name]
            print(f"[ood_http] {name:40s} n {r['n']:>6,} not-a-garment {r['kinds_http'][NOT_A_GARMENT]:.3f} "
                  f"refused {r['refused']:.3f} direct {r['not_a_garment_direct']:.3f} agreement {r['agreement']:.4f} "
                  f"({seconds:.0f} s)", flush=True)
    report = {"command": common.command_line("bench/ood_http.py"), "model": common.model_note(Path(args.model)),
              "machine": common.machine_info(),
              "detectors": {"fashion_mnist": {"score": detector.score_name, "threshold": detector.threshold},
                            "photo": {"score": photo_verdict.detector.score_name,
                                      "threshold": photo_verdict.detector.threshold},
                            "drawing": {"score": drawing_verdict.detector.score_name,
                                        "threshold": drawing_verdict.detector.threshold}},
              "limit": args.limit, "concurrency": args.concurrency, "seed": args.seed,
              "app_ready_s": round(app.ready_s, 1), "sets": results}
    common.write_results(args.results_dir, "ood_http", report, markdown(report))
    print(markdown(report))


def pct(v: float) -> str:
    return f"{100 * v:.1f}%"


def markdown(r: dict) -> str:
    sent = sum(s["n"] for s in r["sets"].values())
    seconds = sum(s["seconds"] for s in r["sets"].values())
    d = r["detectors"]
    lines = ["# The three-way verdict through the app's /analyse (HTTP)", "",
             f"Model: {r['model']}; Fashion-MNIST detector {d['fashion_mnist']['score']} (threshold "
             f"{d['fashion_mnist']['threshold']:.6g}), photo detector {d['photo']['score']} (threshold "
             f"{d['photo']['threshold']:.6g}). "
             f"Command: `{r['command']}`. Machine: {r['machine']['cpu_model']}, {r['machine']['cpu_count']} cores. "
             f"{sent:,} PNG uploads, {r['concurrency']} in flight, {seconds:.0f} s "
             + (f"(the first {r['limit']} images of each set)." if r["limit"] else "(every image of every set)."), "",
             "Shares of the answers' `kind` (a refusal, the app's message for a blank image, counts as "
             "not-a-garment). *Agreement*: the app's kind equals the one computed in this process on the same "
             "image (bench/verdict.py); *max score difference* is between the app's ood_score and the in-process "
             "score. *Failed*: requests that got no answer (counted as disagreeing).", ""]
    rows = [[name, f"{s['n']:,}", *[pct(s["kinds_http"][k]) for k in KINDS], pct(s["refused"]),
             pct(s["not_a_garment_direct"]), pct(s["agreement"]),
             "" if s["max_score_difference"] is None else f"{s['max_score_difference']:.2g}",
             s["failed"], f"{s['requests_per_s']:.0f}"] for name, s in r["sets"].items()]
    lines.append(common.md_table(["set", "images", *[f"{k} (HTTP)" for k in KINDS], "of which refused",
                                  "not-a-garment (in process)", "agreement", "max score difference", "failed",
                                  "requests/s"], rows))
    for key, label in (("refusal_messages", "Refusal messages"), ("failure_messages", "Failures")):
        messages = Counter()
        for s in r["sets"].values():
            messages.update(s[key])
        if messages:
            lines += ["", f"{label}: " + "; ".join(f"{m!r} ({c:,})" for m, c in messages.most_common(3)) + "."]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
