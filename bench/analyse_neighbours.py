"""What the nearest training images add to /analyse: the lookup from the prediction's own features
against the answer without it, and against a lookup that runs the network a second time.

In process, on the Service and Insight that app.py builds (the batcher included), one call after
another for each image of the committed test slice, the steps interleaved so that a change in the
machine's load touches them alike:

- "analyse without neighbours": `Service.analysis(Service.assess(look))`, /analyse's answer before;
- "analyse with neighbours": that plus `Insight.neighbours(look, features=assessment.features)`,
  what app.analyse returns now;
- "neighbours from the prediction's features": the added step alone (search, per-class distances,
  the six looks as PNG);
- "neighbours with a forward pass of their own": the same answer when the features are computed again.

    python bench/analyse_neighbours.py                  # ~1 min; --rounds 3 --threads 1 are the defaults

Writes <results-dir>/analyse_neighbours.json and .md (default bench/results/).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as common  # noqa: E402  (puts the repository root on sys.path)

import torch  # noqa: E402

from dashboard.insight import Insight  # noqa: E402
from dashboard.service import Service, load_weights  # noqa: E402
from training.data import load_images  # noqa: E402

BAR_MS = 5.0   # issue 28: the lookup may add at most this to /analyse


def steps(service: Service, insight: Insight) -> dict:
    def without(look):
        return service.analysis(service.assess(look))

    def with_neighbours(look):
        a = service.assess(look)
        return {**service.analysis(a), **insight.neighbours(look, features=a.features)}

    features = {}

    def reused(look):
        return insight.neighbours(look, features=features[id(look)])

    def own_pass(look):
        return insight.neighbours(look)

    return {"analyse without neighbours": without, "analyse with neighbours": with_neighbours,
            "neighbours from the prediction's features": reused,
            "neighbours with a forward pass of their own": own_pass}, features


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--model", default=str(common.REPO / "weights"), help="model folder with its neighbours index")
    p.add_argument("--rounds", type=int, default=3, help="passes over the test slice's images")
    p.add_argument("--threads", type=int, default=1, help="torch threads")
    p.add_argument("--results-dir", default=str(common.RESULTS))
    cli = p.parse_args(argv)
    torch.set_num_threads(cli.threads)
    service = Service(load_weights(cli.model))
    insight = Insight.of(service)
    if insight.index is None:
        raise SystemExit(f"no neighbours index: {insight.index_error}")
    looks = [look.numpy() for look in load_images(str(common.REPO / "tests" / "data" / "fashion_mnist"), "test")[0]]
    fns, features = steps(service, insight)
    for look in looks:
        features[id(look)] = service.assess(look).features
    for fn in fns.values():                # warm-up: the batcher's thread, allocator, PNG encoder
        for look in looks[:10]:
            fn(look)
    names, times = list(fns), {name: [] for name in fns}
    for r in range(cli.rounds):
        for i, look in enumerate(looks):
            shift = (i + r) % len(names)
            for name in names[shift:] + names[:shift]:
                t0 = time.perf_counter()
                fns[name](look)
                times[name].append((time.perf_counter() - t0) * 1000)
    stats = {name: common.summarize_ms(t) for name, t in times.items()}
    added = stats["analyse with neighbours"]["median_ms"] - stats["analyse without neighbours"]["median_ms"]
    res = {"info": {"machine": common.machine_info(), "command": common.command_line("bench/analyse_neighbours.py"),
                    "model": common.rel(cli.model), "images": len(looks), "rounds": cli.rounds},
           "steps": stats, "added_median_ms": added, "bar_ms": BAR_MS, "within_bar": added <= BAR_MS}
    m = res["info"]["machine"]
    rows = [[name, s["median_ms"], s["p95_ms"], s["min_ms"]] for name, s in stats.items()]
    md = f"""# What the nearest training images add to /analyse

{len(looks)} test-slice images x {cli.rounds} rounds, steps interleaved, in process on the app's Service and
Insight; {m['torch_threads']} torch thread(s), load average {', '.join(f'{v:.1f}' for v in m['load_average_1_5_15min'])}
(1, 5, 15 min) on {m['cpu_count']} cores.

{common.md_table(['step', 'median ms', 'p95 ms', 'min ms'], rows)}

Added to /analyse (median with minus median without): **{added:.2f} ms** (bar: <= {BAR_MS:.0f} ms).

```bash
{res['info']['command']}
```
"""
    json_path, md_path = common.write_results(cli.results_dir, "analyse_neighbours", res, md)
    print(md)
    print(f"[analyse_neighbours] wrote {json_path} and {md_path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
