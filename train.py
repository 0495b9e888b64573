"""Train and evaluate the Fashion-MNIST classifier; write a complete Hub model repo; push it.

Every choice (epochs, learning rate, checkpoint) is made on a validation split held out from the
training set; the test set is evaluated once, at the end, for the report. `--val-size 0` is the
second step of that protocol: the recipe chosen on validation, retrained on every training image,
keeping its last epoch and the temperature fitted by the validation run (`--temperature`).

    python train.py --out runs/val --epochs 200 --budget-minutes 57   # the shipped recipe, step 1: on validation
    python train.py --out weights --epochs 200 --budget-minutes 57 --val-size 0 --temperature <T of step 1>  # step 2
    python train.py --out weights                                  # the same recipe, 30 epochs by count
    python train.py --dataset tests/data/fashion_mnist --epochs 1 --val-size 100 --out /tmp/smoke   # seconds
    python train.py --eval-only --model weights --dataset ../shared/data/fashion_mnist
    python train.py --out weights --push-to-hub <user>/fashion-mnist-cnn
    torchrun --nproc_per_node 4 train.py --device cuda --out weights-gpu   # several GPUs (DDP)

The output folder is a Hub model repo: model.safetensors, config.json, README.md (the model card),
training_history.json and evaluation/ (metrics.json, plots, misclassified.npz, samples.npz, and
trust.json: the faithfulness and sanity checks of every explanation method, from explain/).
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import shlex
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from modelrepo import hub
from modelrepo import card as model_repo
from training.loop import EMA, lr_at, schedule_progress, train_one_epoch, train_step  # noqa: F401  (train_step: tests)
from training.data import HUB_DATASET, load_images, load_photo_looks, split_train_val
from training.adapt import choose_wise, train_photo_norms
from training.evaluate import evaluate_folder, fit_temperature, predict_probs, strict_hits, with_temperature
from model import FashionCNN, ModelConfig, WeightsError, config_dict, count_parameters, load_model
from modelrepo.folder import open_model


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--dataset", default=HUB_DATASET, help="Hub dataset id or a local folder in the same layout")
    p.add_argument("--out", default=None, help="output folder (default: outputs/fashion-cnn, or outputs/eval with --eval-only)")
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--optimizer", default="sgd", choices=["sgd", "adam"], help="sgd: with Nesterov momentum (--momentum)")
    p.add_argument("--momentum", type=float, default=0.9, help="SGD momentum, Nesterov when above 0 (0: plain SGD)")
    p.add_argument("--lr", type=float, default=0.1, help="peak learning rate")
    p.add_argument("--schedule", default="onecycle", choices=["onecycle", "constant"],
                   help="onecycle: linear warm-up then linear decay to 0")
    p.add_argument("--weight-decay", type=float, default=5e-4)
    p.add_argument("--warmup", type=float, default=0.15, help="fraction of steps with a linear warm-up; then linear decay to 0")
    p.add_argument("--label-smoothing", type=float, default=0.1)
    p.add_argument("--widths", type=int, nargs=3, default=list(ModelConfig.widths),
                   help="channels of the three stages (28, 14 and 7 px)")
    p.add_argument("--dropout", type=float, default=ModelConfig.dropout)
    p.add_argument("--translate", type=int, default=2, help="random shift in pixels (0: off)")
    p.add_argument("--flip", type=float, default=0.5, help="horizontal flip probability (garments are symmetric)")
    p.add_argument("--erase", type=float, default=0.5, help="random erasing probability (Zhong et al. 2017)")
    p.add_argument("--ema", type=float, default=0.999, help="EMA decay of the weights (0: off)")
    p.add_argument("--tta", type=int, default=1, choices=[0, 1], help="average predictions over the image and its mirror")
    p.add_argument("--val-size", type=int, default=5000,
                   help="training images held out for validation (0: train on all of them and keep the last "
                        "epoch: the final fit of a recipe already chosen on validation)")
    p.add_argument("--temperature", type=float, default=0,
                   help="softmax temperature to store (0: fit it on validation; 1.0 when --val-size is 0)")
    p.add_argument("--train-limit", type=int, default=0, help="use only this many training images (0: all)")
    p.add_argument("--max-minutes", type=float, default=0, help="stop after the epoch that passes this wall time (0: no limit)")
    p.add_argument("--budget-minutes", type=float, default=0,
                   help="fit the one-cycle schedule to this wall time: it advances by steps or by time, whichever "
                        "is further, and training ends with it; --epochs becomes an upper bound (0: by epochs only)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, mps; under torchrun each rank takes its LOCAL_RANK")
    p.add_argument("--amp", default="auto", choices=["auto", "on", "off"],
                   help="bf16 autocast for training (auto: on for CUDA and for CPUs with bf16 units: AMX or AVX512-BF16)")
    p.add_argument("--channels-last", type=int, default=1, choices=[0, 1])
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument("--trust-images", type=int, default=100,
                   help="test images for the faithfulness/randomisation table evaluation/trust.json (0: skip)")
    p.add_argument("--eval-only", action="store_true", help="evaluate --model on the test set, no training")
    p.add_argument("--model", default=None, help="with --eval-only: a local folder or a Hub repo id")
    p.add_argument("--push-to-hub", metavar="REPO_ID", default=None, help="upload the output folder to this Hub model repo")
    p.add_argument("--private", action="store_true", help="create the Hub repo as private")
    p.add_argument("--photos", default=None,
                   help="a clothing_photos folder: its validation split is scored every epoch and in the evaluation "
                        "(strict and coarse accuracy)")
    p.add_argument("--photo-train", default=None,
                   help="a clothing_photos folder whose train split (segmented) is trained on beside Fashion-MNIST")
    p.add_argument("--photo-share", type=float, default=0.125,
                   help="with --photo-train: the share of each batch drawn from the photos")
    p.add_argument("--init-from", default=None,
                   help="start from these weights (a folder or Hub repo id) instead of a new network: fine-tuning; "
                        "--widths is then theirs")
    p.add_argument("--wise", type=float, nargs="+", default=[1.0],
                   help="with --init-from: keep (1 - a) * start + a * fine-tuned weights (WiSE-FT; 1: the fine-tuned); "
                        "several weights: the one chosen on validation (see choose_wise)")
    p.add_argument("--photo-norms", action="store_true",
                   help="with --init-from and --photo-train: train only BatchNorm layers of its own for segmented "
                        "photos, on photos (see --fmnist-share); every other answer stays the start's (adapt.py)")
    p.add_argument("--fmnist-share", type=float, default=0.0,
                   help="with --photo-norms: the share of each batch drawn from Fashion-MNIST training images "
                        "(product shots on a plain ground take the photo path too)")
    p.add_argument("--photo-aug", type=float, default=0.0,
                   help="probability of photo-like degradation per image (light gradient, turn, blur; 0: off)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    args = p.parse_args(argv)
    if args.eval_only and not args.model:
        p.error("--eval-only needs --model <folder or Hub repo id>")
    if not all(0 <= a <= 1 for a in args.wise) or (args.wise != [1.0] and not args.init_from):
        p.error("--wise takes weights in [0, 1] and needs --init-from")
    if args.photo_norms and not (args.init_from and args.photo_train) or args.photo_norms and args.wise != [1.0]:
        p.error("--photo-norms needs --init-from and --photo-train, and takes no --wise")
    if len(args.wise) > 1 and args.val_size == 0:
        p.error("several --wise weights are chosen on validation: they need --val-size above 0")
    if args.temperature < 0:
        p.error("--temperature must be positive (or 0: fit it on validation)")
    args.out = Path(args.out or ("outputs/eval" if args.eval_only else "outputs/fashion-cnn"))
    return args


# ---------------------------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------------------------

# ---------------------------------------------------------------------------------------------
# Devices and main
# ---------------------------------------------------------------------------------------------

def setup_device(args) -> dict:
    """The one place the device is chosen; under torchrun, also the process group."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    device = torch.device(args.device)
    if world > 1:
        import torch.distributed as dist
        local = int(os.environ.get("LOCAL_RANK", "0"))
        if device.type == "cuda":
            device = torch.device("cuda", local)
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    if args.threads:
        torch.set_num_threads(args.threads)
    amp = args.amp == "on" or (args.amp == "auto" and (device.type == "cuda" or cpu_has_fast_bf16(device)))
    return {"device": device, "world": world, "rank": rank, "amp": amp}


def cpu_has_fast_bf16(device: torch.device) -> bool:
    """True on CPUs with bf16 units, AMX tiles (Intel Sapphire Rapids and later) or AVX512-BF16
    (AMD Zen 4 and later), where oneDNN runs bf16 convolutions faster than fp32
    (bench/throughput.py measures it); elsewhere bf16 is emulated and slower."""
    probes = [getattr(torch.cpu, name, None) for name in ("_is_amx_tile_supported", "_is_avx512_bf16_supported")]
    # private in torch 2.x: probe, don't assume
    return device.type == "cpu" and any(probe is not None and bool(probe()) for probe in probes)


def hardware_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU ({torch.get_num_threads()} threads)"


def build_model(args) -> FashionCNN:
    """A new network from the options, or with --init-from the weights of a trained one (fine-tuning)."""
    if args.init_from:
        start = load_model(args.init_from)
        model = FashionCNN(**config_dict(start) | {"dropout": args.dropout, "flip_tta": bool(args.tta)})
        model.load_state_dict(start.state_dict())
        return model
    return FashionCNN(widths=tuple(args.widths), dropout=args.dropout, flip_tta=bool(args.tta))


def make_optimizer(model: nn.Module, args) -> torch.optim.Optimizer:
    """SGD with Nesterov momentum (plain SGD at --momentum 0), or Adam; no weight decay on BatchNorm and biases."""
    decay, no_decay = [p for p in model.parameters() if p.ndim > 1], [p for p in model.parameters() if p.ndim <= 1]
    groups = [{"params": decay, "weight_decay": args.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if args.optimizer == "adam":
        return torch.optim.Adam(groups, lr=args.lr)
    return torch.optim.SGD(groups, lr=args.lr, momentum=args.momentum, nesterov=args.momentum > 0)


def train(args, ctx, model: nn.Module | None = None, data=None) -> tuple[nn.Module, list[dict], float, float]:
    """Train on the training split, select the best epoch on validation.

    Args:
        model: any network with (B, 1, 28, 28) -> logits, trained by this same loop; default:
            FashionCNN from args.
        data: (looks, labels) of the training split, already loaded; default: read args.dataset.
    Returns: the best-on-validation model (CPU, eval mode), history, its val accuracy, seconds.
        With --val-size 0 (final fit): the last epoch's model and None for the val accuracy.
    """
    if args.budget_minutes and ctx["world"] > 1:
        raise ValueError("--budget-minutes needs a single process: DDP ranks would disagree on the last step")
    looks, labels = data if data is not None else load_images(args.dataset, "train")[:2]
    if not 0 <= args.val_size < len(looks):
        raise ValueError(f"--val-size {args.val_size} must leave training images: the training split has {len(looks)}")
    train_idx, val_idx = split_train_val(len(looks), args.val_size, args.seed)
    if args.train_limit:
        train_idx = train_idx[:args.train_limit]
    x, y = looks[train_idx], labels[train_idx]
    xv, yv = looks[val_idx], labels[val_idx]
    photos = load_photo_looks(args.photo_train, "train")[:2] if args.photo_train else None
    photo_val = load_photo_looks(args.photos, "validation") if args.photos else None   # looks, right classes, folders
    torch.manual_seed(args.seed)
    model = (model if model is not None else build_model(args)).to(ctx["device"])
    if args.channels_last:
        model = model.to(memory_format=torch.channels_last)
    ctx["raw_model"] = model
    ema = EMA(model, args.ema) if args.ema else None
    net = model
    if ctx["world"] > 1:
        net = nn.parallel.DistributedDataParallel(model, device_ids=[ctx["device"]] if ctx["device"].type == "cuda" else None)
    optimizer = make_optimizer(model, args)
    steps_per_epoch = max(1, len(x) // ctx["world"] // args.batch_size)
    total = steps_per_epoch * args.epochs
    history, best, best_state, step, t_start = [], -1.0, None, 0, time.perf_counter()
    ctx["t_start"] = t_start
    for epoch in range(1, args.epochs + 1):
        log, step = train_one_epoch(net, ema, x, y, optimizer, args, epoch, step, total, ctx, photos)
        judged = ema.module if ema else model
        if photo_val is not None:       # reported each epoch; the checkpoint is still chosen on Fashion-MNIST
            log["photo_val_strict"] = strict_hits(judged, *photo_val[:2])[1].float().mean().item()
        if len(xv):
            with torch.autocast(ctx["device"].type, dtype=torch.bfloat16, enabled=ctx["amp"]):   # faster where bf16 units exist
                val = predict_probs(judged, xv, device=ctx["device"])
            log["val_accuracy"] = (val.argmax(1) == yv).float().mean().item()
            log["val_loss"] = F.nll_loss(val.clamp_min(1e-12).log(), yv).item()
        log["elapsed_s"] = time.perf_counter() - t_start
        history.append(log)
        if len(xv) and log["val_accuracy"] > best:   # checkpoint choice: validation only
            best, best_state = log["val_accuracy"], copy.deepcopy(judged.state_dict())
        if ctx["rank"] == 0:
            print(json.dumps({k: round(v, 5) if isinstance(v, float) else v for k, v in log.items()}), flush=True)
            args.out.mkdir(parents=True, exist_ok=True)
            (args.out / "training_history.json").write_text(json.dumps(history, indent=2))
        if log["schedule_progress"] >= 1:
            if args.budget_minutes and ctx["rank"] == 0:
                print(f"schedule ended after epoch {epoch}: {args.budget_minutes:g} min budget", flush=True)
            break
        if args.max_minutes and log["elapsed_s"] > args.max_minutes * 60:
            print(f"stopping after epoch {epoch}: {args.max_minutes} min budget reached", flush=True)
            break
    if not len(xv):   # final fit (--val-size 0): the last epoch
        best_state = judged.state_dict()
    final = copy.deepcopy(ctx["raw_model"]).cpu().to(memory_format=torch.contiguous_format)
    final.load_state_dict({k: v.float().cpu().contiguous() for k, v in best_state.items()})
    if args.wise != [1.0]:
        final, ctx["wise"] = choose_wise(load_model(args.init_from), final, args.wise, xv, yv, photo_val)
        best = ctx["wise"]["chosen"]["val_accuracy"] if len(xv) else best   # what is kept is the average
    if isinstance(final, FashionCNN):   # other networks have no temperature: they serve plain softmax
        t = args.temperature or 1.0
        fit = {"temperature": t, "source": model_repo.temperature_source(args)}
        if len(xv) and not args.temperature:
            t, fit = fit_temperature(final, xv, yv)
        final = with_temperature(final, t)
        if ctx["rank"] == 0:
            print(json.dumps({"calibration": fit}), flush=True)
    return final.eval(), history, best if len(xv) else None, time.perf_counter() - t_start


def main(argv=None) -> int:
    try:
        return run(parse_args(argv), argv)
    finally:
        import torch.distributed as dist
        if dist.is_initialized():
            dist.destroy_process_group()


def run(args, argv=None) -> int:
    torch.manual_seed(args.seed)
    ctx = setup_device(args)
    command = "python " + shlex.join(["train.py", *(sys.argv[1:] if argv is None else argv)])
    if args.eval_only:
        try:
            model = open_model(args.model, ctx["device"]).model
        except WeightsError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        history, extra, train_seconds = [], {"model_source": str(args.model)}, None
    else:
        try:
            if args.photo_norms:
                model, history, val_acc, train_seconds = train_photo_norms(args, ctx)
            else:
                model, history, val_acc, train_seconds = train(args, ctx)
        except ValueError as e:   # options that cannot work together: one line, no traceback
            print(f"error: {e}", file=sys.stderr)
            return 2
        kept = max(history, key=lambda h: h["val_accuracy"]) if val_acc is not None else history[-1]   # final fit: the last
        extra = {"val_accuracy": val_acc, "train_seconds": train_seconds, "best_epoch": kept["epoch"],
                 "epochs_run": len(history)} | ({"wise": ctx["wise"]} if "wise" in ctx else {})
    if ctx["rank"] != 0:
        return 0
    extra |= {"parameters": count_parameters(model), "hardware": hardware_name(ctx["device"]), "command": command,
              "train_bf16_autocast": ctx["amp"], "temperature": model.config.temperature}
    metrics = evaluate_folder(model, args, extra, history)
    if not args.eval_only:
        model_repo.save(args.out, model.cpu(), metrics, args, command, train_seconds)
    if args.trust_images:
        # Which explanation methods earn belief, measured once here rather than per click in the app.
        from explain.trust import write_trust
        write_trust(args.out, model.cpu(), n=args.trust_images)
    if args.push_to_hub:
        try:
            url = hub.push_to_hub(args.out, args.push_to_hub, args.private)
        except hub.PushError as e:
            print(f"error: {e}; the local files in {args.out} are intact", file=sys.stderr)
            return 1
        print(f"pushed {args.out} to {url}")
    print(f"test_accuracy={metrics['accuracy']:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
