"""The Hugging Face Hub side: the shared ids and tags, bounded downloads, the push, the model card.

Every Hub fact (dataset id, licence, tags) lives here and is imported by model.py, train.py and
space_config/. Downloads wait at most `timeout` seconds; pushes read the token from HF_TOKEN or the
saved login and never print it.

    >>> from hub import resolve_model_dir
    >>> folder = resolve_model_dir("<user>/fashion-mnist-cnn")   # a local folder is returned as is
"""
from __future__ import annotations

import os
import threading
from pathlib import Path

HUB_DATASET = "zalando-datasets/fashion_mnist"
LICENSE = "mit"
TAGS = ["fashion-mnist", "image-classification", "captum"]
# Keyword arguments of PyTorchModelHubMixin: the metadata of every saved model card.
MODEL_METADATA = dict(library_name="pytorch", license=LICENSE, pipeline_tag="image-classification", tags=TAGS)
# What a served model needs from its repo (the out-of-distribution detector when it has one), and
# what the dashboard shows when present.
MODEL_FILES = ("config.json", "model.safetensors", "ood.json", "ood.safetensors")
ARTEFACT_PATTERNS = ("training_history.json", "evaluation/*")
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


# ---------------------------------------------------------------------------------------------
# The model card (README.md of the model repo)
# ---------------------------------------------------------------------------------------------

def _card_metadata(metrics: dict) -> str:
    from huggingface_hub import EvalResult, ModelCardData

    def result(metric_type: str, value: float, name: str | None = None) -> EvalResult:
        return EvalResult(task_type="image-classification", dataset_type=HUB_DATASET, dataset_name="Fashion-MNIST",
                          dataset_split="test", metric_type=metric_type, metric_name=name,
                          metric_value=round(value, 4))

    data = ModelCardData(
        library_name=MODEL_METADATA["library_name"], license=LICENSE, datasets=[HUB_DATASET],
        pipeline_tag=MODEL_METADATA["pipeline_tag"], tags=[*TAGS, "pytorch_model_hub_mixin"],
        metrics=["accuracy", "f1"], model_name="fashion-mnist-cnn",
        eval_results=[result("accuracy", metrics["accuracy"]), result("f1", metrics["macro_f1"], "macro F1")])
    return data.to_yaml()


def model_card(config, parameters: int, metrics: dict, command: str, validation: str, temperature_note: str,
               train_seconds: float | None, start: str | None = None) -> str:
    """README.md of the model repo: Hub metadata (model-index with the test accuracy) and a short body.

    Args:
        config: the model's ModelConfig; parameters: its parameter count.
        metrics: evaluation/metrics.json as evaluate.py writes it.
        command: the command that trained it; validation: the validation line of the table;
        temperature_note: where the stored temperature came from.
        start: for a fine-tune, what it started from (the card must not call it trained from scratch).
    """
    lo, hi = metrics["accuracy_ci95"]
    rows = "\n".join(f"| {n} | {c['precision']:.3f} | {c['recall']:.3f} | {c['f1']:.3f} |"
                     for n, c in metrics["per_class"].items())
    timing = f"{train_seconds / 60:.1f} min on {metrics.get('hardware', 'this machine')}" if train_seconds else "n/a"
    origin = "trained from\nscratch with `train.py` of the project's repository"
    if start:
        origin = f"fine-tuned with\n`train.py` of the project's repository from {start}"
        timing += " of fine-tuning, after the starting weights' own training" if train_seconds else ""
    photos = metrics.get("photos")
    photo_row = (f"| Real phone photos (strict / coarse accuracy) | {photos['strict_accuracy']:.1%} / "
                 f"{photos['coarse_accuracy']:.1%} (n={photos['n']}) |\n" if photos else "")
    return f"""---
{_card_metadata(metrics)}
---
# Fashion-MNIST CNN ({parameters:,} parameters)

A small residual CNN for [Fashion-MNIST](https://huggingface.co/datasets/{HUB_DATASET}), {origin},
and the model behind its Gradio explainability dashboard.

| | |
|---|---|
| Test accuracy | **{metrics['accuracy']:.2%}** (95% CI {lo:.2%} to {hi:.2%}, n={metrics['n']:,}) |
| Validation accuracy (chosen checkpoint) | {validation} |
| Macro F1 | {metrics['macro_f1']:.4f} |
| Expected calibration error | {metrics['calibration']['ece']:.4f} (softmax temperature {config.temperature:g}, \
{temperature_note}) |
{photo_row}| Parameters | {parameters:,} |
| Flip test-time augmentation | {'yes' if metrics['tta'] else 'no'} |
| Training time | {timing} |

Trained with:

```bash
{command}
```

## Use

```python
from model import load_model            # model.py and preprocess.py from the project's repository
from preprocess import preprocess
model = load_model("<repo id or folder>")                          # config.json + model.safetensors only
probs = model.predict_proba(preprocess(image, model.config.mean, model.config.std)[None])   # (1, 10)
```

`FashionCNN.from_pretrained("<repo id>")` (`huggingface_hub`'s `PyTorchModelHubMixin`) goes through
the same checked loader. Inputs go through `preprocess`: grayscale, light garment on a dark
background (a photo's garment is segmented from its ground first), centred and scaled to 28x28 with
its aspect kept, normalised with mean {config.mean} and std {config.std}.

## Per-class results (test set)

| class | precision | recall | F1 |
|---|---|---|---|
{rows}

`evaluation/` holds metrics.json, the confusion matrix, the reliability diagram, the training curves,
and every misclassified test image (misclassified.npz: index, true, pred, confidence, 28x28 image).

## Limitations
Trained on 28x28 grayscale product photos of ten clothing classes. Anything else (a person wearing
clothes, a busy background, a different object) is still forced into one of the ten classes.
Shirt, T-shirt/top, Pullover and Coat are the classes it confuses most.
"""
