"""Deliberate breaks of the product, and proof that the tests catch each one.

Copies the repository (the files git knows: tracked, and untracked but not ignored, as they are in
the working tree) to a temporary folder, runs the chosen tests there once unchanged (the baseline:
they must pass, or a "kill" would prove nothing), then applies each break in turn, runs the tests
meant to catch it, and restores the file. Prints one row per break: killed (by which tests) or
SURVIVED. Exits 1 if any break survives, cannot be applied, or its baseline fails.

    python tests/mutations.py                    # every break, after the unchanged baseline
    python tests/mutations.py --only lock        # breaks whose name contains "lock"
    python tests/mutations.py --no-baseline      # skip the unchanged run (when it is known to pass)

Not collected by pytest (the name does not start with test_). Every pytest runs under `nice -n 19`.
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

REPO = Path(__file__).resolve().parents[1]
RUN_TIMEOUT_S = 1800


class NotApplicable(RuntimeError):
    """The code a break edits is not there (any more): the break must be rewritten, not skipped."""


def replace_once(old: str, new: str) -> Callable[[str], str]:
    def edit(source: str) -> str:
        if source.count(old) != 1:
            raise NotApplicable(f"expected exactly one {old.strip()!r}, found {source.count(old)}")
        return source.replace(old, new)
    return edit


def insert_after(pattern: str, text: str) -> Callable[[str], str]:
    def edit(source: str) -> str:
        found = list(re.finditer(pattern, source, flags=re.MULTILINE))
        if len(found) != 1:
            raise NotApplicable(f"expected exactly one match of {pattern!r}, found {len(found)}")
        end = found[0].end()
        return source[:end] + text + source[end:]
    return edit


def still_python(edit: Callable[[str], str], path: str) -> Callable[[str], str]:
    """`edit`, refused when its result does not compile: a syntax error fails every test, which
    would count as a kill without testing anything."""
    def checked(source: str) -> str:
        broken = edit(source)
        try:
            compile(broken, path, "exec")
        except SyntaxError as e:
            raise NotApplicable(f"the break is not valid Python ({e.msg}, line {e.lineno})") from None
        return broken
    return checked


def prepend(text: str) -> Callable[[str], str]:
    return lambda source: text + source


@dataclass
class Break:
    name: str
    path: str                       # the file edited, relative to the repository
    edit: Callable[[str], str]      # source -> broken source; NotApplicable when the anchor is gone
    tests: list[str]                # pytest node ids meant to catch it


BREAKS = [
    Break("no optimiser step (training/loop.py train_step)", "training/loop.py",
          replace_once("    optimizer.step()\n", "    pass  # MUTATION: optimizer.step() removed\n"),
          ["tests/test_train.py::test_training_learns_from_the_slice",
           "tests/test_train.py::test_torchrun_data_parallel_on_cpu"]),
    Break("no pixel limit (preprocess.py _check_size)", "imaging/preprocess.py",
          replace_once("    if width * height > MAX_IMAGE_PIXELS:\n", "    if False:  # MUTATION: no pixel limit\n"),
          ["tests/test_model.py::test_decompression_bomb_is_refused_before_decoding",
           "tests/test_model.py::test_the_apps_pixel_limit_is_reached_below_pillows"]),
    Break("pixel limit raised to 10**12 (preprocess.py MAX_IMAGE_PIXELS)", "imaging/preprocess.py",
          replace_once("MAX_IMAGE_PIXELS = 40_000_000\n", "MAX_IMAGE_PIXELS = 10**12  # MUTATION\n"),
          ["tests/test_model.py::test_the_apps_pixel_limit_is_reached_below_pillows",
           "tests/test_app.py::test_the_apps_own_pixel_limit_refuses_a_45_megapixel_upload"]),
    Break("no model lock (dashboard/service.py)", "dashboard/service.py",
          replace_once("        self._explain_lock = threading.Lock()\n",
                       "        self._explain_lock = __import__('contextlib').nullcontext()  # MUTATION: no lock\n"),
          ["tests/test_app.py::test_concurrent_requests_get_the_serial_answers",
           "tests/test_app_service.py::test_the_service_runs_the_network_for_one_request_at_a_time"]),
    Break("batch rows handed to the wrong callers (dashboard/batcher.py)", "dashboard/batcher.py",
          replace_once("            for (_, answer), r in zip(batch, results):\n",
                       "            for (_, answer), r in zip(batch, results[::-1]):  # MUTATION: rows reversed\n"),
          ["tests/test_app_service.py::test_batched_predictions_are_the_single_ones",
           "tests/test_serving.py::test_coroutines_share_forward_passes_and_each_gets_its_own_row"]),
    Break("blank preprocessing of non-8-bit input (preprocess.py _unit_range)", "imaging/preprocess.py",
          insert_after(r'^def _unit_range\(.*\n    """.*"""\n',
                       "    if a.dtype != np.uint8:\n"
                       "        return np.zeros(a.shape, np.float32)  # MUTATION: non-8-bit input comes out blank\n"),
          ["tests/test_model.py::test_preprocess_accepts_all_kinds_of_images"]),
    Break("photos left out of the training batches (training/loop.py Batches.draw)", "training/loop.py",
          replace_once("        if self.extra is None:\n", "        if True:  # MUTATION: the second pool never mixed in\n"),
          ["tests/test_adapt.py::test_joint_training_mixes_photos_in_and_reports_them"]),
    Break("photos read as stored, EXIF rotation ignored (data.py load_photo_looks)", "training/data.py",
          replace_once("fashion_look(ImageOps.exif_transpose(img).convert(\"RGB\")))\n",
                       "fashion_look(img.convert(\"RGB\")))  # MUTATION: no EXIF rotation\n"),
          ["tests/test_adapt.py::test_photos_are_read_upright_as_the_app_shows_them"]),
    Break("photos answered by the network's own BatchNorm (dashboard/service.py _predict)", "dashboard/service.py",
          replace_once("        out = (self.photo_batcher if photo else self.batcher)(self._input(look))\n",
                       "        out = self.batcher(self._input(look))  # MUTATION: photos not routed\n"),
          ["tests/test_analyse.py::test_real_photos_end_to_end"]),
    Break("photo BatchNorm left as the network's own (adapt.py train_photo_norms)", "training/adapt.py",
          replace_once("    return RunResult(model.eval(), history, None, clock.elapsed(), trained=model)\n",
                       "    model = with_photo_norms(load_model(cfg.model.init_from))  # MUTATION: training thrown away\n"
                       "    return RunResult(model.eval(), history, None, clock.elapsed(), trained=model)\n"),
          ["tests/test_adapt.py::test_photo_norms_train_only_the_photo_batchnorm"]),
    Break("Fashion-MNIST share left out of the photo-norm batches (adapt.py)", "training/adapt.py",
          replace_once("    fmnist = fmnist_share_of(data, allowed.shape[1]) if data.fmnist_share else None\n",
                       "    fmnist = None  # MUTATION: --fmnist-share ignored\n"),
          ["tests/test_adapt.py::test_fmnist_share_mixes_held_in_fashion_mnist_images_into_the_photo_batches"]),
    Break("OOD threshold set on the training images (training/fit_ood.py fit_candidates)", "training/fit_ood.py",
          replace_once('    detectors[chosen].threshold = ood.threshold_at(scores[chosen]["validation"], cfg.keep)\n',
                       "    detectors[chosen].threshold = ood.threshold_at(detectors[chosen].score_views(\n"
                       "        model, fit['views'], fit['x']), cfg.keep)  # MUTATION: threshold on training images\n"),
          ["tests/test_fit_ood.py::test_the_threshold_passes_the_kept_share_of_validation"]),
    Break("photo BatchNorm unused by for_photos (model.py)", "model.py",
          replace_once("            bn.load_state_dict(photo.state_dict())\n",
                       "            pass  # MUTATION: the photo layers are ignored\n"),
          ["tests/test_model.py::test_photo_norms_answer_photos_and_leave_every_other_answer_alone"]),
    Break("broken explain import (explain/__init__.py)", "explain/__init__.py",
          prepend('raise ImportError("MUTATION: explain/ is broken")\n'),
          ["tests/test_notebook.py"]),
    Break("photos decoded on the event loop (dashboard/uploads.py decode_async)", "dashboard/uploads.py",
          replace_once("    if pixels is not None and pixels <= DECODE_ON_LOOP_PIXELS:\n",
                       "    if True:  # MUTATION: everything on the loop\n"),
          ["tests/test_serving.py::test_a_28x28_upload_is_decoded_on_the_event_loop_and_a_photo_in_a_worker_thread"]),
    Break("output image files written in place (dashboard/image_files.py)", "dashboard/image_files.py",
          replace_once("    os.replace(staging, path)\n",
                       "    os.unlink(staging)\n    path.write_bytes(data)  # MUTATION: not atomic\n"),
          ["tests/test_app_service.py::test_an_output_image_file_is_never_seen_half_written"]),
    Break("output images handed to Gradio as pixels (app.py analyse_look)", "app.py",
          replace_once("    return as_file(view_image(look)), SERVICE", "    return view_image(look), SERVICE"),
          ["tests/test_app_service.py::test_every_output_image_the_handlers_return_is_a_file"]),
    Break("no image size limit on the inference API (dashboard/api.py MAX_IMAGE_BYTES)", "dashboard/api.py",
          replace_once("MAX_IMAGE_BYTES = 10 * 2**20 ", "MAX_IMAGE_BYTES = 10**12  # MUTATION "),
          ["tests/test_api.py::test_a_body_over_the_limit_is_refused"]),
    Break("a batch answered in another order (dashboard/api.py classify_batch)", "dashboard/api.py",
          replace_once('            return JSONResponse({"results": answers})\n',
                       '            return JSONResponse({"results": answers[::-1]})  # MUTATION: reversed\n'),
          ["tests/test_api.py::test_a_batch_answers_each_image_in_order"]),
    Break("folder janitor sweeps without rest (dashboard/uploads.py)", "dashboard/uploads.py",
          replace_once("            time.sleep(max(self.every_s, took * SWEEP_SHARE_INVERSE))\n",
                       "            time.sleep(self.every_s)  # MUTATION: no rest\n"),
          ["tests/test_serving.py::test_the_folder_janitor_rests_fifty_times_as_long_as_its_last_sweep_took"]),
    Break("neighbours searched with the first stages' features (dashboard/service.py _forward)", "dashboard/service.py",
          replace_once("penultimate(serving, views).mean(0).numpy()",
                       "views.mean(0)[:, :serving.head[-1].in_features].numpy()"),
          ["tests/test_app_insight.py::test_analyse_names_the_nearest_training_images_of_the_served_features"]),
    Break("confusion cell filtered one column off (dashboard/views.py cell_filters)", "dashboard/views.py",
          replace_once("(self.labels[column - 1] if column else \"All\")",
                       "(self.labels[column % len(self.labels)] if column else \"All\")  # MUTATION: off by one"),
          ["tests/test_views.py::test_a_confusion_cell_filters_the_mistakes_to_that_cell"]),
    Break("the class under Explain class ignored by the contrast (dashboard/insight.py explain)", "dashboard/insight.py",
          replace_once("            if s.labels.index(versus) != target:\n",
                       "            if False:  # MUTATION: versus ignored\n"),
          ["tests/test_explain_insight.py::test_the_page_section_gets_a_value_for_each_component"]),
    Break("material described over the whole photo, not the region kept (imaging/material.py describe)",
          "imaging/material.py",
          replace_once("    inside = _inside(mask)\n", "    inside = np.ones(mask.shape, bool)  # MUTATION: mask ignored\n"),
          ["tests/test_material.py"]),
    Break("a photo's material lost on its way to the batch (dashboard/service.py _batch_input)", "dashboard/service.py",
          replace_once("        return x, torch.as_tensor(np.asarray(material, dtype=np.float32))[None]\n",
                       "        return x, torch.zeros(1, len(material))  # MUTATION: material zeroed\n"),
          ["tests/test_served_reference.py::test_photo_looks_and_answers_are_unchanged"]),
]


def copy_repository(dest: Path) -> int:
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                            capture_output=True, check=True).stdout.decode().split("\0")
    n = 0
    for rel in filter(None, listed):
        src = REPO / rel
        if not src.is_file():            # deleted in the working tree, or a submodule
            continue
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, target)
        n += 1
    return n


def run_tests(copy: Path, tests: list[str]) -> tuple[int, list[str], float, str]:
    """pytest on `tests` in the copy -> (exit code, failed/errored node ids, seconds, output tail)."""
    command = ["nice", "-n", "19", sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rfE",
               "--tb=line", *tests]
    start = time.monotonic()
    try:
        proc = subprocess.run(command, cwd=copy, capture_output=True, text=True, timeout=RUN_TIMEOUT_S,
                              env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"})
        out, code = proc.stdout + proc.stderr, proc.returncode
    except subprocess.TimeoutExpired as e:
        out, code = f"timed out after {RUN_TIMEOUT_S} s\n{e.stdout or ''}", -1
    failed = sorted({m.group(2) for m in re.finditer(r"^(FAILED|ERROR) (.+?)(?: - .*)?$", out, flags=re.MULTILINE)})
    return code, failed, time.monotonic() - start, out[-3000:]


def short(node: str) -> str:
    return node.replace("tests/", "")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--only", default="", help="run only the breaks whose name contains this text")
    p.add_argument("--no-baseline", action="store_true", help="do not run the tests on the unchanged copy first")
    p.add_argument("--keep", action="store_true", help="keep the temporary copy (its path is printed)")
    args = p.parse_args(argv)
    breaks = [b for b in BREAKS if args.only.lower() in b.name.lower()]
    if not breaks:
        p.error(f"no break matches {args.only!r}")

    tmp = Path(tempfile.mkdtemp(prefix="mutations-"))
    copy = tmp / "repo"
    print(f"copied {copy_repository(copy)} files of {REPO} to {copy}", flush=True)
    rows, bad = [], False
    try:
        baseline_failed: set[str] = set()
        if not args.no_baseline:
            everything = list(dict.fromkeys(t for b in breaks for t in b.tests))
            code, failed, seconds, tail = run_tests(copy, everything)
            print(f"baseline (unchanged copy): exit {code} in {seconds:.0f} s"
                  + (f", failing: {', '.join(map(short, failed))}" if code else ", all pass"), flush=True)
            if code:
                baseline_failed = set(failed) or {"(all)"}
                print(tail, flush=True)
        for b in breaks:
            target = copy / b.path
            original = target.read_text()
            try:
                edit = still_python(b.edit, b.path) if b.path.endswith(".py") else b.edit
                target.write_text(edit(original))
            except NotApplicable as e:
                rows.append((b.name, b.tests, f"NOT APPLICABLE: {e}", 0.0))
                bad = True
                continue
            try:
                print(f"running: {b.name} ...", flush=True)
                code, failed, seconds, tail = run_tests(copy, b.tests)
            finally:
                target.write_text(original)
            tainted = [t for t in b.tests if "(all)" in baseline_failed
                       or any(f.startswith(t) for f in baseline_failed)]
            if tainted:
                result, bad = f"BASELINE FAILS ({', '.join(map(short, tainted))}): proves nothing", True
            elif code == 0:
                result, bad = "SURVIVED", True
            elif not failed:
                result, bad = f"NO RESULT (pytest exit {code}):\n{tail[-800:]}", True
            else:
                result = "killed by " + ", ".join(map(short, failed))
            rows.append((b.name, b.tests, result, seconds))
            print(f"  -> {result} ({seconds:.0f} s)", flush=True)
    finally:
        if args.keep:
            print(f"kept {copy}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)

    print("\n| break | tests run | result | seconds |\n|---|---|---|---|")
    for name, tests, result, seconds in rows:
        print(f"| {name} | {'<br>'.join(map(short, tests))} | {result} | {seconds:.0f} |")
    survived = [r for r in rows if not r[2].startswith("killed")]
    print(f"\n{len(rows) - len(survived)} of {len(rows)} breaks killed" + (f"; {len(survived)} not" if survived else ""))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
