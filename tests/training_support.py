"""What the training tests share: the shipped slice, train.py run as a user runs it, a real trained
folder, a photo folder of the committed example photos, and the recording stand-in for the Hub's
upload calls (the only stand-in: the Hub cannot be reached here)."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SLICE = str(ROOT / "tests/data/fashion_mnist")
FAKE_TOKEN = "hf_FAKEtokenForTests0123456789abcdef"
EXPECTED = ["README.md", "config.json", "model.safetensors", "training_history.json",
            "evaluation/metrics.json", "evaluation/confusion_matrix.png", "evaluation/reliability.png",
            "evaluation/training_curves.png", "evaluation/misclassified.npz", "evaluation/samples.npz",
            "evaluation/trust.json"]


def run_cli(*args, env=None, check=True) -> subprocess.CompletedProcess:
    env = {**os.environ, **(env or {})}
    proc = subprocess.run([sys.executable, "train.py", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=600)
    if check:
        assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def offline_env(tmp: Path) -> dict:
    """No token, no saved login, no reachable Hub."""
    env = {"HF_HOME": str(tmp / "hf_home"), "HF_HUB_CACHE": str(tmp / "hub"), "HF_ENDPOINT": "http://127.0.0.1:9"}
    os.environ.pop("HF_TOKEN", None)
    return env


TRAINED_EPOCHS = 3


def train_slice(out: Path) -> subprocess.CompletedProcess:
    """A real (tiny) model folder: TRAINED_EPOCHS epochs of the shipped recipe on the slice, seed 1."""
    return run_cli("--dataset", SLICE, "--epochs", str(TRAINED_EPOCHS), "--val-size", "100", "--batch-size", "64",
                   "--out", str(out), "--seed", "1", "--no-progress", "--trust-images", "2",
                   env=offline_env(out.parent) | {"HF_TOKEN": ""})


def photo_folder_at(root: Path) -> Path:
    """A clothing_photos layout (<split>/<folder>/*.jpg) of the committed example photos, each
    in both splits: one in each of the seven mapped folders, and a hat, which has no class."""
    for path in sorted((ROOT / "examples" / "photos").glob("*.jpg")):
        folder = path.stem.split("-", 1)[1]
        for split in ("train", "validation"):
            (root / split / folder).mkdir(parents=True, exist_ok=True)
            shutil.copy(path, root / split / folder / path.name)
    return root


class RecordingApi:
    """Stand-in for the upload calls only (the Hub cannot be reached here): records what would go up,
    selecting files with huggingface_hub's own pattern filter, as upload_folder does."""

    def __init__(self):
        self.calls, self.files = [], []

    def create_repo(self, repo_id, **kw):
        self.calls.append(("create_repo", repo_id, kw))

    def upload_folder(self, folder_path, repo_id, ignore_patterns=None, **kw):
        from huggingface_hub.utils import filter_repo_objects
        paths = [str(p.relative_to(folder_path)) for p in Path(folder_path).rglob("*") if p.is_file()]
        self.files = sorted(filter_repo_objects(paths, ignore_patterns=ignore_patterns))
        self.calls.append(("upload_folder", repo_id, kw))
        return "https://huggingface.co/someone/fashion-cnn/commit/abc"
