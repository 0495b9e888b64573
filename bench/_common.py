"""Shared helpers of the bench/ scripts: timing, machine facts, the app as a subprocess, results files.

Not a script and never imported by the app. Each bench script puts the repository root on
sys.path and imports this module as `_common`.
"""
from __future__ import annotations

import json
import os
import platform
import shlex
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Callable

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


# ---------------------------------------------------------------------------------------------
# Machine, model and command facts (every results file records them)
# ---------------------------------------------------------------------------------------------

def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine_info() -> dict:
    import torch
    return {"cpu_model": cpu_model(), "cpu_count": os.cpu_count(), "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(), "python": platform.python_version(),
            "platform": platform.platform(), "load_average_1_5_15min": os.getloadavg()}


def default_model_dir() -> tuple[Path, str]:
    """weights/ when the shipped run has finished, else the small smoke model (same architecture)."""
    weights = REPO / "weights"
    if (weights / "model.safetensors").is_file():
        return weights, "weights/ (the shipped model)"
    return REPO / "outputs" / "smoke", ("outputs/smoke (weights/ not present: a small model of the same "
                                        "architecture, so latency and memory are representative, accuracy is not)")


def model_note(path: Path) -> str:
    path = Path(path).resolve()
    if path == (REPO / "weights").resolve():
        return "weights/ (the shipped model)"
    if path == (REPO / "outputs" / "smoke").resolve():
        return "outputs/smoke (a small model of the shipped architecture; accuracy not representative)"
    return str(path)


def rel(path: Path | str) -> str:
    """A path as the README shows it: relative to the repository when inside it."""
    path = Path(path).resolve()
    try:
        return str(path.relative_to(REPO))
    except ValueError:
        return str(path)


def command_line(script: str) -> str:
    """The command that produced a results file, as a reader would retype it."""
    return "python " + shlex.join([script, *sys.argv[1:]])


# ---------------------------------------------------------------------------------------------
# Timing
# ---------------------------------------------------------------------------------------------

def time_calls(fn: Callable[[], object], repeats: int, warmup: int = 2) -> dict:
    """Median (and spread) in milliseconds of `repeats` calls of fn, after `warmup` untimed calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000)
    return summarize_ms(times)


def summarize_ms(times: list[float]) -> dict:
    if not times:
        return {"n": 0, "median_ms": None, "p95_ms": None, "min_ms": None, "max_ms": None}
    ordered = sorted(times)
    return {"n": len(times), "median_ms": statistics.median(ordered), "p95_ms": percentile(ordered, 95),
            "min_ms": ordered[0], "max_ms": ordered[-1]}


def percentile(ordered: list[float], q: float) -> float:
    """Nearest-rank percentile of an already sorted list."""
    k = max(0, min(len(ordered) - 1, int(round(q / 100 * len(ordered) + 0.5)) - 1))
    return ordered[k]


# ---------------------------------------------------------------------------------------------
# The real app as a subprocess, with its memory sampled
# ---------------------------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RssSampler(threading.Thread):
    """Samples the resident memory of a process and all its children every `interval` seconds."""

    def __init__(self, pid: int, interval: float = 0.05):
        super().__init__(daemon=True)
        import psutil
        self.proc = psutil.Process(pid)
        self.interval = interval
        self.samples: list[tuple[float, int]] = []     # (seconds since start, bytes)
        self._halt = threading.Event()
        self._t0 = time.perf_counter()

    def rss(self) -> int:
        import psutil
        total = 0
        for p in [self.proc, *self.proc.children(recursive=True)]:
            try:
                total += p.memory_info().rss
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                pass
        return total

    def run(self) -> None:
        import psutil
        while not self._halt.is_set():
            try:
                self.samples.append((time.perf_counter() - self._t0, self.rss()))
            except psutil.NoSuchProcess:
                return
            self._halt.wait(self.interval)

    def stop(self) -> None:
        self._halt.set()
        self.join(timeout=5)

    def breakdown(self) -> list[dict]:
        """Resident memory per process (the app and each child), largest first."""
        import psutil
        rows = []
        for p in [self.proc, *self.proc.children(recursive=True)]:
            try:
                rows.append({"pid": p.pid, "name": p.name(), "cmdline": " ".join(p.cmdline())[:160],
                             "rss_mib": mib(p.memory_info().rss)})
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                pass
        return sorted(rows, key=lambda r: -r["rss_mib"])

    def peak(self, since: float = 0.0) -> int:
        return max((b for t, b in self.samples if t >= since), default=0)


class AppProcess:
    """`python app.py --port P --model M` on 127.0.0.1, ready when its page answers; stopped on exit.

    Usage: `with AppProcess(model_dir) as app: Client(app.url) ...`; `app.sampler` holds the RSS.
    """

    def __init__(self, model_dir: Path | str, log_path: Path | str, ready_timeout: float = 180.0,
                 env: dict[str, str] | None = None):
        self.model_dir, self.log_path, self.ready_timeout = str(model_dir), Path(log_path), ready_timeout
        self.extra_env = dict(env or {})
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        self.proc: subprocess.Popen | None = None
        self.sampler: RssSampler | None = None

    def __enter__(self) -> "AppProcess":
        # A Gradio folder of its own, as a freshly started Space has: the shared <tmp>/gradio keeps
        # whatever earlier runs left there, which Gradio's cache sweep would walk.
        self.gradio_dir = tempfile.TemporaryDirectory(prefix="bench-gradio-")
        env = os.environ | {"MODEL_ID": self.model_dir, "GRADIO_ANALYTICS_ENABLED": "False",
                            "HF_HUB_OFFLINE": "1", "GRADIO_SERVER_NAME": "127.0.0.1",
                            "GRADIO_TEMP_DIR": self.gradio_dir.name, "PYTHONUNBUFFERED": "1"} | self.extra_env
        self.log = open(self.log_path, "w")
        self.proc = subprocess.Popen([sys.executable, "app.py", "--port", str(self.port), "--model", self.model_dir],
                                     cwd=REPO, env=env, stdout=self.log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        self.sampler = RssSampler(self.proc.pid)
        self.sampler.start()
        self._wait_ready()
        return self

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.ready_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"app.py exited with code {self.proc.returncode}; log: {self.log_path}\n"
                                   + self.log_path.read_text()[-3000:])
            try:
                with urllib.request.urlopen(self.url + "config", timeout=2) as r:
                    if r.status == 200:
                        self.ready_s = self.sampler.samples[-1][0] if self.sampler.samples else 0.0
                        return
            except OSError:
                pass
            time.sleep(0.25)
        raise TimeoutError(f"app.py did not answer on {self.url} within {self.ready_timeout:.0f} s; log: {self.log_path}")

    def __exit__(self, *exc) -> None:
        if self.sampler:
            self.sampler.stop()
        if self.proc and self.proc.poll() is None:
            # Only the process group this object started (start_new_session=True).
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=5)
        self.log.close()
        self.gradio_dir.cleanup()


def mib(n_bytes: int | float) -> float:
    return round(n_bytes / 2**20, 1)


# ---------------------------------------------------------------------------------------------
# Results files
# ---------------------------------------------------------------------------------------------

def md_table(headers: list[str], rows: list[list]) -> str:
    def cell(v):
        if isinstance(v, float):
            return f"{v:.1f}" if abs(v) >= 100 else f"{v:.2f}"
        return "" if v is None else str(v)
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def write_results(results_dir: Path | str, name: str, data: dict, markdown: str) -> tuple[Path, Path]:
    """bench/results/<name>.json (everything measured) and <name>.md (the table for the README)."""
    folder = Path(results_dir)
    folder.mkdir(parents=True, exist_ok=True)
    json_path, md_path = folder / f"{name}.json", folder / f"{name}.md"
    json_path.write_text(json.dumps(data, indent=2, default=str) + "\n")
    md_path.write_text(markdown.rstrip() + "\n")
    return json_path, md_path
