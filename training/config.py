"""The typed configuration of a training run, and the one place the device is chosen.

train.py's argparse is the command line; it turns its options into a `RunConfig` in one function
(`train.config_from_args`) and reads every default from the dataclasses here, so each default has
this one home. The functions of training/ take the pieces they need (`DataConfig`,
`OptimConfig`, ...), never the whole set of options.

    >>> from training.config import RunConfig, setup_runtime
    >>> cfg = RunConfig()                          # train.py's defaults
    >>> runtime = setup_runtime(cfg.runtime)       # device, DDP rank and world, bf16 autocast
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import torch

from model import ModelConfig
from modelrepo.hub import HUB_DATASET


@dataclass(frozen=True)
class DataConfig:
    """What is trained on and what is held out."""
    dataset: str = HUB_DATASET          # a Hub dataset id or a local folder in the same layout
    val_size: int = 5000                # training images held out for validation (0: the final fit on all)
    train_limit: int = 0                # use only this many training images (0: all)
    seed: int = 0                       # the validation split, the batch order and every augmentation draw
    photos: str | None = None           # a clothing_photos folder whose validation split is reported
    photo_train: str | None = None      # a clothing_photos folder whose train split is trained on
    photo_share: float = 0.125          # with photo_train: photos added to each batch, as a share of it
    fmnist_share: float = 0.0           # with photo norms: Fashion-MNIST images in place of that share of photos
    photo_balance: bool = False         # with photo norms: each mapped folder drawn as often as the largest


@dataclass(frozen=True)
class OptimConfig:
    """The optimiser and the loss."""
    optimizer: str = "sgd"              # "sgd" (Nesterov when momentum > 0) or "adam"
    lr: float = 0.1                     # the peak learning rate
    momentum: float = 0.9
    weight_decay: float = 5e-4          # on weights only, never on BatchNorm and biases
    label_smoothing: float = 0.1
    batch_size: int = 256
    ema: float = 0.999                  # EMA decay of the weights (0: off)


@dataclass(frozen=True)
class Schedule:
    """How long a run lasts and how its learning rate moves."""
    epochs: int = 30
    kind: str = "onecycle"              # "onecycle": linear warm-up, then linear decay to 0; or "constant"
    warmup: float = 0.15                # fraction of the schedule spent warming up
    budget_minutes: float = 0           # fit the one-cycle schedule to this wall time (0: by epochs only)
    max_minutes: float = 0              # stop after the epoch that passes this wall time (0: no limit)


@dataclass(frozen=True)
class AugmentConfig:
    """Training augmentation (training/augment.py)."""
    translate: int = 2                  # random shift in pixels (0: off)
    flip: float = 0.5                   # horizontal flip probability
    erase: float = 0.5                  # random erasing probability
    photo_aug: float = 0.0              # probability of photo-like degradation per image


@dataclass(frozen=True)
class ModelOptions:
    """The network a run trains: a new one, or a start it fine-tunes, and what it stores."""
    widths: tuple[int, int, int] = ModelConfig.widths
    dropout: float = ModelConfig.dropout
    tta: bool = True                    # serve the average over the image and its mirror
    init_from: str | None = None        # start from these weights (a folder or Hub repo id)
    wise: tuple[float, ...] = (1.0,)    # WiSE-FT weights; several: the one chosen on validation
    photo_norms: bool = False           # train only photo BatchNorm layers of the start (adapt.py)
    temperature: float = 0.0            # softmax temperature to store (0: fit it on validation)
    photo_layers: tuple[str, ...] = ()  # with photo_norms: stages photos get their own trained copy of


@dataclass(frozen=True)
class RuntimeOptions:
    """Where and how the run computes, as asked for (`setup_runtime` resolves it into a `Runtime`)."""
    device: str = "cpu"                 # under torchrun each rank takes its LOCAL_RANK
    amp: str = "auto"                   # bf16 autocast: "auto", "on" or "off"
    channels_last: bool = True
    threads: int = 0                    # torch CPU threads (0: torch's default)
    progress: bool = True               # progress bars


@dataclass(frozen=True)
class OODConfig:
    """How the out-of-distribution detector is fitted (training/fit_ood.py)."""
    keep: float = 0.95                  # fraction of validation images under the threshold
    proxy_size: int = 1000              # images per OOD proxy family the score is chosen on
    bootstrap: int = 200                # paired bootstrap resamples of the choice's tie rule


EVAL_OUT = Path("outputs/eval")     # where an evaluation of existing weights goes by default


@dataclass(frozen=True)
class OutputConfig:
    """What a run writes and where it goes."""
    out: Path = Path("outputs/fashion-cnn")
    trust_images: int = 100             # test images for evaluation/trust.json (0: skip)
    push_to_hub: str | None = None      # a Hub model repo id
    private: bool = False
    fit_ood: bool = False               # fit the OOD detector into the model folder


@dataclass(frozen=True)
class RunConfig:
    """Everything a train.py run needs. `eval_model` set: evaluate (or, with output.fit_ood, fit the
    detector of) that folder or Hub repo instead of training."""
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: Schedule = field(default_factory=Schedule)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    model: ModelOptions = field(default_factory=ModelOptions)
    runtime: RuntimeOptions = field(default_factory=RuntimeOptions)
    ood: OODConfig = field(default_factory=OODConfig)
    output: OutputConfig = field(default_factory=OutputConfig)
    eval_model: str | None = None
    command: str = "python train.py"    # the command line, as the model card and metrics.json quote it


# ---------------------------------------------------------------------------------------------
# The device
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Runtime:
    """The resolved device of a run: under torchrun, this process's rank among `world`."""
    device: torch.device = torch.device("cpu")
    rank: int = 0
    world: int = 1
    amp: bool = False                   # bf16 autocast for training
    channels_last: bool = False
    progress: bool = False


def setup_runtime(options: RuntimeOptions) -> Runtime:
    """The one place the device is chosen; under torchrun, also the process group."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    device = torch.device(options.device)
    if world > 1:
        import torch.distributed as dist
        local = int(os.environ.get("LOCAL_RANK", "0"))
        if device.type == "cuda":
            device = torch.device("cuda", local)
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    if options.threads:
        torch.set_num_threads(options.threads)
    amp = options.amp == "on" or (options.amp == "auto" and (device.type == "cuda" or cpu_has_fast_bf16(device)))
    return Runtime(device, rank, world, amp, options.channels_last, options.progress)


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
    n = torch.get_num_threads()
    return f"CPU ({n} thread{'' if n == 1 else 's'})"
