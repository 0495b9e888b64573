"""Adapting a trained network to photos: its own BatchNorm for photos, and WiSE-FT averaging.

Photo BatchNorm: a trained network learns BatchNorm layers of its own for segmented phone photos.
Only those layers train, on photos (and, with --fmnist-share, Fashion-MNIST images standing for the
product shots that take the photo path too); the convolutions, the classifier and the network's own
BatchNorm stay the start's. So every input that does not go through the photo segmentation (every
Fashion-MNIST image, drawings, anything already light on black) gets exactly the start's answer,
and photos are answered by the same network with their own statistics (`FashionCNN.for_photos`).
With `--photo-layers`, photos also get their own trained copy of whole stages (config.photo_layers),
a photo branch with more capacity; the network every other input meets is still the start's, tensor
for tensor. train.py runs this for `--photo-norms`, through the base run's epoch loop
(training/loop.py) with batches of photos.

WiSE-FT (`weight_average`, `choose_wise`): after a fine-tune of the whole network, its weights
averaged with the start's (train.py --wise).
"""
from __future__ import annotations

import copy
from dataclasses import replace

import torch
from torch import nn

from model import FashionCNN, config_dict, load_model
from training.config import DataConfig, RunConfig, Runtime
from training.data import PHOTO_FIT, PHOTO_SELECTION, load_images, load_photo_looks, split_train_val
from training.evaluate import meets_photo_bars, predict_probs, strict_by_folder, strict_hits
from training.loop import Batches, Clock, Recipe, RunResult, record_epoch, train_one_epoch


def with_photo_norms(start: FashionCNN, layers: tuple[str, ...] = ()) -> FashionCNN:
    """`start` with photo BatchNorm layers added, each a copy of the layer it stands in for, and
    photo copies of the stages named in `layers` (FashionCNN.forward_children), each a copy of its stage."""
    model = FashionCNN(**(config_dict(start) | {"photo_norms": True, "photo_layers": list(layers)}))
    model.load_state_dict(start.state_dict(), strict=False)
    for bn, photo in zip(model.norms(), model.photo_norms):
        photo.load_state_dict(bn.state_dict())
    for child in layers:
        getattr(model, f"photo_{child}").load_state_dict(getattr(model, child).state_dict())
    return model


def photo_branch_parameters(view: FashionCNN, layers: tuple[str, ...]) -> list[torch.nn.Parameter]:
    """What photo training moves in `view` (a for_photos() copy): every BatchNorm's scale and shift,
    and every parameter of the stages in `layers`; everything else is frozen."""
    tuned = {id(p): p for bn in view.norms() for p in bn.parameters()}
    tuned |= {id(p): p for child in layers for p in getattr(view, child).parameters()}
    for p in view.parameters():
        p.requires_grad_(id(p) in tuned)
    return list(tuned.values())


def save_photo_branch(model: FashionCNN, view: FashionCNN) -> FashionCNN:
    """Copy the trained photo branch of `view` (a for_photos() copy) back into `model`'s photo layers."""
    for photo, bn in zip(model.photo_norms, view.norms()):
        photo.load_state_dict(bn.state_dict())
    for child in model.config.photo_layers:
        getattr(model, f"photo_{child}").load_state_dict(getattr(view, child).state_dict())
    return model


def fmnist_share_of(data: DataConfig, num_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Fashion-MNIST training looks (N, 28, 28) and their classes as sets (N, C) bool, the validation
    split left out: the photo path also meets product shots on a plain ground, which segment to
    nearly the Fashion-MNIST look, so the photo BatchNorm sees those too (--fmnist-share)."""
    looks, labels = load_images(data.dataset, "train")[:2]
    train_idx, _ = split_train_val(len(looks), data.val_size, data.seed)
    return looks[train_idx], torch.nn.functional.one_hot(labels[train_idx], num_classes).bool()


def photo_batches(model: FashionCNN, data: DataConfig) -> Batches:
    """The photo-norm batches: segmented photos of the `fit` part of data.photo_train's train split
    (the photo protocol, docs/decision_log.md: its `selection` part is held out for choices), with
    data.fmnist_share of each batch Fashion-MNIST training images in their place."""
    looks, allowed, folders = load_photo_looks(data.photo_train, PHOTO_FIT)
    if data.photo_balance:
        keep = balanced_indices(folders)
        looks, allowed = looks[keep], allowed[keep]
    fmnist = fmnist_share_of(data, allowed.shape[1]) if data.fmnist_share else None
    return Batches(looks, allowed, norm=(model.config.mean, model.config.std), extra=fmnist,
                   share=data.fmnist_share, in_place=True)


def photo_protocol(cfg: RunConfig) -> dict:
    """What metrics.json records of a photo-branch run's data (the photo protocol, docs/decision_log.md)."""
    if not cfg.model.photo_norms:
        return {}
    return {"photo_trained_on": PHOTO_FIT, "photo_scored_each_epoch_on": PHOTO_SELECTION,
            "photo_layers": list(cfg.model.photo_layers), "photo_balance": cfg.data.photo_balance}


def balanced_indices(folders: list[str]) -> torch.Tensor:
    """Indices into `folders` with each folder's photos repeated round(largest / its count) times, so
    that every folder is drawn about as often as the largest (--photo-balance): the per-folder bar
    is judged on the smallest folders (outwear), which the photo set's proportions leave rare."""
    by_folder: dict[str, list[int]] = {}
    for i, name in enumerate(folders):
        by_folder.setdefault(name, []).append(i)
    largest = max((len(v) for v in by_folder.values()), default=0)
    return torch.tensor([i for idx in by_folder.values() for i in idx * round(largest / len(idx))], dtype=torch.long)


def train_photo_norms(cfg: RunConfig, runtime: Runtime) -> RunResult:
    """Train the photo branch of cfg.model.init_from on the `fit` photos of cfg.data.photo_train.

    The base run's epoch loop and schedule (one-cycle, --budget-minutes), SGD on the photo
    BatchNorm scales and shifts (no weight decay: nothing to shrink but the layers' own scales) and
    on the photo copies of cfg.model.photo_layers (weight decay on their weights), no EMA. Returns no
    validation accuracy (the Fashion-MNIST answers are the start's); the last epoch is kept.
    """
    if runtime.world > 1:
        raise ValueError("--photo-norms needs a single process: it has no data-parallel path")
    model = with_photo_norms(load_model(cfg.model.init_from), cfg.model.photo_layers)
    batches = photo_batches(model, cfg.data)
    photo_val = load_photo_looks(cfg.data.photos, "validation") if cfg.data.photos else None
    photo_sel = load_photo_looks(cfg.data.photo_train, PHOTO_SELECTION)    # where candidates are judged
    torch.manual_seed(cfg.data.seed)
    view = model.for_photos().to(runtime.device)
    tuned = photo_branch_parameters(view, model.config.photo_layers)
    optim = cfg.optim
    # Decay on the copied stages' weights only: BatchNorm scales and shifts, and biases, have nothing to shrink.
    groups = [{"params": [p for p in tuned if p.ndim > 1], "weight_decay": optim.weight_decay},
              {"params": [p for p in tuned if p.ndim <= 1], "weight_decay": 0.0}]
    groups = [g for g in groups if g["params"]]
    optimizer = torch.optim.SGD(groups, lr=optim.lr, momentum=optim.momentum, nesterov=optim.momentum > 0)
    # Always one-cycle, and in the memory layout the layers were built in: the photo-norm recipe.
    schedule = replace(cfg.schedule, kind="onecycle")
    recipe = Recipe(optim, cfg.augment, cfg.data.seed, replace(runtime, channels_last=False), schedule.epochs)
    clock = Clock(schedule, max(1, len(batches) // optim.batch_size) * schedule.epochs)
    history = []
    for epoch in range(1, schedule.epochs + 1):
        log = train_one_epoch(view, batches, optimizer, clock, epoch, recipe)
        if photo_val is not None:   # reported, not chosen on: the last epoch is kept
            log["photo_val_strict"] = strict_hits(view.eval(), *photo_val[:2])[1].float().mean().item()
        if len(photo_sel[0]):       # the selection part: reported each epoch, for choices between runs
            log["photo_selection_strict"] = strict_hits(view.eval(), *photo_sel[:2])[1].float().mean().item()
        record_epoch(history, log, clock, cfg.output.out, runtime)
        if log["schedule_progress"] >= 1:
            break
    save_photo_branch(model, view.cpu())
    return RunResult(model.eval(), history, None, clock.elapsed(), trained=model)


def weight_average(start: nn.Module, tuned: nn.Module, a: float) -> nn.Module:
    """`tuned` with every float tensor (BatchNorm statistics included) set to (1 - a) * start + a * tuned.

    WiSE-FT (Wortsman et al., "Robust fine-tuning of zero-shot models", CVPR 2022): a fine-tune that
    starts from a trained network stays in its basin, so the average of the two keeps much of the
    start's accuracy on its own data while keeping much of what the fine-tune learned.
    """
    begin, end = start.state_dict(), tuned.state_dict()
    tuned.load_state_dict({k: torch.lerp(begin[k].to(v), v, a) if v.is_floating_point() else v for k, v in end.items()})
    return tuned


def choose_wise(start: nn.Module, tuned: nn.Module, weights: list[float], xv: torch.Tensor, yv: torch.Tensor,
                photo_val=None) -> tuple[nn.Module, dict]:
    """The WiSE-FT average for each weight, scored on validation; returns the chosen one and the table.

    The choice: among the weights whose average meets #18's bars on photo validation (when photos are
    given), the highest Fashion-MNIST validation accuracy, ties to the higher photo accuracy; if none
    meets them, the highest photo accuracy. The bars come first because the fine-tune exists for photos;
    among those that serve photos well enough, Fashion-MNIST accuracy decides.
    """
    rows, models = [], {}
    for a in weights:
        models[a] = weight_average(start, copy.deepcopy(tuned), a)
        row = {"wise": a}
        if len(xv):
            row["val_accuracy"] = (predict_probs(models[a], xv).argmax(1) == yv).float().mean().item()
        if photo_val is not None:
            looks, allowed, folders = photo_val
            strict = strict_hits(models[a], looks, allowed)[1]
            row |= {"photo_val_strict": strict.float().mean().item(), "photo_val_per_folder": strict_by_folder(strict, folders)}
            row["meets_photo_bars"] = meets_photo_bars(row["photo_val_strict"], row["photo_val_per_folder"])
        rows.append(row)
    if len(weights) == 1:
        chosen = rows[0]
    elif photo_val is not None and not any(r["meets_photo_bars"] for r in rows):
        chosen = max(rows, key=lambda r: r["photo_val_strict"])
    else:
        passing = [r for r in rows if r.get("meets_photo_bars", True)]
        chosen = max(passing, key=lambda r: (r["val_accuracy"], r.get("photo_val_strict", 0.0)))
    return models[chosen["wise"]], {"chosen": chosen, "candidates": rows}
