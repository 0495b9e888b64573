"""Adapting a trained network to photos: its own BatchNorm for photos, and WiSE-FT averaging.

Photo BatchNorm: a trained network learns BatchNorm layers of its own for segmented phone photos.
Only those layers train, on photos (and, with --fmnist-share, Fashion-MNIST images standing for the
product shots that take the photo path too); the convolutions, the classifier and the network's own
BatchNorm stay the start's. So every input that does not go through the photo segmentation (every
Fashion-MNIST image, drawings, anything already light on black) gets exactly the start's answer,
and photos are answered by the same network with their own statistics (`FashionCNN.for_photos`).
train.py runs this for `--photo-norms`.

WiSE-FT (`weight_average`, `choose_wise`): after a fine-tune of the whole network, its weights
averaged with the start's (train.py --wise).
"""
from __future__ import annotations

import copy
import json
import time

import torch
from torch import nn

from training.augment import augment, photo_like
from training.loop import lr_at, schedule_progress, train_step
from training.data import load_images, load_photo_looks, split_train_val
from training.evaluate import meets_photo_bars, predict_probs, strict_by_folder, strict_hits
from model import FashionCNN, config_dict, load_model
from imaging.preprocess import normalize


def with_photo_norms(start: FashionCNN) -> FashionCNN:
    """`start` with photo BatchNorm layers added, each a copy of the layer it stands in for."""
    model = FashionCNN(**(config_dict(start) | {"photo_norms": True}))
    model.load_state_dict(start.state_dict(), strict=False)
    for bn, photo in zip(model.norms(), model.photo_norms):
        photo.load_state_dict(bn.state_dict())
    return model


def fmnist_share_of(args, num_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Fashion-MNIST training looks (N, 28, 28) and their classes as sets (N, C) bool, the validation
    split left out: the photo path also meets product shots on a plain ground, which segment to
    nearly the Fashion-MNIST look, so the photo BatchNorm sees those too (--fmnist-share)."""
    looks, labels = load_images(args.dataset, "train")[:2]
    train_idx, _ = split_train_val(len(looks), args.val_size, args.seed)
    return looks[train_idx], torch.nn.functional.one_hot(labels[train_idx], num_classes).bool()


def train_photo_norms(args, ctx) -> tuple[FashionCNN, list[dict], None, float]:
    """Train the photo BatchNorm layers of args.init_from on args.photo_train's photos.

    Same schedule as train.py (one-cycle, --budget-minutes), SGD on the BatchNorm scales and
    shifts only, no weight decay (there is nothing to shrink but the layers' own scales).
    Returns train.train's tuple: the model (CPU, eval), history, no validation accuracy (the
    Fashion-MNIST answers are the start's), seconds.
    """
    model = with_photo_norms(load_model(args.init_from))
    looks, allowed, _ = load_photo_looks(args.photo_train, "train")
    fmnist = fmnist_share_of(args, allowed.shape[1]) if args.fmnist_share else None
    photo_val = load_photo_looks(args.photos, "validation") if args.photos else None
    torch.manual_seed(args.seed)
    view = model.for_photos().to(ctx["device"])
    tuned = [p for bn in view.norms() for p in bn.parameters()]
    for p in view.parameters():
        p.requires_grad_(False)
    for p in tuned:
        p.requires_grad_(True)
    optimizer = torch.optim.SGD(tuned, lr=args.lr, momentum=args.momentum, nesterov=args.momentum > 0)
    norm = (model.config.mean, model.config.std)
    background = float(normalize(0.0, *norm))
    steps_per_epoch = max(1, len(looks) // args.batch_size)
    total = steps_per_epoch * args.epochs
    history, step, ctx["t_start"] = [], 0, time.perf_counter()
    for epoch in range(1, args.epochs + 1):
        view.train()
        gen = torch.Generator().manual_seed(args.seed * 1000 + epoch)
        perm, t0, seen, loss_sum, correct = torch.randperm(len(looks), generator=gen), time.perf_counter(), 0, 0.0, 0
        for i in range(steps_per_epoch):
            progress = schedule_progress(step, total, args, ctx)
            if progress >= 1 and seen:
                break
            idx = perm[i * args.batch_size:(i + 1) * args.batch_size]
            batch_looks, yb = looks[idx], allowed[idx]
            if fmnist is not None:      # that share of the batch: Fashion-MNIST images in place of photos
                k = round(len(idx) * args.fmnist_share)
                pick = torch.randint(0, len(fmnist[0]), (k,), generator=gen)
                batch_looks, yb = torch.cat([batch_looks[k:], fmnist[0][pick]]), torch.cat([yb[k:], fmnist[1][pick]])
            xb = augment(normalize(batch_looks[:, None], *norm).to(ctx["device"]), args, gen, background)
            xb = photo_like(xb, args.photo_aug, gen, background) if args.photo_aug else xb
            yb = yb.to(ctx["device"])
            for group in optimizer.param_groups:
                group["lr"] = lr_at(progress * total, total, args.lr, args.warmup)
            loss, logits = train_step(view, xb, yb, optimizer, args.label_smoothing, ctx["amp"])
            step, seen = step + 1, seen + len(idx)
            loss_sum += loss.item() * len(idx)
            correct += yb.gather(1, logits.argmax(1, keepdim=True)).sum().item()
        seconds = time.perf_counter() - t0
        log = {"epoch": epoch, "images": seen, "train_loss": loss_sum / seen, "train_accuracy": correct / seen,
               "lr_end": optimizer.param_groups[0]["lr"], "seconds": seconds,
               "schedule_progress": schedule_progress(step, total, args, ctx), "images_per_s": seen / seconds}
        if photo_val is not None:   # reported, not chosen on: the last epoch is kept
            log["photo_val_strict"] = strict_hits(view.eval(), *photo_val[:2])[1].float().mean().item()
        log["elapsed_s"] = time.perf_counter() - ctx["t_start"]
        history.append(log)
        print(json.dumps({k: round(v, 5) if isinstance(v, float) else v for k, v in log.items()}), flush=True)
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "training_history.json").write_text(json.dumps(history, indent=2))
        if log["schedule_progress"] >= 1:
            break
    for photo, bn in zip(model.photo_norms, view.cpu().norms()):
        photo.load_state_dict(bn.state_dict())
    return model.eval(), history, None, time.perf_counter() - ctx["t_start"]


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
