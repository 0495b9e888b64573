"""What the tests share that is not a fixture: the repository root, free ports, the real app started
as `python app.py` on a free localhost port, Chromium's path.

The app serves the committed weights/ (what a fresh clone has). APP_TEST_MODEL=<folder or repo id>
serves other weights instead (development before weights/ exists, e.g. outputs/smoke).
"""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
START_TIMEOUT_S = 240          # a cold start imports torch and gradio; a busy CPU makes it slow


def free_port() -> int:
    return free_port_on("127.0.0.1")


def free_port_on(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


@dataclass
class AppServer:
    url: str
    process: subprocess.Popen
    log: Path
    temp_dir: Path

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


def start_app(workdir: Path, env_extra: dict[str, str] | None = None, args: list[str] = (),
              host: str = "127.0.0.1") -> AppServer:
    """Start app.py as a subprocess on `host` (its --host) and wait until its page answers there
    (or fail with its log)."""
    port = free_port_on(host)
    args = ["--host", host, *args]
    temp_dir = workdir / "gradio-tmp"
    temp_dir.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "GRADIO_TEMP_DIR": str(temp_dir), "PYTHONUNBUFFERED": "1"}
    env.pop("MODEL_ID", None)
    if os.environ.get("APP_TEST_MODEL"):
        env["MODEL_ID"] = os.environ["APP_TEST_MODEL"]
    env.update(env_extra or {})
    log = workdir / f"app-{port}.log"
    with open(log, "wb") as out:
        process = subprocess.Popen([sys.executable, "app.py", "--port", str(port), *args], cwd=REPO, env=env,
                                   stdout=out, stderr=subprocess.STDOUT)
    server = AppServer(f"http://{host}:{port}/", process, log, temp_dir)
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"app.py exited with {process.returncode}:\n{server.log_text()[-4000:]}")
        try:
            with urllib.request.urlopen(server.url, timeout=5) as r:
                if r.status == 200:
                    return server
        except OSError:
            time.sleep(0.5)
    stop_app(server)
    raise RuntimeError(f"app.py did not answer within {START_TIMEOUT_S} s:\n{server.log_text()[-4000:]}")


def stop_app(server: AppServer) -> None:
    server.process.terminate()
    try:
        server.process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        server.process.kill()
        server.process.wait()


CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = REPO / "tests" / "artifacts"       # screenshots (git-ignored)
# /classify's answer; /analyse adds the nearest training images (the HTTP API leaves them out)
CLASSIFY_KEYS = {"label", "probabilities", "in_distribution", "kind", "ood_score", "ood_threshold", "confidence"}
NEIGHBOUR_KEYS = {"neighbours", "class_distances", "metric"}
needs_chromium = pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian's chromium is not installed")
