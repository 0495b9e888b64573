"""Training throughput of FashionCNN on this machine: float32 against bf16 autocast, memory layouts, widths.

The reason train.py's `--amp auto` turns bf16 autocast on for CPUs with bf16 units (AMX or AVX512-BF16): this script
times train.py's own training step (`training.loop.train_step` with `train.make_optimizer` and the default
options: forward, label-smoothed loss, backward, Nesterov SGD step) on random batches for each
setting, in one process, and writes bench/results/throughput.md. A second table times stage
widths (`--widths`) in train.py's setting: what a wider network costs per epoch.

    python bench/throughput.py                  # ~2 min on 2 idle cores
    python bench/throughput.py --steps 3        # smoke run
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as common  # noqa: E402  (puts the repository root on sys.path)

import torch  # noqa: E402

import train  # noqa: E402
from training.config import OptimConfig, cpu_has_fast_bf16  # noqa: E402
from training.loop import train_step  # noqa: E402
from model import FashionCNN, count_parameters  # noqa: E402

WIDTHS = [(32, 64, 128), (16, 64, 192), (32, 64, 192), (48, 96, 192)]
SETTINGS = [("float32", False, False), ("float32, channels-last", False, True),
            ("bf16 autocast", True, False), ("bf16 autocast, channels-last (train.py default here)", True, True)]


def images_per_s(bf16: bool, channels_last: bool, batch: int, steps: int, widths=(32, 64, 128)) -> float:
    """Median images/s over `steps` training steps (after 3 warm-up steps)."""
    torch.manual_seed(0)
    optim = OptimConfig()                                          # train.py's defaults
    model = FashionCNN(widths=widths).train()
    x, y = torch.randn(batch, 1, 28, 28), torch.randint(0, 10, (batch,))
    if channels_last:
        model, x = model.to(memory_format=torch.channels_last), x.contiguous(memory_format=torch.channels_last)
    optimizer = train.make_optimizer(model, optim)
    times = []
    for i in range(steps + 3):
        start = time.perf_counter()
        train_step(model, x, y, optimizer, optim.label_smoothing, bf16)
        if i >= 3:
            times.append(time.perf_counter() - start)
    return batch / sorted(times)[len(times) // 2]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--steps", type=int, default=20, help="timed steps per setting")
    p.add_argument("--results-dir", default=str(common.RESULTS))
    cli = p.parse_args(argv)
    info = {"machine": common.machine_info(), "amx_bf16": cpu_has_fast_bf16(torch.device("cpu")),
            "batch_size": cli.batch_size, "steps": cli.steps, "command": common.command_line("bench/throughput.py")}
    rows = []
    for name, bf16, cl in SETTINGS:
        rate = images_per_s(bf16, cl, cli.batch_size, cli.steps)
        rows.append({"setting": name, "bf16": bf16, "channels_last": cl, "images_per_s": rate})
        print(f"[throughput] {name}: {rate:.0f} img/s", flush=True)
    base = rows[0]["images_per_s"]
    table = [[r["setting"], f"{r['images_per_s']:,.0f}", f"{r['images_per_s'] / base:.2f}x"] for r in rows]
    wide = []
    for widths in WIDTHS:   # in train.py's setting on this machine (bf16 where the CPU has bf16 units, channels-last)
        rate = images_per_s(info["amx_bf16"], True, cli.batch_size, cli.steps, widths)
        wide.append({"widths": list(widths), "parameters": count_parameters(FashionCNN(widths=widths)), "images_per_s": rate})
        print(f"[throughput] widths {widths}: {rate:.0f} img/s", flush=True)
    wide_table = [["/".join(map(str, w["widths"])), f"{w['parameters']:,}", f"{w['images_per_s']:,.0f}",
                   f"{w['images_per_s'] / wide[0]['images_per_s']:.2f}x"] for w in wide]
    m = info["machine"]
    md = f"""# Training throughput (FashionCNN, batch {cli.batch_size})

{common.md_table(["setting", "images/s (median step)", "vs float32"], table)}

One training step as train.py runs it (`training.loop.train_step`: forward, label-smoothed cross-entropy, backward, Nesterov SGD),
on random batches; median of {cli.steps} steps after 3 warm-up steps. Augmentation, EMA and validation
are not included (train.py's per-epoch images/s in training_history.json include them).

Stage widths (`train.py --widths`), {'bf16 autocast' if info['amx_bf16'] else 'float32'}, channels-last:

{common.md_table(["widths", "parameters", "images/s (median step)", f"vs {wide_table[0][0]}"], wide_table)}

Machine: {m['cpu_model']}, {m['cpu_count']} cores, bf16 units (AMX or AVX512-BF16): {'yes' if info['amx_bf16'] else 'no'};
torch {m['torch']} with {m['torch_threads']} threads; load average at the start {m['load_average_1_5_15min'][0]:.2f}.

```bash
{info['command']}
```
"""
    common.write_results(cli.results_dir, "throughput", {"info": info, "rows": rows, "widths": wide}, md)
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
