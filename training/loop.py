"""The one training loop: `train_one_epoch` runs every epoch of every run, the base run over
Fashion-MNIST (photos mixed in, for a joint run; train.py) and the photo BatchNorm layers over
photos (Fashion-MNIST mixed in; adapt.py). What differs between them is where the batches come
from (`Batches`). Its pieces: the one-cycle schedule under a step count or a time budget
(`Clock`), the step, the EMA of the weights, and the per-epoch record (`record_epoch`).
"""
from __future__ import annotations

import copy
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from imaging.preprocess import normalize
from modelrepo import artefacts
from training.augment import augment, photo_like
from training.config import AugmentConfig, OptimConfig, Runtime, Schedule


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


class Clock:
    """Where a run is in its schedule: steps taken, and, under a time budget, wall time spent."""

    def __init__(self, schedule: Schedule, total_steps: int):
        self.schedule, self.total_steps, self.step = schedule, total_steps, 0
        self.t_start = time.perf_counter()

    def elapsed(self) -> float:
        return time.perf_counter() - self.t_start

    def progress(self) -> float:
        """Fraction of the schedule done: by steps, or by wall time under a budget if that is further.

        A time budget rather than an epoch count is what "train in under an hour on this machine"
        means; the learning rate still reaches 0 at the end, which an epoch cut-off would not give.
        """
        done = self.step / self.total_steps
        if self.schedule.budget_minutes:
            done = max(done, self.elapsed() / (self.schedule.budget_minutes * 60))
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


@dataclass
class Batches:
    """Where an epoch's batches come from: `looks` (N, 28, 28) in [0, 1] in a random order, with
    `targets` a class (N,) or a set of right classes (N, C) bool per look, and optionally a second
    pool `extra` (looks (P, 28, 28), right classes (P, C) bool) drawn at random for a `share` of
    each batch: added to it, or, with `in_place`, in place of that share of its looks."""
    looks: torch.Tensor
    targets: torch.Tensor
    norm: tuple = ()                    # (mean, std) of the network's input; () for normalize's defaults
    extra: tuple[torch.Tensor, torch.Tensor] | None = None
    share: float = 0.0
    in_place: bool = False

    def __len__(self) -> int:
        return len(self.looks)

    def draw(self, idx: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """Looks (B, 28, 28) and targets of the batch `idx`; sets (B, C) bool when a pool is mixed in."""
        looks, targets = self.looks[idx], self.targets[idx]
        if self.extra is None:
            return looks, targets
        pool, allowed = self.extra
        if targets.ndim == 1:
            targets = F.one_hot(targets, allowed.shape[1]).bool()
        if self.in_place:
            k = round(len(idx) * self.share)
            pick = torch.randint(0, len(pool), (k,), generator=gen)
            return torch.cat([looks[k:], pool[pick]]), torch.cat([targets[k:], allowed[pick]])
        # Added to the batch, not in place of its images: every epoch still sees all of `looks`.
        pick = torch.randint(0, len(pool), (max(1, round(len(idx) * self.share)),), generator=gen)
        return torch.cat([looks, pool[pick]]), torch.cat([targets, allowed[pick]])


def augmented(batches: Batches, idx, gen, aug: AugmentConfig, runtime: Runtime) -> tuple[torch.Tensor, torch.Tensor]:
    """The batch `idx` -> augmented normalised images (B, 1, 28, 28) on the device, and its targets."""
    looks, targets = batches.draw(idx, gen)
    background = float(normalize(0.0, *batches.norm))
    xb = augment(normalize(looks[:, None], *batches.norm).to(runtime.device), aug, gen, background)
    if aug.photo_aug:
        xb = photo_like(xb, aug.photo_aug, gen, background)
    if runtime.channels_last:
        xb = xb.contiguous(memory_format=torch.channels_last)
    return xb, targets.to(runtime.device)


@dataclass
class Recipe:
    """What one epoch needs to know besides the data: the optimiser's settings, the augmentation,
    the seed of its draws, the device."""
    optim: OptimConfig
    augment: AugmentConfig
    seed: int
    runtime: Runtime
    epochs: int = field(default=1)      # for the progress bar's "epoch i/n" only


def train_one_epoch(model: nn.Module, batches: Batches, optimizer: torch.optim.Optimizer, clock: Clock,
                    epoch: int, recipe: Recipe, ema: EMA | None = None) -> dict:
    """One pass over `batches` in random order, the learning rate set by `clock`; returns the epoch's log entry.

    `model` may be a DistributedDataParallel wrapper: each rank takes its own shard of the order,
    and the EMA follows the wrapped network."""
    from tqdm import tqdm
    rt, optim, schedule = recipe.runtime, recipe.optim, clock.schedule
    model.train()
    gen = torch.Generator().manual_seed(recipe.seed * 1000 + epoch)
    perm = torch.randperm(len(batches), generator=gen)
    perm = perm[rt.rank::rt.world]                          # each DDP rank takes its own shard
    n_batches = len(perm) // optim.batch_size or 1
    bar = tqdm(range(n_batches), desc=f"epoch {epoch}/{recipe.epochs}", disable=not rt.progress or rt.rank != 0,
               mininterval=1 if sys.stderr.isatty() else 20, file=sys.stderr)
    raw = model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model
    t0, seen, loss_sum, correct = time.perf_counter(), 0, 0.0, 0
    for i in bar:
        progress = clock.progress()
        if progress >= 1 and seen:
            break                                           # time budget spent: the schedule is at its end
        idx = perm[i * optim.batch_size:(i + 1) * optim.batch_size]
        xb, yb = augmented(batches, idx, gen, recipe.augment, rt)                  # (B, 1, 28, 28), targets
        if schedule.kind == "onecycle":
            for group in optimizer.param_groups:
                group["lr"] = lr_at(progress * clock.total_steps, clock.total_steps, optim.lr, schedule.warmup)
        loss, logits = train_step(model, xb, yb, optimizer, optim.label_smoothing, rt.amp)
        clock.step += 1
        if ema is not None:
            ema.update(raw, clock.step)
        seen += len(yb)
        loss_sum += loss.item() * len(yb)
        hit = yb.gather(1, logits.argmax(1, keepdim=True))[:, 0] if yb.ndim == 2 else logits.argmax(1) == yb
        correct += hit.sum().item()
        bar.set_postfix(loss=f"{loss_sum / seen:.4f}", img_s=f"{seen / (time.perf_counter() - t0):.0f}")
    seconds = time.perf_counter() - t0
    return {"epoch": epoch, "images": seen * rt.world, "train_loss": loss_sum / seen, "train_accuracy": correct / seen,
            "lr_end": optimizer.param_groups[0]["lr"], "seconds": seconds, "schedule_progress": clock.progress(),
            "images_per_s": seen * rt.world / seconds}


def record_epoch(history: list[dict], log: dict, clock: Clock, out: Path, runtime: Runtime) -> None:
    """Append the epoch's log (with the run's elapsed time), print it and write training_history.json (rank 0)."""
    log["elapsed_s"] = clock.elapsed()
    history.append(log)
    if runtime.rank == 0:
        print(json.dumps({k: round(v, 5) if isinstance(v, float) else v for k, v in log.items()}), flush=True)
        out.mkdir(parents=True, exist_ok=True)
        (out / artefacts.HISTORY).write_text(json.dumps(history, indent=2))


@dataclass
class RunResult:
    """What a training run hands on: the kept network (CPU, eval mode) and how it got there."""
    model: nn.Module
    history: list[dict]
    val_accuracy: float | None          # of the kept network; None without a validation split
    seconds: float
    trained: nn.Module | None = None    # the network as the last step left it
    wise: dict | None = None            # the WiSE-FT choice on validation, when several weights were tried
