"""The Hugging Face Hub side: the shared ids and tags, bounded downloads, the push.

Every Hub fact (dataset id, licence, tags) lives here and is imported by train.py,
modelrepo/card.py (the model card) and space_config/. Downloads wait at most `timeout` seconds; pushes
read the token from HF_TOKEN or the saved login and never print it.

    >>> from modelrepo.hub import resolve_model_dir
    >>> folder = resolve_model_dir("<user>/fashion-mnist-cnn")   # a local folder is returned as is
"""
from __future__ import annotations

import hashlib
import os
import threading
from pathlib import Path

from model import CONFIG_FILE, WEIGHTS_FILE
from modelrepo.artefacts import BASE_HISTORY, HISTORY, NEIGHBOUR_FILES
from modelrepo.ood import DETECTOR_FILE, META_FILE
from modelrepo.verdict import DRAWING_FILES, VERDICT_FILES

HUB_DATASET = "zalando-datasets/fashion_mnist"
LICENSE = "mit"
TAGS = ["fashion-mnist", "image-classification", "captum"]
LIBRARY_NAME, PIPELINE_TAG = "pytorch", "image-classification"   # the model card's metadata
# What a served model needs from its repo (the out-of-distribution detector, the photo verdict and
# the nearest-training-images index when it has them), and what the dashboard shows when present.
MODEL_FILES = (CONFIG_FILE, WEIGHTS_FILE, META_FILE, DETECTOR_FILE, *VERDICT_FILES, *DRAWING_FILES, *NEIGHBOUR_FILES)
ARTEFACT_PATTERNS = (HISTORY, BASE_HISTORY, "evaluation/*")
DEFAULT_TIMEOUT_S = 20.0


class HubError(RuntimeError):
    """The Hub did not answer in time, or refused; one line for a person."""


def resolve_model_dir(source: str | os.PathLike, timeout: float = DEFAULT_TIMEOUT_S,
                      extra_patterns: tuple[str, ...] = ()) -> Path:
    """A local folder as is; otherwise a Hub repo id, downloaded (MODEL_FILES plus `extra_patterns`).

    Raises:
        HubError: the Hub did not answer in time, or refused (network, auth, unknown repo).
    """
    path = Path(source)
    if path.is_dir():
        return path
    return _bounded_snapshot(str(source), timeout, allow_patterns=[*MODEL_FILES, *extra_patterns])


def resolve_dataset_dir(source: str | os.PathLike = HUB_DATASET, timeout: float = DEFAULT_TIMEOUT_S) -> Path:
    """A local folder as is; otherwise a Hub dataset id, its parquet files downloaded: a folder in
    the Hub layout (<config>/<split>-*.parquet) that `datasets.load_dataset` reads as the id.

    Raises:
        HubError: the Hub did not answer in time, or refused (offline, network, unknown repo).
    """
    path = Path(source)
    if path.is_dir():
        return path
    return _bounded_snapshot(str(source), timeout, repo_type="dataset", allow_patterns=["*.parquet", "README.md"])


def local_cache_dir(dataset: str) -> str | None:
    """A cache folder of its own for a local dataset folder; None (the default cache) for a Hub id.

    datasets keys its cache of a local folder by the folder's name and layout, not its path or
    contents, so two folders named fashion_mnist (the test slice and the full set) would share one
    cache. Keying by the resolved path and the files' sizes and times keeps them apart.
    """
    from datasets import config
    folder = Path(dataset)
    if not folder.is_dir():
        return None
    stamp = [str(folder.resolve())] + [f"{p.relative_to(folder)}:{p.stat().st_size}:{p.stat().st_mtime_ns}"
                                       for p in sorted(folder.rglob("*")) if p.is_file()]
    key = hashlib.sha256("\n".join(stamp).encode()).hexdigest()[:16]
    return str(Path(config.HF_DATASETS_CACHE) / "local" / f"{folder.resolve().name}-{key}")


def open_split(dataset: str | Path, split: str):
    """One split of a Hub id or a local folder in the Hub layout, as a `datasets.Dataset`.

    Every read of a dataset goes through here, so that a local folder meets its own cache
    (`local_cache_dir`) and never the rows of another folder of the same name."""
    from datasets import load_dataset
    dataset = str(dataset)                          # datasets takes a string, not a Path
    return load_dataset(dataset, split=split, cache_dir=local_cache_dir(dataset))


def _bounded_snapshot(repo_id: str, timeout: float, **kwargs) -> Path:
    """snapshot_download, waiting at most `timeout` seconds.

    huggingface_hub reads its timeouts once, at import, and retries; a Hub that hangs or answers
    5xx could stall a caller for minutes. A daemon thread bounds the wait.
    """
    from huggingface_hub import snapshot_download
    result: dict = {}

    def fetch():
        try:
            result["folder"] = Path(snapshot_download(repo_id, **kwargs))
        except Exception as e:  # network, auth, missing repo: all end in one HubError below
            result["error"] = e

    worker = threading.Thread(target=fetch, name="hub-download", daemon=True)
    worker.start()
    worker.join(timeout)
    if worker.is_alive():
        raise HubError(f"the Hub did not answer within {timeout:.0f} s for {repo_id[:200]!r}")
    if "error" in result:
        e = result["error"]
        first = str(e).splitlines()[0] if str(e) else ""
        raise HubError(f"could not download {repo_id[:200]!r} from the Hub: {type(e).__name__}: {first}")
    return result["folder"]


class PushError(RuntimeError):
    """The upload did not happen; the message is one line for a person, without the token."""


def push_to_hub(folder: Path, repo_id: str, private: bool = False, api=None) -> str:
    """Upload `folder` as a Hub model repo. Token from HF_TOKEN or the saved login, never printed.

    Returns the commit URL. Raises PushError with one clear line; nothing local is touched.
    """
    from huggingface_hub import HfApi, get_token
    token = get_token()
    if not token:
        raise PushError("no Hugging Face token: set HF_TOKEN or run `hf auth login`, then push again")
    api = api or HfApi(token=token)
    try:
        api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
        info = api.upload_folder(folder_path=str(folder), repo_id=repo_id, repo_type="model",
                                 commit_message="Upload Fashion-MNIST CNN from train.py",
                                 ignore_patterns=[".cache/*", "*.tmp", ".env", "*.token"])
    except Exception as e:   # network down, refused, 4xx/5xx: one line, no traceback
        reason = str(e).splitlines()[0] if str(e) else ""
        raise PushError(f"upload of {folder} to {repo_id} failed ({type(e).__name__}: {reason})"
                        .replace(token, "***")) from None
    return str(getattr(info, "commit_url", info))
