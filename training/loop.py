"""The training loop shared by every run: one epoch over Fashion-MNIST (with photos mixed in, for a
joint run) and its pieces: the one-cycle schedule under a step count or a time budget, the step,
the EMA of the weights.
"""
from __future__ import annotations

import copy
import sys
import time

import torch
import torch.nn.functional as F
from torch import nn

from imaging.preprocess import normalize
from training.augment import augment, photo_like


class EMA:
    """Exponential moving average of the weights (and BatchNorm buffers).

    The decay ramps up as (1 + step) / (10 + step) until it reaches `decay`, so the first steps,
    whose weights are still random, are forgotten quickly (the schedule of TensorFlow's
    ExponentialMovingAverage with num_updates).
    """

    def __init__(self, model: nn.Module, decay: float):
        self.module = copy.deepcopy(model).eval().requires_grad_(False)
        self.decay = decay

    @torch.no_grad()
    def update(self, model: nn.Module, step: int) -> None:
        d = min(self.decay, (1 + step) / (10 + step))   # early steps: follow the model closely
        ema, cur = self.module.state_dict(), model.state_dict()
        floats = [k for k, v in ema.items() if v.is_floating_point()]
        torch._foreach_lerp_([ema[k] for k in floats], [cur[k] for k in floats], 1 - d)
        for k, v in ema.items():
            if not v.is_floating_point():
                v.copy_(cur[k])


def lr_at(step: int, total: int, peak: float, warmup: float) -> float:
    """Linear warm-up to `peak` over `warmup` of the steps, then linear decay to 0 (one-cycle)."""
    w = max(1, int(total * warmup))
    return peak * step / w if step < w else peak * max(0.0, (total - step) / max(1, total - w))


def schedule_progress(step: int, total_steps: int, args, ctx) -> float:
    """Fraction of the schedule done: by steps, or by wall time under --budget-minutes if that is further.

    A time budget rather than an epoch count is what "train in under an hour on this machine"
    means; the learning rate still reaches 0 at the end, which an epoch cut-off would not give.
    """
    done = step / total_steps
    if args.budget_minutes:
        done = max(done, (time.perf_counter() - ctx["t_start"]) / (args.budget_minutes * 60))
    return min(1.0, done)


def set_cross_entropy(logits: torch.Tensor, allowed: torch.Tensor, label_smoothing: float) -> torch.Tensor:
    """Cross-entropy against a set of right classes per image, (B, C) bool: -log of their total
    probability. With one class per row it is F.cross_entropy with the same label smoothing."""
    log_p = logits.float().log_softmax(-1)
    set_nll = -log_p.masked_fill(~allowed, float("-inf")).logsumexp(-1)
    return ((1 - label_smoothing) * set_nll - label_smoothing * log_p.mean(-1)).mean()


def train_step(model: nn.Module, xb: torch.Tensor, yb: torch.Tensor, optimizer: torch.optim.Optimizer,
               label_smoothing: float, amp: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """One optimisation step (bf16 autocast when `amp`); returns the loss and the logits.

    `yb` is a class per image (B,), or a set of right classes per image (B, C) bool.
    """
    with torch.autocast(xb.device.type, dtype=torch.bfloat16, enabled=amp):
        logits = model(xb)
        loss = (F.cross_entropy(logits, yb, label_smoothing=label_smoothing) if yb.ndim == 1
                else set_cross_entropy(logits, yb, label_smoothing))
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss, logits


def batch(x, y, idx, photos, args, gen, ctx) -> tuple[torch.Tensor, torch.Tensor]:
    """Looks x[idx] (and, with `photos`, a share of segmented photos) -> augmented normalised
    images and targets: classes (B,), or sets of right classes (B, C) when photos are mixed in."""
    raw = ctx["raw_model"]
    norm = (raw.config.mean, raw.config.std) if hasattr(raw, "config") else ()
    looks, targets = x[idx], y[idx]
    if photos is not None:
        photo_looks, allowed = photos
        # Added to the batch, not in place of its images: every epoch still sees all of Fashion-MNIST.
        pick = torch.randint(0, len(photo_looks), (max(1, round(len(idx) * args.photo_share)),), generator=gen)
        looks = torch.cat([looks, photo_looks[pick]])
        targets = torch.cat([F.one_hot(targets, allowed.shape[1]).bool(), allowed[pick]])
    background = float(normalize(0.0, *norm))
    xb = augment(normalize(looks[:, None], *norm).to(ctx["device"]), args, gen, background)
    if args.photo_aug:
        xb = photo_like(xb, args.photo_aug, gen, background)
    return xb, targets.to(ctx["device"])


def train_one_epoch(model, ema, x, y, optimizer, args, epoch, step, total_steps, ctx,
                    photos=None) -> tuple[dict, int]:
    """One pass over (x, y) in random order; returns the epoch's log entry and the global step.

    `photos`: (looks (P, 28, 28), right classes (P, C) bool) mixed into every batch."""
    from tqdm import tqdm
    model.train()
    gen = torch.Generator().manual_seed(args.seed * 1000 + epoch)
    perm = torch.randperm(len(x), generator=gen)
    perm = perm[ctx["rank"]::ctx["world"]]                  # each DDP rank takes its own shard
    n_batches = len(perm) // args.batch_size or 1
    bar = tqdm(range(n_batches), desc=f"epoch {epoch}/{args.epochs}", disable=args.no_progress or ctx["rank"] != 0,
               mininterval=1 if sys.stderr.isatty() else 20, file=sys.stderr)
    t0, seen, loss_sum, correct = time.perf_counter(), 0, 0.0, 0
    for i in bar:
        progress = schedule_progress(step, total_steps, args, ctx)
        if progress >= 1 and seen:
            break                                           # time budget spent: the schedule is at its end
        idx = perm[i * args.batch_size:(i + 1) * args.batch_size]
        xb, yb = batch(x, y, idx, photos, args, gen, ctx)                          # (B, 1, 28, 28), targets
        if args.channels_last:
            xb = xb.contiguous(memory_format=torch.channels_last)
        if args.schedule == "onecycle":
            for group in optimizer.param_groups:
                group["lr"] = lr_at(progress * total_steps, total_steps, args.lr, args.warmup)
        loss, logits = train_step(model, xb, yb, optimizer, args.label_smoothing, ctx["amp"])
        step += 1
        if ema is not None:
            ema.update(ctx["raw_model"], step)
        seen += len(yb)
        loss_sum += loss.item() * len(yb)
        hit = yb.gather(1, logits.argmax(1, keepdim=True))[:, 0] if yb.ndim == 2 else logits.argmax(1) == yb
        correct += hit.sum().item()
        bar.set_postfix(loss=f"{loss_sum / seen:.4f}", img_s=f"{seen / (time.perf_counter() - t0):.0f}")
    seconds = time.perf_counter() - t0
    return {"epoch": epoch, "images": seen * ctx["world"], "train_loss": loss_sum / seen, "train_accuracy": correct / seen,
            "lr_end": optimizer.param_groups[0]["lr"], "seconds": seconds,
            "schedule_progress": schedule_progress(step, total_steps, args, ctx),
            "images_per_s": seen * ctx["world"] / seconds}, step
