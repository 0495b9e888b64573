"""What a trained model's folder (a Hub model repo) says about itself: the model card, and the
writing of the folder at the end of a training run.

train.py calls `save`; the weights and config.json come from model.save_model, the card from
`model_card`, which reads evaluation/metrics.json's figures and what the run's options say of the
model's origin (`Origin`: modelrepo sits below training/, so the card takes plain values, not the
run's configuration).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from modelrepo.hub import HUB_DATASET, LIBRARY_NAME, LICENSE, PIPELINE_TAG, TAGS
from model import count_parameters, save_model


@dataclass(frozen=True)
class Origin:
    """What the card says about where a model came from: the options of the run that made it
    (train.py builds it from its RunConfig)."""
    init_from: str | None             # the weights a fine-tune started from; None: trained from scratch
    photo_norms: bool                 # only photo BatchNorm layers were trained
    fmnist_share: float               # with photo_norms: the share of Fashion-MNIST images in each batch
    wise: tuple[float, ...]           # the WiSE-FT weights tried
    temperature: float                # the temperature given on the command line (0: none given)
    val_size: int                     # training images held out for validation (0: the final fit)
    photo_train: str | None           # phone photos were mixed into training
    photo_layers: tuple[str, ...] = ()  # with photo_norms: stages photos also have their own trained copy of


def temperature_source(temperature: float, val_size: int) -> str:
    """Where the stored temperature comes from; the training log and the model card both say it."""
    if temperature:
        return "set with --temperature"
    return "none fitted: no validation split" if val_size == 0 else "fitted on validation"


def start_note(origin: Origin, wise: dict | None = None) -> str | None:
    """What a fine-tune started from, as the model card says it; None for a network trained from scratch.

    `wise`: metrics.json's record of the averaging weight chosen on validation, when several were tried.
    """
    if not origin.init_from:
        return None
    if origin.photo_norms:
        mix = f" ({origin.fmnist_share:.0%} of each batch Fashion-MNIST images)" if origin.fmnist_share else ""
        copies = (f" and photos' own copy of {', '.join(origin.photo_layers)} (copied from the start)"
                  if origin.photo_layers else "")
        return (f"the weights in `{origin.init_from}`, of which only BatchNorm layers of its own for segmented photos"
                f"{copies} were trained, on segmented photos{mix}: every other input gets the start's answer")
    a = wise["chosen"]["wise"] if wise else origin.wise[0]
    tried = ", ".join(f"{w:g}" for w in origin.wise)
    how = f"; the weight chosen on validation among {tried}" if len(origin.wise) > 1 else ""
    averaged = f", then averaged with them ({1 - a:g} start + {a:g} fine-tuned, WiSE-FT{how})"
    return f"the weights in `{origin.init_from}`" + (averaged if a < 1 or how else "")


def save(out: Path, model, metrics: dict, origin: Origin, command: str, train_seconds: float | None) -> None:
    """config.json + model.safetensors, then the README.md model card."""
    save_model(model, out)
    (out / "README.md").write_text(card(model, metrics, origin, command, train_seconds))


def card(model, metrics: dict, origin: Origin, command: str, train_seconds: float | None) -> str:
    """The model card of a training run: `model_card` with what the run's options say.

    A shipped card can be written again from its metrics.json, whose "command" holds the options:
    `train.card_origin(train.parse_config(shlex.split(metrics["command"])[2:]))`.
    """
    val = metrics.get("val_accuracy")
    validation = f"{val:.2%}" if val is not None else "n/a"
    if origin.val_size == 0:
        validation = ("none held out: the recipe was chosen on validation, then retrained on all training images "
                      "(last epoch kept)")
    return model_card(model.config, served_parameters(model), metrics, command, validation,
                      temperature_source(origin.temperature, origin.val_size), train_seconds,
                      start_note(origin, metrics.get("wise")), photos_trained=bool(origin.photo_train),
                      stored=count_parameters(model))


def served_parameters(model) -> int:
    """Parameters one input meets: the network either path runs, without the photo copies that
    stand in for its layers (a photo meets as many, through for_photos())."""
    return sum(p.numel() for name, p in model.named_parameters() if not name.startswith("photo_"))


def _card_metadata(metrics: dict) -> str:
    from huggingface_hub import EvalResult, ModelCardData

    def result(metric_type: str, value: float, name: str | None = None) -> EvalResult:
        return EvalResult(task_type="image-classification", dataset_type=HUB_DATASET, dataset_name="Fashion-MNIST",
                          dataset_split="test", metric_type=metric_type, metric_name=name,
                          metric_value=round(value, 4))

    data = ModelCardData(
        library_name=LIBRARY_NAME, license=LICENSE, datasets=[HUB_DATASET],
        pipeline_tag=PIPELINE_TAG, tags=TAGS,
        metrics=["accuracy", "f1"], model_name="fashion-mnist-cnn",
        eval_results=[result("accuracy", metrics["accuracy"]), result("f1", metrics["macro_f1"], "macro F1")])
    return data.to_yaml()


def model_card(config, parameters: int, metrics: dict, command: str, validation: str, temperature_note: str,
               train_seconds: float | None, start: str | None = None, photos_trained: bool = False,
               stored: int | None = None) -> str:
    """README.md of the model repo: Hub metadata (model-index with the test accuracy) and a short body.

    Args:
        config: the model's ModelConfig; parameters: the parameters one input meets (served_parameters).
        metrics: evaluation/metrics.json as evaluate.py writes it.
        command: the command that trained it; validation: the validation line of the table;
        temperature_note: where the stored temperature came from.
        start: for a fine-tune, what it started from (the card must not call it trained from scratch).
        photos_trained: phone photos were mixed into the training batches (train.py --photo-train).
        stored: the parameters model.safetensors holds, photo layers included (default: `parameters`).
    """
    lo, hi = metrics["accuracy_ci95"]
    rows = "\n".join(f"| {n} | {c['precision']:.3f} | {c['recall']:.3f} | {c['f1']:.3f} |"
                     for n, c in metrics["per_class"].items())
    timing = f"{train_seconds / 60:.1f} min on {metrics.get('hardware', 'this machine')}" if train_seconds else "n/a"
    origin = "trained from\nscratch with `train.py` of the project's repository"
    if start:
        origin = f"fine-tuned with\n`train.py` of the project's repository from {start}"
        timing += " of fine-tuning, after the starting weights' own training" if train_seconds else ""
    confused = sorted(metrics["per_class"], key=lambda n: metrics["per_class"][n]["f1"])[:4]
    trained_on = "28x28 grayscale product photos of ten clothing classes (Fashion-MNIST)" + (
        ", and on segmented phone photos of garments of those classes" if photos_trained else "")
    photos = metrics.get("photos")
    photo_row = (f"| Real phone photos (strict / coarse accuracy) | {photos['strict_accuracy']:.1%} / "
                 f"{photos['coarse_accuracy']:.1%} (n={photos['n']}) |\n" if photos else "")
    copies = f" and their own copy of {', '.join(config.photo_layers)} (`config.photo_layers`)" if config.photo_layers else ""
    photo_note = (f"Segmented photos are answered with BatchNorm layers of their own (`config.photo_norms`){copies}; "
                  "every other input, the Fashion-MNIST test set included, with the network's own."
                  if config.photo_norms else "")
    stored = parameters if stored is None else stored
    parameter_row = (f"{parameters:,} per input; {stored:,} stored (the photo layers stand in for the network's "
                     "own on photos)" if stored != parameters else f"{parameters:,}")
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
{photo_row}| Parameters | {parameter_row} |
| Flip test-time augmentation | {'yes' if metrics['tta'] else 'no'} |
| Training time | {timing} |

Trained with:

```bash
{command}
```

## Use

```python
from huggingface_hub import snapshot_download
from model import load_model            # model.py and imaging/ from the project's repository
from imaging.preprocess import look_and_mask, normalize
model = load_model(snapshot_download("<repo id>"))                 # config.json + model.safetensors only
seen = look_and_mask(image)                      # the 28x28 look, and whether it was segmented from a photo
network = model.for_photos() if seen.photo else model             # photos meet their own BatchNorm
probs = network.predict_proba(normalize(seen.look, model.config.mean, model.config.std)[None, None])  # (1, 10)
```

`modelrepo.folder.open_model("<repo id>")` does the same and adds the out-of-distribution detector.
Inputs go through `look_and_mask`: grayscale, light garment on a dark
background (a photo's garment is segmented from its ground first), centred and scaled to 28x28 with
its aspect kept, normalised with mean {config.mean} and std {config.std}. {photo_note}

## Per-class results (test set)

| class | precision | recall | F1 |
|---|---|---|---|
{rows}

`evaluation/` holds metrics.json, the confusion matrix, the reliability diagram, the training curves,
and every misclassified test image (misclassified.npz: index, true, pred, confidence, 28x28 image).

## Limitations
Trained on {trained_on}.
The network answers one of the ten classes for any input: a person wearing clothes, a busy
background, a different object. The project's out-of-distribution detector
(`ood.json` and `ood.safetensors` beside the weights, fitted by `train.py --fit-ood`; `open_model`
reads it as `opened.detector`) flags inputs unlike the training images. The app judges photos and
drawings with detectors of their own, beside the weights once `python -m training.fit_verdict` has
fitted them (`verdict.json` and `verdict.safetensors`, `verdict_drawing.json` and
`verdict_drawing.safetensors`): the photo detector's Gaussians are of the photo network's features
and of what the segmented region is made of (colour, grain, highlights) of garment photos of the photo
set's train split and of Fashion-MNIST train garments dressed as shop uploads, and, as its background,
of images of other things (`verdict.json` names their sources, versions and licences).
The classes with the lowest F1 on the
test set: {", ".join(confused)}.
"""
