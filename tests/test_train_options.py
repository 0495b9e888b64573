"""train.py's options: each reaches the run where it acts, the defaults are the typed
configuration's (training/config.py), and every shipped command still parses.

    pytest tests/test_train_options.py
"""
import json
import re
import shlex
from pathlib import Path

import torch

from model import load_model
from modelrepo import card as model_repo
from modelrepo import hub
import train
from training.config import EVAL_OUT, RunConfig, setup_runtime
from training.loop import Recipe
from training_support import FAKE_TOKEN, ROOT as REPO, SLICE, RecordingApi


class EpochSpy:
    """Wraps train.train_one_epoch: records the network, optimiser, runtime and log of each epoch
    (found among its arguments by type, whatever their order)."""

    def __init__(self, real):
        self.real, self.epochs = real, []

    def __call__(self, *args, **kwargs):
        log = self.real(*args, **kwargs)
        values = [*args, *kwargs.values()]
        optimizer = next(a for a in values if isinstance(a, torch.optim.Optimizer))
        recipe = next(a for a in values if isinstance(a, Recipe))
        model = next(a for a in values if isinstance(a, torch.nn.Module))
        self.epochs.append({"optimizer": optimizer, "runtime": recipe.runtime, "model": model,
                            "lrs": [g["lr"] for g in optimizer.param_groups], "log": log})
        return log


def test_options_reach_the_run(tmp_path, monkeypatch, capsys):
    """One tiny run of train.main with every non-default option; each is checked where it acts."""
    spy = EpochSpy(train.train_one_epoch)
    monkeypatch.setattr(train, "train_one_epoch", spy)
    api = RecordingApi()
    real_push = hub.push_to_hub
    monkeypatch.setattr(hub, "push_to_hub", lambda folder, repo_id, private=False: real_push(folder, repo_id, private,
                                                                                              api=api))
    monkeypatch.setenv("HF_TOKEN", FAKE_TOKEN)
    out = tmp_path / "opts"
    code = train.main(["--dataset", SLICE, "--epochs", "3", "--max-minutes", "0.0001", "--train-limit", "200",
                       "--val-size", "100", "--batch-size", "50", "--optimizer", "adam", "--lr", "0.003",
                       "--schedule", "constant", "--amp", "off", "--device", "cpu", "--tta", "0",
                       "--channels-last", "0", "--trust-images", "0", "--no-progress", "--out", str(out),
                       "--push-to-hub", "someone/fashion-cnn", "--private"])
    stdout = capsys.readouterr().out
    assert code == 0
    # --max-minutes: 3 epochs asked, the first already passes the limit: one epoch, and it says so.
    assert len(spy.epochs) == 1 and "stopping after epoch 1" in stdout
    epoch = spy.epochs[0]
    assert epoch["log"]["images"] == 200                                       # --train-limit 200 (400 without)
    assert isinstance(epoch["optimizer"], torch.optim.Adam)                    # --optimizer adam
    assert epoch["lrs"] == [0.003, 0.003] and epoch["log"]["lr_end"] == 0.003  # --schedule constant: no decay
    assert epoch["runtime"].amp is False                                       # --amp off
    assert epoch["runtime"].device == torch.device("cpu")                      # --device cpu
    convs = [p for p in epoch["model"].parameters() if p.ndim == 4 and p.shape[1] > 1]
    assert convs and not any(p.is_contiguous(memory_format=torch.channels_last) for p in convs)   # --channels-last 0
    config = json.loads((out / "config.json").read_text())
    assert config["flip_tta"] is False                                          # --tta 0
    metrics = json.loads((out / "evaluation/metrics.json").read_text())
    assert metrics["train_bf16_autocast"] is False and metrics["hardware"].startswith("CPU")
    assert not (out / "evaluation/trust.json").exists()                          # --trust-images 0
    # --private reaches the Hub call that creates the repo.
    assert api.calls[0] == ("create_repo", "someone/fashion-cnn", {"repo_type": "model", "private": True,
                                                                   "exist_ok": True})
    assert "pushed" in stdout and FAKE_TOKEN not in stdout


def test_defaults_differ_from_the_options_checked_above(tmp_path):
    """The counterparts: without those options the same run would have looked different."""
    cfg = train.parse_config(["--dataset", SLICE, "--out", str(tmp_path)])
    assert (cfg.optim.optimizer, cfg.schedule.kind, cfg.model.tta, cfg.runtime.channels_last, cfg.output.private) == (
        "sgd", "onecycle", True, True, False)
    model = train.build_model(cfg.model)
    assert isinstance(train.make_optimizer(model, cfg.optim), torch.optim.SGD) and model.config.flip_tta
    assert train.lr_at(100, 100, cfg.optim.lr, cfg.schedule.warmup) == 0.0     # one-cycle ends at 0
    on = setup_runtime(train.parse_config(["--out", "x", "--amp", "on"]).runtime)
    assert on.amp is True and on.device == torch.device("cpu")
    assert setup_runtime(train.parse_config(["--out", "x", "--amp", "off"]).runtime).amp is False


def test_every_default_of_the_command_line_is_the_typed_configurations():
    """train.py's argparse reads its defaults from training/config.py: no option, no difference."""
    assert train.parse_config([]) == RunConfig()
    assert train.parse_config(["--eval-only", "--model", "m"]).output.out == EVAL_OUT
    assert train.parse_config(["--fit-ood", "--model", "m"]).output.out == Path("m")   # the detector beside its weights


def shipped_commands() -> list[str]:
    """Every one-line `python train.py ...` written in the README, docs/, train.py's docstring and the
    shipped metrics.json (placeholders filled, comments dropped; continued lines are left out)."""
    texts = [(REPO / name).read_text() for name in ("README.md", "train.py")]
    texts += [p.read_text() for p in sorted((REPO / "docs").glob("*.md"))]
    found = [m.group(0) for t in texts for m in re.finditer(r"python train\.py[^`\n#]*", t)]
    found.append(json.loads((REPO / "weights/evaluation/metrics.json").read_text())["command"])
    fills = {"<T of step 1>": "0.65", "<user>": "someone", "<share>": "0.5"}
    commands = []
    for command in found:
        for k, v in fills.items():
            command = command.replace(k, v)
        if not command.rstrip().endswith(("\\", "...", "--help")) and "<" not in command:
            commands.append(command.strip())
    return commands


def test_shipped_commands_still_parse():
    commands = shipped_commands()
    assert len(commands) >= 10 and any("--photo-norms" in c for c in commands)
    for command in commands:
        try:
            train.parse_config(shlex.split(command)[2:])
        except SystemExit:
            raise AssertionError(f"no longer parses: {command}") from None


def test_the_card_is_written_again_from_the_shipped_command():
    """The model card reads what the run's options say from metrics.json's "command"."""
    metrics = json.loads((REPO / "weights/evaluation/metrics.json").read_text())
    cfg = train.parse_config(shlex.split(metrics["command"])[2:])
    text = model_repo.card(load_model(REPO / "weights"), metrics, train.card_origin(cfg), metrics["command"],
                           metrics["train_seconds"])
    share = f"({cfg.data.fmnist_share:.0%} of each batch Fashion-MNIST images)"
    assert cfg.model.photo_norms and f"were trained, on segmented photos {share}" in text
    assert metrics["command"] in text and f"**{metrics['accuracy']:.2%}**" in text
