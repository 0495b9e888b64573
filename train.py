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
    python train.py --fit-ood --model weights --dataset ../shared/data/fashion_mnist --photo-train ../shared/data/clothing_photos
    python train.py --out weights --push-to-hub <user>/fashion-mnist-cnn
    torchrun --nproc_per_node 4 train.py --device cuda --out weights-gpu   # several GPUs (DDP)

The output folder is a Hub model repo: model.safetensors, config.json, README.md (the model card),
training_history.json and evaluation/ (metrics.json, plots, misclassified.npz, samples.npz, and
trust.json: the faithfulness and sanity checks of every explanation method, from explain/); with
--fit-ood also the out-of-distribution detector, ood.json and ood.safetensors (training/fit_ood.py).

The options become a typed `RunConfig` (training/config.py, where every default lives) in one
function, `config_from_args`; the functions below take the pieces of it they need.
"""
from __future__ import annotations

import argparse
import copy
import json
import shlex
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from model import FashionCNN, WeightsError, config_dict, count_parameters, load_model
from modelrepo import card as model_repo
from modelrepo import hub
from modelrepo.folder import open_model
from training.adapt import choose_wise, photo_protocol, train_photo_norms
from training.augment import augment  # noqa: F401  (tests call train.augment)
from training.config import (EVAL_OUT, AugmentConfig, DataConfig, ModelOptions, OODConfig, OptimConfig, OutputConfig,
                             RunConfig, Runtime, RuntimeOptions, Schedule, hardware_name, setup_runtime)
from training.data import load_images, load_photo_looks, split_train_val
from training.evaluate import evaluate_folder, fit_temperature, predict_probs, strict_hits, with_temperature
from training.fit_ood import fit_detector
from training.loop import EMA, Batches, Clock, Recipe, RunResult, lr_at, record_epoch, train_one_epoch  # noqa: F401


def parse_args(argv=None) -> argparse.Namespace:
    # Every default is read from its home, the dataclasses of training/config.py.
    D, P, S, A, M = DataConfig, OptimConfig, Schedule, AugmentConfig, ModelOptions
    R, X, Q = RuntimeOptions, OutputConfig, OODConfig
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--dataset", default=D.dataset, help="Hub dataset id or a local folder in the same layout")
    p.add_argument("--out", default=None, help=f"output folder (default: {X.out}, or {EVAL_OUT} with --eval-only, "
                                               "or the --model folder with --fit-ood)")
    p.add_argument("--epochs", type=int, default=S.epochs)
    p.add_argument("--batch-size", type=int, default=P.batch_size)
    p.add_argument("--optimizer", default=P.optimizer, choices=["sgd", "adam"], help="sgd: with Nesterov momentum (--momentum)")
    p.add_argument("--momentum", type=float, default=P.momentum, help="SGD momentum, Nesterov when above 0 (0: plain SGD)")
    p.add_argument("--lr", type=float, default=P.lr, help="peak learning rate")
    p.add_argument("--schedule", default=S.kind, choices=["onecycle", "constant"],
                   help="onecycle: linear warm-up then linear decay to 0")
    p.add_argument("--weight-decay", type=float, default=P.weight_decay)
    p.add_argument("--warmup", type=float, default=S.warmup,
                   help="fraction of steps with a linear warm-up; then linear decay to 0")
    p.add_argument("--label-smoothing", type=float, default=P.label_smoothing)
    p.add_argument("--widths", type=int, nargs=3, default=list(M.widths), help="channels of the three stages (28, 14 and 7 px)")
    p.add_argument("--dropout", type=float, default=M.dropout)
    p.add_argument("--translate", type=int, default=A.translate, help="random shift in pixels (0: off)")
    p.add_argument("--flip", type=float, default=A.flip, help="horizontal flip probability (garments are symmetric)")
    p.add_argument("--erase", type=float, default=A.erase, help="random erasing probability (Zhong et al. 2017)")
    p.add_argument("--ema", type=float, default=P.ema, help="EMA decay of the weights (0: off)")
    p.add_argument("--tta", type=int, default=int(M.tta), choices=[0, 1],
                   help="average predictions over the image and its mirror")
    p.add_argument("--val-size", type=int, default=D.val_size,
                   help="training images held out for validation (0: train on all of them and keep the last "
                        "epoch: the final fit of a recipe already chosen on validation)")
    p.add_argument("--temperature", type=float, default=M.temperature,
                   help="softmax temperature to store (0: fit it on validation; 1.0 when --val-size is 0)")
    p.add_argument("--train-limit", type=int, default=D.train_limit, help="use only this many training images (0: all)")
    p.add_argument("--max-minutes", type=float, default=S.max_minutes,
                   help="stop after the epoch that passes this wall time (0: no limit)")
    p.add_argument("--budget-minutes", type=float, default=S.budget_minutes,
                   help="fit the one-cycle schedule to this wall time: it advances by steps or by time, whichever "
                        "is further, and training ends with it; --epochs becomes an upper bound (0: by epochs only)")
    p.add_argument("--seed", type=int, default=D.seed)
    p.add_argument("--device", default=R.device, help="cpu, cuda, cuda:1, mps; under torchrun each rank takes its LOCAL_RANK")
    p.add_argument("--amp", default=R.amp, choices=["auto", "on", "off"],
                   help="bf16 autocast for training (auto: on for CUDA and for CPUs with bf16 units: AMX or AVX512-BF16)")
    p.add_argument("--channels-last", type=int, default=int(R.channels_last), choices=[0, 1])
    p.add_argument("--threads", type=int, default=R.threads, help="torch CPU threads (0: torch's default)")
    p.add_argument("--trust-images", type=int, default=X.trust_images,
                   help="test images for the faithfulness/randomisation table evaluation/trust.json (0: skip)")
    p.add_argument("--eval-only", action="store_true", help="evaluate --model on the test set, no training")
    p.add_argument("--model", default=None, help="with --eval-only or --fit-ood: a local folder (or, to evaluate, a Hub repo id)")
    p.add_argument("--fit-ood", action="store_true",
                   help="fit the out-of-distribution detector into the output folder: after training, or, with --model, "
                        "for that folder's weights alone (statistics on --dataset's training split minus validation and "
                        "on --photo-train's train photos; see training/fit_ood.py)")
    p.add_argument("--ood-keep", type=float, default=Q.keep,
                   help="with --fit-ood: fraction of validation images under the threshold")
    p.add_argument("--ood-proxy-size", type=int, default=Q.proxy_size, help="with --fit-ood: images per OOD proxy family")
    p.add_argument("--ood-bootstrap", type=int, default=Q.bootstrap,
                   help="with --fit-ood: bootstrap resamples of the score choice")
    p.add_argument("--push-to-hub", metavar="REPO_ID", default=X.push_to_hub,
                   help="upload the output folder to this Hub model repo")
    p.add_argument("--private", action="store_true", help="create the Hub repo as private")
    p.add_argument("--photos", default=D.photos,
                   help="a clothing_photos folder: its validation split is scored every epoch and in the evaluation "
                        "(strict and coarse accuracy)")
    p.add_argument("--photo-train", default=D.photo_train,
                   help="a clothing_photos folder whose train split (segmented) is trained on beside Fashion-MNIST")
    p.add_argument("--photo-share", type=float, default=D.photo_share,
                   help="with --photo-train: the share of each batch drawn from the photos")
    p.add_argument("--init-from", default=M.init_from,
                   help="start from these weights (a folder or Hub repo id) instead of a new network: fine-tuning; "
                        "--widths is then theirs")
    p.add_argument("--wise", type=float, nargs="+", default=list(M.wise),
                   help="with --init-from: keep (1 - a) * start + a * fine-tuned weights (WiSE-FT; 1: the fine-tuned); "
                        "several weights: the one chosen on validation (see choose_wise)")
    p.add_argument("--photo-norms", action="store_true",
                   help="with --init-from and --photo-train: train only BatchNorm layers of its own for segmented "
                        "photos, on photos (see --fmnist-share); every other answer stays the start's (adapt.py)")
    p.add_argument("--fmnist-share", type=float, default=D.fmnist_share,
                   help="with --photo-norms: the share of each batch drawn from Fashion-MNIST training images "
                        "(product shots on a plain ground take the photo path too)")
    p.add_argument("--photo-layers", nargs="+", default=list(M.photo_layers), choices=list(FashionCNN.forward_children),
                   help="with --photo-norms: also train photos' own copy of these stages (in order); the network "
                        "every other input meets stays the start's")
    p.add_argument("--photo-balance", action="store_true",
                   help="with --photo-norms: draw each mapped photo folder as often as the largest (a small folder's "
                        "photos repeat within an epoch)")
    p.add_argument("--photo-aug", type=float, default=A.photo_aug,
                   help="probability of photo-like degradation per image (light gradient, turn, blur; 0: off)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    args = p.parse_args(argv)
    for problem in option_problems(args):
        p.error(problem)
    fit_only = args.fit_ood and args.model
    args.out = Path(args.out or (args.model if fit_only else EVAL_OUT if args.eval_only else X.out))
    return args


def option_problems(args: argparse.Namespace) -> list[str]:
    """Options that cannot work together, each as the one line the command line prints."""
    wise_default = list(ModelOptions.wise)
    checks = [
        (args.eval_only and not args.model, "--eval-only needs --model <folder or Hub repo id>"),
        (args.model and not (args.eval_only or args.fit_ood), "--model needs --eval-only or --fit-ood"),
        (args.eval_only and args.fit_ood, "--eval-only and --fit-ood: one at a time"),
        (not all(0 <= a <= 1 for a in args.wise) or (args.wise != wise_default and not args.init_from),
         "--wise takes weights in [0, 1] and needs --init-from"),
        (args.photo_norms and not (args.init_from and args.photo_train) or args.photo_norms and args.wise != wise_default,
         "--photo-norms needs --init-from and --photo-train, and takes no --wise"),
        ((args.photo_layers or args.photo_balance) and not args.photo_norms,
         "--photo-layers and --photo-balance need --photo-norms"),
        (len(args.wise) > 1 and args.val_size == 0,
         "several --wise weights are chosen on validation: they need --val-size above 0"),
        (args.temperature < 0, "--temperature must be positive (or 0: fit it on validation)"),
    ]
    return [message for failed, message in checks if failed]


def config_from_args(args: argparse.Namespace, command: str = RunConfig.command) -> RunConfig:
    """The one conversion of the command line's options into the typed run configuration."""
    return RunConfig(
        data=DataConfig(str(args.dataset), args.val_size, args.train_limit, args.seed, args.photos, args.photo_train,
                        args.photo_share, args.fmnist_share, args.photo_balance),
        optim=OptimConfig(args.optimizer, args.lr, args.momentum, args.weight_decay, args.label_smoothing,
                          args.batch_size, args.ema),
        schedule=Schedule(args.epochs, args.schedule, args.warmup, args.budget_minutes, args.max_minutes),
        augment=AugmentConfig(args.translate, args.flip, args.erase, args.photo_aug),
        model=ModelOptions(tuple(args.widths), args.dropout, bool(args.tta), args.init_from, tuple(args.wise),
                           args.photo_norms, args.temperature, tuple(args.photo_layers)),
        runtime=RuntimeOptions(args.device, args.amp, bool(args.channels_last), args.threads, not args.no_progress),
        ood=OODConfig(args.ood_keep, args.ood_proxy_size, args.ood_bootstrap),
        output=OutputConfig(Path(args.out), args.trust_images, args.push_to_hub, args.private, args.fit_ood),
        eval_model=args.model, command=command)


def parse_config(argv: list[str]) -> RunConfig:
    """train.py's command line -> its RunConfig, the command quoted as the card and metrics.json show it."""
    return config_from_args(parse_args(argv), "python " + shlex.join(["train.py", *argv]))


# ---------------------------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------------------------

def build_model(options: ModelOptions) -> FashionCNN:
    """A new network from the options, or with init_from the weights of a trained one (fine-tuning)."""
    if options.init_from:
        start = load_model(options.init_from)
        model = FashionCNN(**config_dict(start) | {"dropout": options.dropout, "flip_tta": options.tta})
        model.load_state_dict(start.state_dict())
        return model
    return FashionCNN(widths=options.widths, dropout=options.dropout, flip_tta=options.tta)


def make_optimizer(model: nn.Module, optim: OptimConfig) -> torch.optim.Optimizer:
    """SGD with Nesterov momentum (plain SGD at momentum 0), or Adam; no weight decay on BatchNorm and biases."""
    decay, no_decay = [p for p in model.parameters() if p.ndim > 1], [p for p in model.parameters() if p.ndim <= 1]
    groups = [{"params": decay, "weight_decay": optim.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if optim.optimizer == "adam":
        return torch.optim.Adam(groups, lr=optim.lr)
    return torch.optim.SGD(groups, lr=optim.lr, momentum=optim.momentum, nesterov=optim.momentum > 0)


def base_batches(model: nn.Module, looks: torch.Tensor, labels: torch.Tensor, data: DataConfig) -> Batches:
    """Fashion-MNIST training looks, with data.photo_share of segmented train photos added to each batch."""
    photos = load_photo_looks(data.photo_train, "train")[:2] if data.photo_train else None
    norm = (model.config.mean, model.config.std) if hasattr(model, "config") else ()
    return Batches(looks, labels, norm=norm, extra=photos, share=data.photo_share)


def validate(log: dict, judged: nn.Module, xv, yv, photo_val, runtime: Runtime) -> None:
    """Add the epoch's validation figures to its log: photo strict accuracy, Fashion-MNIST accuracy and loss."""
    if photo_val is not None:       # reported each epoch; the checkpoint is still chosen on Fashion-MNIST
        log["photo_val_strict"] = strict_hits(judged, *photo_val[:2])[1].float().mean().item()
    if len(xv):
        with torch.autocast(runtime.device.type, dtype=torch.bfloat16, enabled=runtime.amp):   # faster where bf16 units exist
            val = predict_probs(judged, xv, device=runtime.device)
        log["val_accuracy"] = (val.argmax(1) == yv).float().mean().item()
        log["val_loss"] = F.nll_loss(val.clamp_min(1e-12).log(), yv).item()


def train(cfg: RunConfig, runtime: Runtime, model: nn.Module | None = None, data=None) -> RunResult:
    """Train on the training split, select the best epoch on validation.

    Args:
        model: any network with (B, 1, 28, 28) -> logits, trained by this same loop; default:
            FashionCNN from cfg.model.
        data: (looks, labels) of the training split, already loaded; default: read cfg.data.dataset.
    Returns: the best-on-validation model (CPU, eval mode) with its val accuracy; with val_size 0
        (final fit) the last epoch's model and None for the val accuracy.
    """
    d, schedule = cfg.data, cfg.schedule
    if schedule.budget_minutes and runtime.world > 1:
        raise ValueError("--budget-minutes needs a single process: DDP ranks would disagree on the last step")
    looks, labels = data if data is not None else load_images(d.dataset, "train")[:2]
    if not 0 <= d.val_size < len(looks):
        raise ValueError(f"--val-size {d.val_size} must leave training images: the training split has {len(looks)}")
    train_idx, val_idx = split_train_val(len(looks), d.val_size, d.seed)
    if d.train_limit:
        train_idx = train_idx[:d.train_limit]
    xv, yv = looks[val_idx], labels[val_idx]
    photo_val = load_photo_looks(d.photos, "validation") if d.photos else None   # looks, right classes, folders
    torch.manual_seed(d.seed)
    model = (model if model is not None else build_model(cfg.model)).to(runtime.device)
    if runtime.channels_last:
        model = model.to(memory_format=torch.channels_last)
    batches = base_batches(model, looks[train_idx], labels[train_idx], d)
    ema = EMA(model, cfg.optim.ema) if cfg.optim.ema else None
    net = model
    if runtime.world > 1:
        net = nn.parallel.DistributedDataParallel(model, device_ids=[runtime.device] if runtime.device.type == "cuda" else None)
    optimizer = make_optimizer(model, cfg.optim)
    clock = Clock(schedule, max(1, len(batches) // runtime.world // cfg.optim.batch_size) * schedule.epochs)
    recipe = Recipe(cfg.optim, cfg.augment, d.seed, runtime, schedule.epochs)
    history, best, best_state = [], -1.0, None
    for epoch in range(1, schedule.epochs + 1):
        log = train_one_epoch(net, batches, optimizer, clock, epoch, recipe, ema)
        judged = ema.module if ema else model
        validate(log, judged, xv, yv, photo_val, runtime)
        record_epoch(history, log, clock, cfg.output.out, runtime)
        if len(xv) and log["val_accuracy"] > best:   # checkpoint choice: validation only
            best, best_state = log["val_accuracy"], copy.deepcopy(judged.state_dict())
        if log["schedule_progress"] >= 1:
            if schedule.budget_minutes and runtime.rank == 0:
                print(f"schedule ended after epoch {epoch}: {schedule.budget_minutes:g} min budget", flush=True)
            break
        if schedule.max_minutes and log["elapsed_s"] > schedule.max_minutes * 60:
            print(f"stopping after epoch {epoch}: {schedule.max_minutes} min budget reached", flush=True)
            break
    if not len(xv):   # final fit (--val-size 0): the last epoch
        best_state = judged.state_dict()
    final = copy.deepcopy(model).cpu().to(memory_format=torch.contiguous_format)
    final.load_state_dict({k: v.float().cpu().contiguous() for k, v in best_state.items()})
    wise = None
    if cfg.model.wise != ModelOptions.wise:
        final, wise = choose_wise(load_model(cfg.model.init_from), final, list(cfg.model.wise), xv, yv, photo_val)
        best = wise["chosen"]["val_accuracy"] if len(xv) else best   # what is kept is the average
    if isinstance(final, FashionCNN):   # other networks have no temperature: they serve plain softmax
        final = calibrated(final, cfg, xv, yv, runtime)
    return RunResult(final.eval(), history, best if len(xv) else None, clock.elapsed(), trained=model, wise=wise)


def calibrated(final: FashionCNN, cfg: RunConfig, xv: torch.Tensor, yv: torch.Tensor, runtime: Runtime) -> FashionCNN:
    """`final` with its softmax temperature: the one given, or fitted on validation (1.0 without any)."""
    t = cfg.model.temperature or 1.0
    fit = {"temperature": t, "source": model_repo.temperature_source(cfg.model.temperature, cfg.data.val_size)}
    if len(xv) and not cfg.model.temperature:
        t, fit = fit_temperature(final, xv, yv)
    if runtime.rank == 0:
        print(json.dumps({"calibration": fit}), flush=True)
    return with_temperature(final, t)


# ---------------------------------------------------------------------------------------------
# The run
# ---------------------------------------------------------------------------------------------

def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        return run(parse_config(argv))
    finally:
        import torch.distributed as dist
        if dist.is_initialized():
            dist.destroy_process_group()


def run(cfg: RunConfig) -> int:
    torch.manual_seed(cfg.data.seed)
    runtime = setup_runtime(cfg.runtime)
    out = cfg.output.out
    if cfg.output.fit_ood and cfg.eval_model:       # the detector of existing weights, no training
        return fit_ood(cfg.eval_model, cfg)
    if cfg.eval_model:
        try:
            model = open_model(cfg.eval_model, runtime.device).model
        except WeightsError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        result, extra = RunResult(model, [], None, 0.0), {"model_source": str(cfg.eval_model)}
    else:
        try:
            result = train_photo_norms(cfg, runtime) if cfg.model.photo_norms else train(cfg, runtime)
        except ValueError as e:   # options that cannot work together: one line, no traceback
            print(f"error: {e}", file=sys.stderr)
            return 2
        extra = run_record(result) | photo_protocol(cfg)
    if runtime.rank != 0:
        return 0
    model, train_seconds = result.model, (result.seconds if not cfg.eval_model else None)
    extra |= {"parameters": count_parameters(model), "hardware": hardware_name(runtime.device), "command": cfg.command,
              "train_bf16_autocast": runtime.amp, "temperature": model.config.temperature}
    metrics = evaluate_folder(model, cfg.data, out, runtime.device, extra, result.history)
    if not cfg.eval_model:
        model_repo.save(out, model.cpu(), metrics, card_origin(cfg), cfg.command, train_seconds)
    if cfg.output.trust_images:
        # Which explanation methods earn belief, measured once here rather than per click in the app.
        from explain.trust import write_trust
        write_trust(out, model.cpu(), n=cfg.output.trust_images)
    if cfg.output.fit_ood and fit_ood(out, cfg):
        return 2
    if cfg.output.push_to_hub:
        try:
            url = hub.push_to_hub(out, cfg.output.push_to_hub, cfg.output.private)
        except hub.PushError as e:
            print(f"error: {e}; the local files in {out} are intact", file=sys.stderr)
            return 1
        print(f"pushed {out} to {url}")
    print(f"test_accuracy={metrics['accuracy']:.4f}")
    return 0


def run_record(result: RunResult) -> dict:
    """What metrics.json records of a training run besides the test metrics."""
    history = result.history
    # The kept epoch: the best on validation; in a final fit (no validation), the last.
    kept = max(history, key=lambda h: h["val_accuracy"]) if result.val_accuracy is not None else history[-1]
    return ({"val_accuracy": result.val_accuracy, "train_seconds": result.seconds, "best_epoch": kept["epoch"],
             "epochs_run": len(history)} | ({"wise": result.wise} if result.wise else {}))


def card_origin(cfg: RunConfig) -> model_repo.Origin:
    """What the model card says about where the weights came from, from the run's configuration."""
    m = cfg.model
    return model_repo.Origin(init_from=m.init_from, photo_norms=m.photo_norms, fmnist_share=cfg.data.fmnist_share,
                             wise=m.wise, temperature=m.temperature, val_size=cfg.data.val_size,
                             photo_train=cfg.data.photo_train, photo_layers=m.photo_layers)


def fit_ood(model_dir, cfg: RunConfig) -> int:
    """Fit the OOD detector of the weights in `model_dir` into the output folder; 0, or 2 with one line on error."""
    try:
        fit_detector(model_dir, cfg.output.out, cfg.data, cfg.ood, cfg.command)
    except (WeightsError, ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
